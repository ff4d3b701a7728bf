"""Alembic migrations for the control-plane database (driven by backend.db.migrate)."""
