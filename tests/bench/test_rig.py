"""The benchmarks' rig borrows VoiceCall's and CapVoiceClient's methods: a call through it must still run.

A bench that breaks is found months later, by whoever needs a figure (issue 12's consent check in
VoiceCall._feed broke every rig-based bench until this test): one short talking call, no error logged.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bot.voice.crypto import TransportDecryptor
from bot.voice.rtp import parse_header

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_a_talking_call_runs_through_the_bench_rig_without_errors() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "bench_concurrency.py"), "--child", "1", "1"],
                         check=True, capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["log_errors"] == 0, out.stderr[-2000:]
    assert result["ticks"] > 0 and result["turns"] >= 1  # the caller was heard and Cap answered


def test_row_3c_divides_by_the_paced_floor_and_shows_the_hot_priced_ratio_beside_it() -> None:
    sys.path.insert(0, str(BENCH))
    import bench_concurrency  # the bench's module, importable only with bench/ on the path

    frames = {"decode": 100, "encode": 90, "up": 0, "down": 95}
    unit = {"decode": 40.0, "encode": 175.0, "down": 64.0, "up": 76.0}
    runs = [{"calls": 32, "cpu_percent": cpu, "paced_floor_percent": paced, "floor_percent": 16.0, "wall": 6.0,
             "frames": frames, "floor_unit_us": unit} for cpu, paced in ((40.0, 20.0), (45.0, 20.0), (30.0, 24.0))]
    row = bench_concurrency.floor_row(runs)
    assert "40 % busy = 2.00x the floor of 20 %" in row.figure  # the median of 1.25x, 2.00x, 2.25x
    assert "1.25x, 2.00x, 2.25x" in row.figure
    assert "hot-loop costs: 16 % = 2.50x" in row.reference
    assert row.ok is False


def test_a_run_that_fails_on_the_uplink_p99_alone_gets_a_second_run_as_a_late_frames_failure_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(BENCH))
    import bench_concurrency  # the bench's module, importable only with bench/ on the path

    # Per N, the runs in order: 32 stalls once (p99 40 ms), then keeps up; 64 never keeps up; late frames fine.
    p99s = {8: [5.0], 16: [6.0], 24: [9.0], 32: [40.0, 12.0], 64: [90.0, 80.0], 48: [30.0, 35.0],
            40: [50.0, 45.0]}
    runs: list[int] = []

    def run_child(calls: int, seconds: float, before: object = None) -> dict[str, object]:
        runs.append(calls)
        return {"calls": calls, "ticks": 140 * calls, "late_percent": 0.0, "uplink_p99_ms": p99s[calls].pop(0)}

    monkeypatch.setattr(bench_concurrency, "run_child", run_child)
    monkeypatch.setattr(bench_concurrency, "MAX_N", 64)
    searched = bench_concurrency.search(1.0)["after"]
    assert searched.steady == 32 and searched.results[32]["uplink_p99_ms"] == 12.0
    assert runs.count(32) == 2 and runs.count(8) == 1


def test_one_calls_paths_run_through_the_pipeline_bench() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "bench_pipeline.py"), "60"],
                         check=True, capture_output=True, text=True, timeout=120)
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 3d.")]
    assert len(rows) == 2 and all("x the floor" in row for row in rows), out.stdout + out.stderr[-2000:]


def test_the_rigs_player_sends_the_packets_cap_sends() -> None:
    """The bench must time Cap's packet builder (bot/voice/client.py), not discord.py's: same packets, same cost."""
    sys.path.insert(0, str(BENCH))
    import rig  # the bench's module, importable only with bench/ on the path

    assert rig.PlayerClient._get_voice_packet is rig.CapVoiceClient._get_voice_packet
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        player = rig.PlayerClient(sock, 0x5005, loop=None)  # type: ignore[arg-type]
        player.sequence, player.timestamp, player._incr_nonce = 9, 960 * 9, 2**32 - 1
        packet = player._get_voice_packet(b"\x78opus")
        again = player._get_voice_packet(b"\x78opus")
    assert packet[-4:] == b"\xff\xff\xff\xff" and again[-4:] == bytes(4)
    header = parse_header(packet)
    assert header.ssrc == 0x5005
    assert TransportDecryptor(rig.MODE, rig.SECRET_KEY).decrypt(packet, header) == b"\x78opus"
