"""One Cap process per core: the same total of talking calls in one process, or split over two.

Run as `.venv/bin/python bench/bench_processes.py [TOTALS...]` (default 32 48 64 calls; ~3 minutes). For each
total, bench_concurrency.py's child runs once with every call in one process pinned to core 0, then twice at
the same time with half the calls each, pinned to cores 0 and 1 (CAP_BENCH_CORE), as two Cap processes with
shard ranges would (README, "One process per core"). Each child's fake Realtime service and voice relay run
on the other core, so with two processes on a 2-core machine the far side takes CPU from both: the figures
are a floor for what a second process gives. Reported per total: late playback frames, Cap's frames played
per call (an overloaded process answers late and plays less), the worse uplink p99 and each process's CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import rig

SECONDS = 6.0
CHILD = str(Path(__file__).resolve().parent / "bench_concurrency.py")


def run_processes(total: int, processes: int) -> list[dict[str, Any]]:
    """`processes` children at once, `total` calls split evenly, child i pinned to core i."""
    children = []
    for index in range(processes):
        calls = total // processes + (1 if index < total % processes else 0)
        env = {**os.environ, "CAP_BENCH_CORE": str(index)}
        children.append(subprocess.Popen([rig.PYTHON, CHILD, "--child", str(calls), str(SECONDS)], env=env,
                                         stdout=subprocess.PIPE, text=True))
    results = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode:
            raise RuntimeError(f"bench_concurrency child failed ({child.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def describe(results: list[dict[str, Any]]) -> str:
    late = sum(r["late"] for r in results)
    ticks = sum(r["ticks"] for r in results)
    p99 = max(r["uplink_p99_ms"] or 0.0 for r in results)
    cpu = " + ".join(f"{r['cpu_percent']:.0f} %" for r in results)
    pace = ticks / sum(r["calls"] for r in results)
    return (f"{late}/{ticks} late ({100 * late / max(1, ticks):.2f} %), {pace:.0f} frames per call, "
            f"uplink p99 {p99:.0f} ms, CPU {cpu}")


def measure(totals: list[int]) -> list[rig.Row]:
    if len(rig.ALL_CORES) < 2:
        return [rig.Row("8. one process per core", "one core only: not measured", "")]
    rows = []
    for total in totals:
        one = run_processes(total, 1)
        two = run_processes(total, 2)
        rows.append(rig.Row(f"8. {total} talking calls: two processes (one per core) vs one",
                            f"two: {describe(two)}", f"one: {describe(one)}"))
    return rows


def main() -> None:
    totals = [int(arg) for arg in sys.argv[1:]] or [32, 48, 64]
    rig.print_rows(measure(totals))


if __name__ == "__main__":
    main()
