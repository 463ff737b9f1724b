"""Liveness for health checks: the running bot touches a file while its gateway connection is alive.

`cap-bot doctor --heartbeat` (the Docker HEALTHCHECK) reads the file's age, so a bot whose Discord
connection hung, or whose event loop is stuck, turns the container unhealthy; configuration checks alone
cannot see that.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import discord

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_SECONDS: Final = 30.0
HEARTBEAT_MAX_AGE_SECONDS: Final = 120.0  # four missed beats: a stuck loop, not a slow one


def gateway_alive(client: discord.Client) -> bool:
    """Logged in, not closing, and the gateway heartbeat has a measured latency."""
    return client.is_ready() and not client.is_closed() and math.isfinite(client.latency)


async def beat(path: Path, alive: Callable[[], bool], interval: float = HEARTBEAT_INTERVAL_SECONDS) -> None:
    """Touch `path` every `interval` seconds while `alive()` says so (runs until cancelled).

    The file is removed when beating starts and when it stops: a bot restarted in the same container must
    not pass for alive on its predecessor's last beat before it has connected, nor a closing one after.
    """
    # A touch still running in its thread when beating stops must not bring the file back: touching and the
    # final removal take one lock, and nothing is touched after the removal.
    lock = threading.Lock()
    stopped = False

    def touch() -> None:
        with lock:
            if not stopped:
                path.touch()

    _remove(path)
    try:
        while True:
            if alive():
                try:
                    await asyncio.to_thread(touch)  # off the loop: a slow disk must not stall voice
                except OSError as exc:
                    log.warning("cannot write the heartbeat file %s: %s", path, exc)
            await asyncio.sleep(interval)
    finally:
        with lock:
            stopped = True
            _remove(path)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove the heartbeat file %s: %s", path, exc)


def heartbeat_age(path: Path, now: Callable[[], float] = time.time) -> float | None:
    """Seconds since the last beat, or None when there was none."""
    try:
        return max(0.0, now() - path.stat().st_mtime)
    except OSError:
        return None
