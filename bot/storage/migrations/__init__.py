"""Alembic migrations for Cap's tables; run them with `cap-bot db upgrade` (see bot.storage.migrate)."""
