"""Cost of building one outgoing voice packet (RTP header + transport encryption), per 20 ms frame.

Run as `taskset -c 0 .venv/bin/python bench/bench_send_packet.py` (a few seconds, one core). The reference is
discord.py 2.7.1's own `VoiceClient._get_voice_packet` (a nacl Aead built from the key list per packet, three
`pack_into` calls), run on the same CapVoiceClient, same frames and state, in the same run, beside Cap's
`CapVoiceClient._get_voice_packet` (key as bytes once per session, one header pack, one libsodium call).
DAVE is off in both (its cost is the same either way: bench/bench_dave.py); the send lock and UDP send are
not included (unchanged).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # packet builders and client fakes shared with the tests

import discord  # noqa: E402

from bot.voice.client import CapVoiceClient  # noqa: E402
from tests.bot.voice.test_client import fake_channel, fake_discord_client  # noqa: E402
from tests.bot.voice.voice_packets import MODE, SECRET_KEY, fixture_pcm, frames_of, opus_encode  # noqa: E402

BATCHES = 15  # best of: other processes on the machine only ever make a batch slower
ROUNDS = 5  # passes over the sentence per batch


def best_us_per_packet(builders: list[Callable[[bytes], bytes]], frames: list[bytes]) -> list[float]:
    """Best-of-batches µs per packet for each builder, batches interleaved so a busy spell hits both alike."""
    best = [float("inf")] * len(builders)
    for _ in range(BATCHES):
        for i, build in enumerate(builders):
            start = time.perf_counter()
            for _ in range(ROUNDS):
                for frame in frames:
                    build(frame)
            best[i] = min(best[i], (time.perf_counter() - start) / (ROUNDS * len(frames)))
    return [us * 1e6 for us in best]


async def main() -> None:
    frames = opus_encode(frames_of(fixture_pcm("hello.wav")))
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())
    state = vc._connection
    state._socket_reader.stop()
    state.mode, state.secret_key, state.ssrc = MODE, list(SECRET_KEY), 0x4004
    vc.sequence, vc.timestamp = 100, 96000
    ours = vc._get_voice_packet(frames[0])  # both paths once before timing; the same work, byte for byte
    vc._incr_nonce = 0
    assert ours == bytes(discord.VoiceClient._get_voice_packet(vc, frames[0])), "Cap's packet is not discord.py's"

    def discord_py(frame: bytes) -> bytes:
        return discord.VoiceClient._get_voice_packet(vc, frame)

    reference, cap = best_us_per_packet([discord_py, vc._get_voice_packet], frames)
    print(f"{len(frames)} Opus frames of speech, {statistics.mean(map(len, frames)):.0f} bytes on average;"
          f" per packet, best of {BATCHES} batches of {ROUNDS * len(frames)}")
    print(f"  discord.py 2.7.1 VoiceClient._get_voice_packet (reference)  {reference:6.2f} µs")
    print(f"  CapVoiceClient._get_voice_packet                              {cap:6.2f} µs"
          f"   {cap / reference:4.2f}× reference")


if __name__ == "__main__":
    asyncio.run(main())
