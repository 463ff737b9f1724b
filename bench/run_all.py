"""Every benchmark of issue 6 in one run, printed as one Markdown table (the README's Performance table).

Run as `.venv/bin/python bench/run_all.py` (3-5 minutes; progress goes to stderr, the table to stdout). Each
figure stands beside a reference measured in the same run and the goal it is held to. Cap's side runs pinned
to core 0; the fake Realtime service and the fake voice relay run as separate processes on the other cores
(on a one-core machine they share core 0 and the figures include them). The pieces run on their own too:
bench_audio.py, bench_idle.py, bench_concurrency.py, bench_pipeline.py, bench_latency.py, bench_jitter.py (and
bench_voice.py for the receive path's costs).
"""

from __future__ import annotations

import os
import platform
import sys
import time

import before as before_tree
import bench_audio
import bench_concurrency
import bench_idle
import bench_jitter
import bench_latency
import bench_pipeline
import bench_processes
import rig
from discord import opus

# 40 idle calls, not 10: a call costs ~0.06 % of a core, and on a shared machine the noise of the quietest
# window is ~0.3 % of a core, which 10 calls turned into +-0.03 % per call.
IDLE_CALLS = 40
PROCESS_TOTALS = [48, 96]  # talking calls: one process near its ceiling, and twice that


def audio_rows() -> list[rig.Row]:
    """Item 1, in this process, pinned like the rest."""
    cores = os.sched_getaffinity(0)
    rig.pin_to_core()
    try:
        costs = bench_audio.frame_costs()
        cap_us, default_us, cap_lsd, default_lsd = bench_audio.encoder_figures()
    finally:
        os.sched_setaffinity(0, cores)  # the children choose their own cores from the whole set
    rows = [rig.Row(f"1{'abcd'[i]}. {work}", f"{us:.1f} µs per 20 ms frame", f"{floor}: {floor_us:.1f} µs", "—")
            for i, (work, us, floor, floor_us) in enumerate(costs)]
    return [*rows, rig.Row(
        "1e. Opus encode of speech (Cap's encoder, complexity 5)",
        f"{cap_us:.0f} µs per 20 ms frame; log-spectral distance to the source {cap_lsd:.2f} dB",
        f"libopus default (complexity 9): {default_us:.0f} µs; {default_lsd:.2f} dB", "—")]


def onset_row() -> rig.Row:
    """The local onset detector alone: the floor of barge-in (4), and its false onsets, old and new."""
    median, worst, false = bench_audio.onset_figures()
    old_median, old_worst, old_false = bench_audio.onset_figures(**bench_audio.PREVIOUS_DETECTOR)
    return rig.Row(
        "4a. local onset detector alone (the floor of 4): speech onset -> onset declared, 35 espeak-ng utterances",
        f"median / max {median:.0f} / {worst:.0f} ms; false onsets {false}/min over 15 noise and music signals",
        f"detector before issue 14: {old_median:.0f} / {old_worst:.0f} ms; {old_false}/min",
        "false onsets no more than before", false <= old_false)


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    opus.Encoder(application="voip")  # loads libopus
    return (f"{model}, {len(rig.ALL_CORES)} cores, Python {platform.python_version()}, "
            f"{opus._OpusStruct.get_opus_version()}")


def main() -> None:
    started = time.perf_counter()

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    ref = sys.argv[1] if len(sys.argv) > 1 else before_tree.BEFORE_REF
    before = before_tree.tree(ref)
    progress(f"bench/run_all.py on {machine()}; before/after pairs against {ref if before else 'nothing'}")
    progress("1. audio path per frame ...")
    rows = audio_rows()
    progress(f"2. idle calls (bare loop, bare clocks, Cap, Cap before; {IDLE_CALLS} calls; 2 rounds) ...")
    rows += bench_idle.measure(calls=IDLE_CALLS, before=before)
    progress("3. concurrency search (one process per N) ...")
    rows += bench_concurrency.measure(log=progress, before=before)
    progress("3d. one call's path on one thread, no sockets ...")
    rows += bench_pipeline.measure()
    progress("4-6. barge-in, reply start, uplink lag ...")
    rows += bench_latency.measure(before=before)
    rows.append(onset_row())
    progress("7. hearing callers: jitter buffer on clean, jittery and lossy streams, held audio ...")
    rows += bench_jitter.measure()
    progress("8. one process per core: the same calls in one process or two ...")
    rows += bench_processes.measure(PROCESS_TOTALS)
    print(f"Measured by `bench/run_all.py` in {time.perf_counter() - started:.0f} s on {machine()}.\n")
    rig.print_rows(rows)


if __name__ == "__main__":
    main()
