"""What the address gate costs a caller, and how each turn detection handles a number read with pauses.

Run as `.venv/bin/python bench/bench_reply_gate.py [TURNS]` (default 12 turns per mode, ~40 s).

- Gated answer: with two people in the channel the server creates no reply by itself; Cap waits for the turn's
  transcript, decides it was addressed, and sends response.create. Figure: the transcript's arrival -> Cap's
  first reply audio, beside the same turn answered by the server itself (one person present): speech_stopped
  -> first audio. Both against the fake service on 127.0.0.1, so the difference is Cap's own decision plus one
  round trip; on the real service a gated answer also waits for the transcription, which this fake delivers at
  once (its delay is the service's, and is the main cost of gating).
- Number reading: ten 300 ms digits with 600 ms pauses; caller turns and replies under the seed's server VAD
  (500 ms) and under semantic_vad (eagerness low).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the fake lives in tests/

from realtime.engine import VoiceSession  # noqa: E402
from realtime.tools import ToolRegistry  # noqa: E402
from tests.realtime.test_reply_modes import (  # noqa: E402
    ALICE,
    config_for,
    pause,
    phone_number_read_with_pauses,
    play,
    said,
)
from tests.realtime_fake import FakeRealtimeServer, tone_pcm  # noqa: E402


async def answered_turns(turns: int, *, humans: int) -> list[float]:
    """Per turn: ms from what the reply waited for (speech_stopped, or the transcript when gated) to audio."""
    async with FakeRealtimeServer(user_transcripts=["Cap, what's the rate on a rental?"],
                                  reply_audio=tone_pcm(0.3)) as server:
        session = VoiceSession(config_for(server, reply_mode="adaptive"), ToolRegistry())
        await session.start()
        try:
            session.set_humans(humans)
            for _ in range(turns):
                await play(session, [*said(ALICE, 600), *pause(1200)], tail_ms=1500)
        finally:
            await session.aclose()
    metrics = session.metrics
    return list(metrics.gated_reply_ms if humans > 1 else metrics.reply_latency_ms)


async def number_turns(turn_detection: str) -> tuple[int, int]:
    async with FakeRealtimeServer(reply_audio=tone_pcm(0.2)) as server:
        session = VoiceSession(config_for(server, turn_detection=turn_detection, vad_eagerness="low"),
                               ToolRegistry())
        await session.start()
        try:
            await play(session, [*pause(200), *phone_number_read_with_pauses(ALICE), *pause(2500)])
        finally:
            await session.aclose()
    return len(server.sent_of("input_audio_buffer.committed")), len(server.responses)


async def main(turns: int) -> None:
    alone = await answered_turns(turns, humans=1)
    gated = await answered_turns(turns, humans=2)
    print(f"| gated answer (2 people, 'Cap, …'): transcript -> first audio | median {statistics.median(gated):.1f} ms, "
          f"max {max(gated):.1f} ms ({len(gated)} turns) | server-created reply (1 person): speech_stopped -> "
          f"first audio median {statistics.median(alone):.1f} ms, max {max(alone):.1f} ms |")
    for mode in ("server_vad", "semantic_vad"):
        committed, replies = await number_turns(mode)
        print(f"| phone number read with 600 ms pauses, {mode} | {committed} caller turns, {replies} replies |")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 12))
