"""Jitter buffer decisions (pure) and the per-speaker decoder on real Opus."""

from __future__ import annotations

from bot.voice.jitter import MAX_CONCEALED, JitterBuffer, Push, Slot, SlotKind, SpeakerDecoder
from realtime.audio import FRAME_BYTES
from tests.bot.voice.voice_packets import correlation, frames_of, opus_encode, reference_decode, vowel_pcm


def payload(seq: int) -> bytes:
    return seq.to_bytes(2, "big")


def drain(buffer: JitterBuffer, ticks: int) -> list[Slot | None]:
    return [buffer.pop() for _ in range(ticks)]


def played(slots: list[Slot | None]) -> list[int | str | None]:
    """Sequence numbers played, 'fec'/'plc' for concealment, None for silence."""
    out: list[int | str | None] = []
    for slot in slots:
        if slot is None:
            out.append(None)
        elif slot.kind is SlotKind.PACKET:
            assert slot.payload is not None
            out.append(int.from_bytes(slot.payload, "big"))
        else:
            out.append(slot.kind.value)
    return out


def test_primes_depth_frames_then_plays_in_order() -> None:
    buffer = JitterBuffer(depth=2)
    assert buffer.pop() is None  # nothing yet
    buffer.push(10, payload(10))
    assert buffer.pop() is None  # priming
    buffer.push(11, payload(11))
    buffer.push(12, payload(12))
    assert played(drain(buffer, 3)) == [10, 11, 12]


def test_reordering_within_depth_is_undone() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (101, 100, 103, 102):
        assert buffer.push(seq, payload(seq)) is Push.ACCEPTED
    assert played(drain(buffer, 4)) == [100, 101, 102, 103]


def test_duplicates_and_late_packets_are_dropped() -> None:
    buffer = JitterBuffer(depth=2)
    buffer.push(1, payload(1))
    assert buffer.push(1, payload(1)) is Push.DUPLICATE
    buffer.push(2, payload(2))
    assert played(drain(buffer, 1)) == [1]
    assert buffer.push(1, payload(1)) is Push.LATE


def test_single_loss_is_recovered_from_the_next_packets_fec() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (1, 2, 4, 5):
        buffer.push(seq, payload(seq))
    slots = drain(buffer, 4)
    assert played(slots) == [1, 2, "fec", 4]
    assert slots[2] is not None and slots[2].payload == payload(4)


def test_longer_hole_is_concealed_once_then_skipped() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (1, 2, 7, 8):
        buffer.push(seq, payload(seq))
    assert played(drain(buffer, 5)) == [1, 2, "plc", 7, 8]
    assert buffer.push(4, payload(4)) is Push.LATE  # its slot was skipped


def test_sequence_wraparound() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (65534, 0, 65535, 1):
        buffer.push(seq, payload(seq))
    assert played(drain(buffer, 4)) == [65534, 65535, 0, 1]
    assert buffer.push(65535, payload(65535)) is Push.LATE


def test_end_of_talk_spurt_goes_silent_and_next_spurt_reuses_the_concealed_slots() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (1, 2, 3):
        buffer.push(seq, payload(seq))
    assert played(drain(buffer, 3 + MAX_CONCEALED + 2)) == [1, 2, 3, "plc", "plc", None, None]
    assert not buffer.playing
    # Discord continues the sequence after a silence: 4 and 5 were concealed, yet they are new speech.
    for seq in (4, 5):
        assert buffer.push(seq, payload(seq)) is Push.ACCEPTED
    assert played(drain(buffer, 2)) == [4, 5]


def test_short_spurt_below_depth_still_plays() -> None:
    buffer = JitterBuffer(depth=3)
    buffer.push(50, payload(50))
    assert played(drain(buffer, 5)) == [None, None, None, 50, "plc"]


def test_size_is_capped_by_trimming_the_oldest() -> None:
    buffer = JitterBuffer(depth=2, max_packets=6)
    for seq in range(20):
        buffer.push(seq, payload(seq))
        assert len(buffer) <= 6
    assert buffer.trimmed == 16
    assert played(drain(buffer, 4)) == [16, 17, 18, 19]  # latency stays bounded: the newest survive


def test_a_big_jump_restarts_the_stream() -> None:
    buffer = JitterBuffer(depth=1)
    buffer.push(10, payload(10))
    assert played(drain(buffer, 1)) == [10]
    assert buffer.push(30_000, payload(30_000)) is Push.ACCEPTED  # not "late": a new stream
    assert played(drain(buffer, 1)) == [30_000]


def test_a_very_stale_packet_mid_spurt_is_late_and_the_spurt_plays_on() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in range(1000, 1008):
        buffer.push(seq, payload(seq))
    assert played(drain(buffer, 2)) == [1000, 1001]
    assert buffer.push(850, payload(850)) is Push.LATE  # 150 behind: a straggler, not a new stream
    assert played(drain(buffer, 6)) == [1002, 1003, 1004, 1005, 1006, 1007]


def test_a_sender_that_restarts_its_sequence_backwards_is_heard_after_its_spurt() -> None:
    buffer = JitterBuffer(depth=1)
    for seq in range(5000, 5003):
        buffer.push(seq, payload(seq))
    drain(buffer, 3 + MAX_CONCEALED + 1)  # played, concealed, then silent: idle
    assert buffer.push(7, payload(7)) is Push.ACCEPTED
    assert played(drain(buffer, 1)) == [7]


def test_decoder_matches_reference_in_order_and_fills_losses() -> None:
    packets = opus_encode(frames_of(vowel_pcm(0.6)))
    expected = reference_decode(packets)
    decoder = SpeakerDecoder(depth=2)
    out: list[bytes] = []
    for seq, packet in enumerate(packets):
        decoder.push(seq, packet)
        frame = decoder.next_frame()
        if frame is not None:
            out.append(frame)
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    assert out[: len(expected)] == expected  # bit-exact: same packets, same order, same decoder
    assert all(len(frame) == FRAME_BYTES for frame in out)

    lossy = SpeakerDecoder(depth=2)
    out = []
    for seq, packet in enumerate(packets):  # one tick per 20 ms, whether or not the packet arrived
        if seq % 7 != 3:  # lose one packet in seven
            lossy.push(seq, packet)
        if (frame := lossy.next_frame()) is not None:
            out.append(frame)
    while (frame := lossy.next_frame()) is not None:
        out.append(frame)
    assert lossy.stats["fec"] == 4
    assert len(out) >= len(packets)  # every slot filled: FEC keeps the timing, nothing is skipped
    assert correlation(b"".join(expected), b"".join(out[: len(expected)])) > 0.9


def test_decode_error_conceals_and_keeps_going() -> None:
    packets = opus_encode(frames_of(vowel_pcm(0.2)))
    decoder = SpeakerDecoder(depth=1)
    corrupt = b"\xff" * 3  # code 3 packet with an impossible frame count
    sequence = [packets[0], corrupt, packets[2], packets[3]]
    frames = []
    for seq, packet in enumerate(sequence):
        decoder.push(seq, packet)
        frames.append(decoder.next_frame())
    assert decoder.stats["decode_errors"] == 1
    assert all(frame is not None and len(frame) == FRAME_BYTES for frame in frames)
