"""Long work as persisted tasks: states, handlers and the leasing runner."""
