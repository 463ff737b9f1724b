"""Liveness: the bot beats while its gateway is alive, and `doctor --heartbeat` reads the beat's age."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from types import SimpleNamespace

from bot.cli import doctor
from bot.heartbeat import beat, gateway_alive, heartbeat_age
from tests.bot.cli.test_doctor import settings


def fake_client(*, ready: bool = True, closed: bool = False, latency: float = 0.05) -> SimpleNamespace:
    return SimpleNamespace(is_ready=lambda: ready, is_closed=lambda: closed, latency=latency)


def test_gateway_alive_needs_ready_open_and_a_measured_heartbeat() -> None:
    assert gateway_alive(fake_client())  # type: ignore[arg-type]
    assert not gateway_alive(fake_client(ready=False))  # type: ignore[arg-type]
    assert not gateway_alive(fake_client(closed=True))  # type: ignore[arg-type]
    assert not gateway_alive(fake_client(latency=float("inf")))  # type: ignore[arg-type]
    assert not gateway_alive(fake_client(latency=float("nan")))  # type: ignore[arg-type]


async def test_beats_only_while_alive(tmp_path: Path) -> None:
    path = tmp_path / "beat"
    path.touch()  # the last beat of a bot that ran in this container before a restart
    alive = False
    task = asyncio.create_task(beat(path, lambda: alive, interval=0.01))
    await asyncio.sleep(0.05)
    assert not path.exists(), "not alive on a predecessor's beat"
    alive = True
    await asyncio.sleep(0.05)
    assert path.exists() and heartbeat_age(path) is not None and heartbeat_age(path) < 5
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not path.exists(), "a closing bot stops passing for alive at once"


def test_doctor_heartbeat_check(tmp_path: Path) -> None:
    path = tmp_path / "beat"
    assert doctor.check_heartbeat(settings()).status == "fail"  # not configured
    assert "not reported" in doctor.check_heartbeat(settings(heartbeat_file=str(path))).detail  # bot never beat
    path.touch()
    assert doctor.check_heartbeat(settings(heartbeat_file=str(path))).status == "ok"
    stale = time.time() - 600
    os.utime(path, (stale, stale))
    result = doctor.check_heartbeat(settings(heartbeat_file=str(path)))
    assert result.status == "fail" and "600 s" in result.detail


def test_heartbeat_is_checked_only_when_asked(tmp_path: Path, database) -> None:
    configured = settings(database_url=database.url, heartbeat_file=str(tmp_path / "beat"))
    names = [result.name for result in doctor.run_checks(configured, offline=True)]
    assert "heartbeat" not in names
    names = [result.name for result in doctor.run_checks(configured, offline=True, heartbeat=True)]
    assert names[-1] == "heartbeat"


class SlowDiskPath(type(Path())):  # type: ignore[misc]
    def touch(self, *args, **kwargs) -> None:  # type: ignore[override]
        time.sleep(0.2)
        super().touch(*args, **kwargs)


async def test_a_touch_in_flight_when_the_bot_stops_does_not_bring_the_beat_back(tmp_path: Path) -> None:
    path = SlowDiskPath(tmp_path / "beat")
    task = asyncio.create_task(beat(path, lambda: True, interval=0.01))
    await asyncio.sleep(0.05)  # the first touch is sleeping in its thread
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.3)
    assert not path.exists()
