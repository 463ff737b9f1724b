"""The fake Realtime service (tests/realtime_fake) as a process of its own, so its CPU is not counted as Cap's.

Started by the benchmarks through `far_side.py`:
    .venv/bin/python bench/fake_realtime.py '{"speech_started_delay_ms": 400, "reply": ["hello.wav"]}'
It prints `port N` once listening and serves until its stdin closes. Knobs are FakeRealtimeServer's keyword
arguments, plus `reply`: fixture WAV names whose speech, at 24 kHz mono, becomes every reply's audio.
"""

from __future__ import annotations

import asyncio
import json
import sys
import wave
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the fake lives in tests/

from realtime.audio import SAMPLE_RATE_REALTIME, Downsampler, to_discord_pcm  # noqa: E402
from tests.realtime_fake import FakeRealtimeServer  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"


def fixture_pcm_24k(names: list[str]) -> bytes:
    """Fixture speech as the service sends it: 24 kHz mono s16le (via Cap's own converters)."""
    out = b""
    for name in names:
        with wave.open(str(FIXTURES / name)) as wav:
            discord_pcm = to_discord_pcm(wav.readframes(wav.getnframes()), wav.getframerate(), wav.getnchannels())
        down = Downsampler()
        out += down.process(discord_pcm) + down.flush()
    assert SAMPLE_RATE_REALTIME == 24000
    return out


async def serve(knobs: dict[str, Any]) -> None:
    reply = knobs.pop("reply", None)
    if reply:
        knobs["reply_audio"] = fixture_pcm_24k(reply)
    async with FakeRealtimeServer(**knobs) as server:
        print(f"port {server.port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the owner closes stdin
        errors = server.schema_errors + server.internal_errors
        if errors:
            print(f"fake Realtime service saw errors: {errors[:5]}", file=sys.stderr, flush=True)


def main() -> None:
    asyncio.run(serve(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))


if __name__ == "__main__":
    main()
