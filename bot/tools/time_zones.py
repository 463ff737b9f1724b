"""What callers say for a time zone ("EST", "Pacific", "central time") mapped to IANA zones.

A caller who says "2 PM EST" in July means Eastern wall-clock time (EDT), not UTC-5: every US abbreviation
maps to its region's zone, which follows daylight saving. Anything else that is not an IANA name is refused
with a question, never guessed.
"""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_REGIONS = {
    "America/New_York": ("est", "edt", "et", "eastern"),
    "America/Chicago": ("cst", "cdt", "ct", "central"),
    "America/Denver": ("mst", "mdt", "mt", "mountain"),
    "America/Phoenix": ("arizona",),
    "America/Los_Angeles": ("pst", "pdt", "pt", "pacific"),
    "America/Anchorage": ("akst", "akdt", "akt", "alaska"),
    "Pacific/Honolulu": ("hst", "hawaii", "hawaiian"),
    "UTC": ("utc", "gmt", "z"),
}
ALIASES = {alias: zone for zone, aliases in _REGIONS.items() for alias in aliases}
_FILLER = re.compile(r"\b(time|zone|standard|daylight|saving|savings|us)\b|[^a-z ]")


class UnknownTimeZone(ValueError):
    """Not an IANA zone nor a US zone name; the message is a question to ask the caller."""


def resolve_zone(text: str) -> ZoneInfo:
    """An IANA name ("America/Chicago") or a US zone as said ("CST", "Pacific time") -> ZoneInfo."""
    cleaned = text.strip()
    if "/" in cleaned or cleaned == "UTC":
        try:
            return ZoneInfo(cleaned)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of zones, e.g. "US" or "Europe"
            pass
    words = " ".join(_FILLER.sub(" ", cleaned.lower()).split())
    zone = ALIASES.get(words) or ALIASES.get(words.replace(" ", ""))
    if zone is None:
        raise UnknownTimeZone(
            f"{text!r} is not a time zone I can place: ask the caller which city or US time zone they are in "
            "(Eastern, Central, Mountain, Pacific), or use an IANA name like America/Chicago."
        )
    return ZoneInfo(zone)
