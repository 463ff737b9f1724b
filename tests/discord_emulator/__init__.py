"""A local Discord voice server for discord.py to connect to (tests and bench/)."""
