"""Loading libopus the way discord.py does, for the checks that must fail early (`run`, `doctor`)."""

from __future__ import annotations


def load_libopus() -> bool:
    """True when libopus is loaded or loads now (discord.py finds it with ctypes.util.find_library('opus'))."""
    import discord.opus  # imported here: the doctor imports discord only when this check runs

    if discord.opus.is_loaded():
        return True
    try:
        return bool(discord.opus._load_default())
    except Exception:  # a broken or foreign library: report "does not load" rather than crash the check
        return False
