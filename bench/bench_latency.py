"""Barge-in, reply start and uplink lag, over the whole Discord path of rig.py against the fake services.

Run as `.venv/bin/python bench/bench_latency.py [CALLS] [BARGE_INS] [REF]` (defaults 2 calls x 6 barge-ins, ~40 s;
the barge-ins also run on REF's tree, default eb19fa9, `none` skips it).
Cap runs pinned to one core; the fake Realtime service (speech_started 400 ms late, as the real one can be)
and the fake voice relay run on the others. Each caller says a sentence, and then, 300 ms into every reply
of Cap, interrupts it with another one, so every reply gives one reply-start and one barge-in sample.

- Barge-in: from the caller's first packet of the interruption to the first silent packet Cap sends after it,
  both timed at the relay (where the caller is). Reference: when the server's speech_started reached Cap.
- Reply start: a reply's first response.output_audio.delta received -> its first audible packet handed to the
  transport (discord.py's send_audio_packet). Reference: the part spent waiting for the next 20 ms tick.
- Uplink lag: a frame's feed_input() -> its input_audio_buffer.append written to the socket. Reference: the
  part spent inside send() itself (JSON, WebSocket framing, write).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import before as before_tree
import rig

SPEECH_STARTED_DELAY_MS = 400
BARGE_IN_GOAL_MS = 50  # issue 14 (was 100)
REPLY_START_GOAL_MS = 25
UPLINK_GOAL_MS = 25
INTERRUPT_AFTER_PACKETS = 15  # 300 ms into each reply
BARGE_FRAMES = 40  # 800 ms of question.wav per interruption
TIMEOUT_SECONDS = 90


def first_after(times: list[float], start: float) -> float | None:
    return next((t for t in sorted(times) if t >= start), None)


async def child(calls: int, barge_ins: int) -> dict[str, Any]:
    rig.pin_to_core()
    knobs = {"speech_started_delay_ms": SPEECH_STARTED_DELAY_MS, "reply": ["hello.wav", "question.wav"]}
    async with rig.FarSide(knobs) as far:
        rigs = await rig.open_calls(calls, far, probed=True)
        try:
            script: list[list[Any]] = [["say", "hello.wav", 50, None]]
            for _ in range(barge_ins):
                script += [["await_audible", INTERRUPT_AFTER_PACKETS], ["say", "question.wav", BARGE_FRAMES, "barge"]]
            for index, call in enumerate(rigs):
                await rig.add_caller(far, call, script, start_after=0.3 + 0.9 * index)
            deadline = time.perf_counter() + TIMEOUT_SECONDS
            while True:
                await asyncio.sleep(0.5)
                report = (await far.relay({"cmd": "report"}))["callers"]
                marks = [m for caller in report.values() for m in caller["marks"]]
                if len(marks) >= calls * barge_ins and all(m["silent_at"] for m in marks):
                    break
                if time.perf_counter() > deadline:
                    break
            await asyncio.sleep(1.0)  # the last reply's first delta and packet
        finally:
            await rig.close_calls(rigs)
    barge, confirmed, reply, tick_wait, lags, sends = [], [], [], [], [], []
    for call in rigs:
        probe: rig.Probe = call.session.probe  # type: ignore[attr-defined]
        for mark in report[str(call.port)]["marks"]:
            if mark["onset"] and mark["silent_at"]:
                barge.append(mark["silent_at"] - mark["onset"])
            started = first_after(probe.speech_started_at, mark["onset"] or float("inf"))
            if started is not None:
                confirmed.append(started - mark["onset"])
        for delta_at in probe.first_delta_at.values():
            spurt = first_after(call.client.spurt_starts, delta_at)
            if spurt is not None:
                reply.append(spurt - delta_at)
                resumed = first_after(call.resumed_at, delta_at)
                if resumed is not None and resumed <= spurt:
                    tick_wait.append(resumed - delta_at)
        lags += probe.uplink_lags
        sends += probe.uplink_sends
    return {"barge": barge, "confirmed": confirmed, "reply": reply, "tick_wait": tick_wait,
            "lags": lags, "sends": sends}


def run_child(calls: int, barge_ins: int, before: Path | None = None) -> dict[str, list[float]]:
    return rig.run_child(before_tree.script("bench_latency.py", before), calls, barge_ins)


def measure(calls: int = 2, barge_ins: int = 6, before: Path | None = None) -> list[rig.Row]:
    r = run_child(calls, barge_ins)
    barge_reference = ""
    if before is not None:
        old = run_child(calls, barge_ins, before)
        barge_reference = f"before issue 14, same run: {rig.median_max_ms(old['barge'])} ms; "

    def median_ms(values: list[float]) -> float:
        return rig.ms(statistics.median(values)) if values else float("nan")

    return [
        rig.Row(f"4. barge-in: caller's speech onset -> Cap's playback silent ({len(r['barge'])} interruptions)",
                f"median / max {rig.median_max_ms(r['barge'])} ms",
                f"{barge_reference}server's speech_started ({SPEECH_STARTED_DELAY_MS} ms late) reached Cap after "
                f"{rig.median_max_ms(r['confirmed'])} ms",
                f"median ≤ {BARGE_IN_GOAL_MS} ms", median_ms(r["barge"]) <= BARGE_IN_GOAL_MS),
        rig.Row(f"5. reply start: first audio delta -> first audible packet sent ({len(r['reply'])} replies)",
                f"median / max {rig.median_max_ms(r['reply'])} ms",
                f"of which waiting for the 20 ms tick: {rig.median_max_ms(r['tick_wait'])} ms",
                f"≤ {REPLY_START_GOAL_MS} ms", bool(r["reply"]) and max(r["reply"]) * 1000 <= REPLY_START_GOAL_MS),
        rig.Row(f"6. uplink lag: frame due (its 20 ms tick) -> its append written ({len(r['lags'])} appends)",
                f"median / max {rig.median_max_ms(r['lags'])} ms",
                f"of which inside send(): {rig.median_max_ms(r['sends'])} ms",
                f"≤ {UPLINK_GOAL_MS} ms", bool(r["lags"]) and max(r["lags"]) * 1000 <= UPLINK_GOAL_MS),
    ]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        rig.count_errors()
        result = asyncio.run(child(int(sys.argv[2]), int(sys.argv[3])))
        print(json.dumps({**result, "log_errors": rig.logged_errors()}))
        return
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    barge_ins = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    before = before_tree.tree(sys.argv[3] if len(sys.argv) > 3 else before_tree.BEFORE_REF)
    rig.print_rows(measure(calls, barge_ins, before=before))


if __name__ == "__main__":
    main()
