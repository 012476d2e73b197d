"""Ingot appliance core: settings, database, services, tasks, drivers and the ``ingot`` CLI."""

__version__ = "0.1.0"
