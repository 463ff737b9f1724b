"""Reading played audio in tests: which 20 ms frames are audible, and the runs they form."""

from __future__ import annotations

import numpy as np

AUDIBLE_PEAK = 500  # s16 peak above which a frame counts as Cap speaking (silence and dither stay below)


def loud(frames: list[bytes]) -> list[bool]:
    """Per frame: is anything audible in it?"""
    return [bool(np.abs(np.frombuffer(f, "<i2")).max() > AUDIBLE_PEAK) for f in frames]


def runs(flags: list[bool]) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    out, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append((start, i - start))
            start = None
    return out
