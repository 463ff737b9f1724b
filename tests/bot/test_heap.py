"""freeze_startup_heap: objects alive at start-up leave the collector's sight (issue 14)."""

from __future__ import annotations

import gc

from bot.heap import freeze_startup_heap


def test_objects_alive_at_start_up_are_frozen_and_later_ones_are_still_collected() -> None:
    before = gc.get_freeze_count()
    startup = [[] for _ in range(10)]
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() >= before + len(startup)
        assert not any(o is startup for generation in range(3) for o in gc.get_objects(generation))
        later: list[object] = []
        assert any(o is later for o in gc.get_objects(0))
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
