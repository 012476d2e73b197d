"""The emulated rack used by ``make demo`` and the end-to-end tests."""
