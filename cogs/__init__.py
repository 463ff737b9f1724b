"""Slash commands, one module per feature."""
