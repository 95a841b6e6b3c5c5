"""Synchronous persistence: one SQLite file, its schema, migrations and typed queries (never imports trio)."""
