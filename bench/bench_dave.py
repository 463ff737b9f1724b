"""Cost of DAVE (end-to-end encryption) per 20 ms Opus frame, beside transport decryption measured in the same run.

Run as `.venv/bin/python bench/bench_dave.py` (about 10 s, one core). Real davey sessions in a real MLS group
formed by the Discord emulator's DAVE server (tests/discord_emulator), real Opus frames of a spoken sentence.
Per frame: transport decrypt alone (the reference: what every packet costs with DAVE off), transport encrypt
(discord.py's sender), DAVE encrypt (Cap speaking), DAVE decrypt (Cap hearing), and Cap's whole receive step
(transport decrypt + DaveDecryptor). Per group change: a caller joining (proposal -> commit -> welcome).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for the emulator and packet builders shared with the tests

import davey  # noqa: E402

from bot.voice.crypto import TransportDecryptor  # noqa: E402
from bot.voice.dave import DaveDecryptor  # noqa: E402
from bot.voice.rtp import RtpHeader, parse_header  # noqa: E402
from tests.bot.voice.voice_packets import MODE, SECRET_KEY, PacketSender, fixture_pcm, frames_of, opus_encode  # noqa: E402
from tests.discord_emulator.dave_caller import DaveCaller, join  # noqa: E402
from tests.discord_emulator.dave_group import DaveGroupServer  # noqa: E402

CHANNEL, CAP, ALICE = 4242, 1, 2
BATCHES = 5  # best of: other processes on the machine only ever make a batch slower
JOINS = 20


def best_us_per_item(run_batch: Callable[[], int]) -> float:
    """Best-of-batches microseconds per item; `run_batch` returns how many items it processed."""
    best = float("inf")
    for _ in range(BATCHES):
        start = time.perf_counter()
        items = run_batch()
        best = min(best, (time.perf_counter() - start) / items)
    return best * 1e6


def row(label: str, us: float, reference: float) -> None:
    print(f"  {label:<52} {us:8.1f} µs   {us / reference:5.1f}× reference")


def main() -> None:
    frames = [frame for frame in opus_encode(frames_of(fixture_pcm("hello.wav"))) if len(frame) > 3]
    print(f"{len(frames)} Opus frames of speech, {statistics.mean(map(len, frames)):.0f} bytes on average")

    server, callers = DaveGroupServer(CHANNEL), {}
    for user in (ALICE, CAP):
        join(server, callers, DaveCaller(user, CHANNEL))
    cap, alice = callers[CAP].session, callers[ALICE].session

    sender = PacketSender(0x1001)
    plain_packets = [sender.packet(frame) for frame in frames]
    headers = [parse_header(packet) for packet in plain_packets]
    assert all(isinstance(header, RtpHeader) for header in headers)
    transport = TransportDecryptor(MODE, SECRET_KEY)

    def transport_decrypt() -> int:
        for packet, header in zip(plain_packets, headers, strict=True):
            transport.decrypt(packet, header)  # type: ignore[arg-type]
        return len(plain_packets)

    reference = best_us_per_item(transport_decrypt)
    print("\nper 20 ms frame (best of 5 batches)")
    print(f"  {'transport decrypt alone (reference, DAVE off)':<52} {reference:8.1f} µs")

    def transport_encrypt() -> int:
        for frame in frames:
            sender.packet(frame)
        return len(frames)

    row("transport encrypt (discord.py's sender, + RTP header)", best_us_per_item(transport_encrypt), reference)

    def dave_encrypt() -> int:
        for frame in frames:
            alice.encrypt_opus(frame)
        return len(frames)

    row("DAVE encrypt (davey encrypt_opus)", best_us_per_item(dave_encrypt), reference)

    # davey refuses a nonce it has seen: every batch decrypts freshly encrypted frames.
    def dave_decrypt() -> int:
        sealed = [alice.encrypt_opus(frame) for frame in frames]
        start = time.perf_counter()
        for frame in sealed:
            cap.decrypt(ALICE, davey.MediaType.audio, frame)
        dave_decrypt.elapsed = time.perf_counter() - start  # type: ignore[attr-defined]
        return len(sealed)

    row("DAVE decrypt (davey decrypt)", best_elapsed_us(dave_decrypt), reference)

    receiver_dave = DaveDecryptor(lambda: cap)

    def receive_step() -> int:
        packets = [sender.packet(alice.encrypt_opus(frame)) for frame in frames]
        parsed = [parse_header(packet) for packet in packets]
        start = time.perf_counter()
        for packet, header in zip(packets, parsed, strict=True):
            receiver_dave.decrypt(ALICE, transport.decrypt(packet, header))  # type: ignore[arg-type]
        receive_step.elapsed = time.perf_counter() - start  # type: ignore[attr-defined]
        return len(packets)

    row("Cap's receive step: transport + DAVE (DaveDecryptor)", best_elapsed_us(receive_step), reference)
    assert receiver_dave.decrypted == BATCHES * len(frames), "DAVE frames were not opened"

    join_ms = []
    for n in range(JOINS):
        start = time.perf_counter()
        join(server, callers, DaveCaller(100 + n, CHANNEL))
        join_ms.append((time.perf_counter() - start) * 1e3)
    print(f"\nper group change: a caller joins a group of 2..{JOINS + 1} (all sessions in this process)")
    print(f"  median {statistics.median(join_ms):.1f} ms, max {max(join_ms):.1f} ms (MLS commit + welcome + "
          "every member processing it)")


def best_elapsed_us(run_batch: Callable[[], int]) -> float:
    """Like best_us_per_item, but timing only the part the batch measures itself (`run_batch.elapsed`)."""
    best = float("inf")
    for _ in range(BATCHES):
        items = run_batch()
        best = min(best, run_batch.elapsed / items)  # type: ignore[attr-defined]
    return best * 1e6


if __name__ == "__main__":
    main()
