"""The HTTP face of the appliance: the OneView-compatible REST API, the web UI, and the boot listener."""
