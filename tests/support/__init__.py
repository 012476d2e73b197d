"""Test helpers: a throwaway PostgreSQL server, a live appliance process, test task handlers."""
