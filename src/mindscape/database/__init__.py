"""Connecting to PostgreSQL: embedded server, URLs, pool, startup checks, migrations."""
