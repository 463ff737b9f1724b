"""The benchmarks' rig borrows VoiceCall's and CapVoiceClient's methods: a call through it must still run.

A bench that breaks is found months later, by whoever needs a figure (issue 12's consent check in
VoiceCall._feed broke every rig-based bench until this test): one short talking call, no error logged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_a_talking_call_runs_through_the_bench_rig_without_errors() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "bench_concurrency.py"), "--child", "1", "1"],
                         check=True, capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["log_errors"] == 0, out.stderr[-2000:]
    assert result["ticks"] > 0 and result["turns"] >= 1  # the caller was heard and Cap answered


def test_one_calls_paths_run_through_the_pipeline_bench() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "bench_pipeline.py"), "60"],
                         check=True, capture_output=True, text=True, timeout=120)
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 3d.")]
    assert len(rows) == 2 and all("x the floor" in row for row in rows), out.stdout + out.stderr[-2000:]
