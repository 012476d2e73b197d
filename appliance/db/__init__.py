"""Database plumbing: declarative base, engine factory and migrations."""
