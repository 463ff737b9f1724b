"""Keep Python's full garbage collections off the start-up heap, so they cannot stall every call at once.

A full (generation 2) collection walks every tracked object while holding the GIL. In a Cap process most of
them are the start-up heap (discord.py, the voice stack, SQLAlchemy, pydantic, numpy): measured with 52
talking calls on one core (bench_concurrency.py), each full collection stopped the event loop and every
player thread for 50-100 ms, which made 0.5-1 % of Cap's playback frames late (worst 90-100 ms) and
capped the calls per core. Objects that live for the whole process need no collecting: `gc.freeze()` moves
them out of the collector's sight (CPython >= 3.7), and later full collections only walk what calls made.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then exempt every object alive now from later collections (call once, after
    start-up's imports); returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
