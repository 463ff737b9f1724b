"""A real Rust panic from davey, for tests of the code that must survive one."""

from __future__ import annotations

from typing import NoReturn

import davey


def raise_rust_panic() -> NoReturn:
    """Make davey panic for real: pyo3 turns it into `pyo3_runtime.PanicException`, a BaseException.

    `generate_displayable_code` with a group size of 0 reaches `step_by(0)` in davey 0.1.7's Rust code.
    """
    davey.generate_displayable_code(b"\x00" * 64, 0, 0)
    raise AssertionError("davey no longer panics on a zero group size: find another real panic")


def rust_panic() -> BaseException:
    """The PanicException instance a real panic raises (to re-raise it from a stand-in)."""
    try:
        raise_rust_panic()
    except BaseException as exc:  # that is the point
        return exc
