"""Jitter buffer decisions (pure: ticks and sequence numbers) and the per-speaker decoder on real Opus."""

from __future__ import annotations

import types

import pytest
from discord import opus

from bot.voice.jitter import MAX_CONCEALED, DelayEstimator, JitterBuffer, Push, Slot, SlotKind, SpeakerDecoder
from bot.voice.opus_decoder import HEARD_PCM
from realtime.audio import FRAME_BYTES, FRAME_SAMPLES_DISCORD
from tests.bot.voice.voice_packets import correlation, frames_of, opus_encode, reference_decode, vowel_pcm


def payload(seq: int) -> bytes:
    return seq.to_bytes(2, "big")


def push(buffer: JitterBuffer, seq: int, age: int = 0) -> Push:
    return buffer.push(seq, seq * FRAME_SAMPLES_DISCORD, payload(seq), age)


def label(slot: Slot | None) -> int | str | None:
    """The sequence number played, 'fec'/'plc' for concealment, None for silence."""
    if slot is None:
        return None
    if slot.kind is SlotKind.PACKET:
        assert slot.payload is not None
        return int.from_bytes(slot.payload, "big")
    return slot.kind.value


def run(buffer: JitterBuffer, arrivals: dict[int, list[int]], ticks: int) -> list[int | str | None]:
    """Tick by tick: push arrivals[t], pop one slot, advance the clock."""
    out = []
    for tick in range(ticks):
        for seq in arrivals.get(tick, ()):
            push(buffer, seq)
        out.append(label(buffer.pop()))
        buffer.advance()
    return out


def test_a_clean_stream_plays_each_packet_on_the_tick_it_arrives() -> None:
    buffer = JitterBuffer()
    assert buffer.target == 1
    assert run(buffer, {t: [t] for t in range(5)}, 5) == [0, 1, 2, 3, 4]


def test_a_late_packet_plays_after_concealment_and_the_buffer_grows() -> None:
    buffer = JitterBuffer()
    assert run(buffer, {0: [0], 1: [1], 3: [2, 3], 4: [4]}, 6) == [0, 1, "plc", 2, 3, 4]


def test_underrun_concealment_stands_in_for_lost_slots_so_the_next_packet_plays_on_time() -> None:
    buffer = JitterBuffer()
    out = run(buffer, {0: [0], 1: [1], 5: [5], 6: [6]}, 7)  # 2, 3, 4 lost
    assert out == [0, 1, "plc", "plc", "plc", 5, 6]
    assert buffer.lost == 3
    assert push(buffer, 3) is Push.LATE


def test_a_hole_with_later_packets_queued_is_concealed_slot_by_slot_with_fec_from_the_next() -> None:
    buffer = JitterBuffer()
    for seq in (0, 1, 5, 6):
        push(buffer, seq, age=3)  # a backlog (e.g. flushed after a late SPEAKING)
    slots = [buffer.pop() for _ in range(7)]
    assert [label(slot) for slot in slots] == [0, 1, "plc", "plc", "fec", 5, 6]
    assert [slot.sequence for slot in slots if slot is not None] == [0, 1, 2, 3, 4, 5, 6]
    assert slots[4] is not None and slots[4].payload == payload(5)


def test_a_loss_longer_than_the_concealment_still_keeps_the_timing() -> None:
    buffer = JitterBuffer()
    out = run(buffer, {0: [0], 1: [1], 7: [7], 8: [8]}, 9)  # 2..6 lost
    assert out == [0, 1, "plc", "plc", "plc", None, None, 7, 8]


def test_duplicates_and_late_packets_are_dropped() -> None:
    buffer = JitterBuffer()
    push(buffer, 1)
    assert push(buffer, 1) is Push.DUPLICATE
    assert label(buffer.pop()) == 1
    assert push(buffer, 0) is Push.LATE


def test_sequence_wraparound() -> None:
    buffer = JitterBuffer()
    for seq in (65534, 0, 65535, 1):
        buffer.push(seq, ((seq + 2) & 0xFFFF) * FRAME_SAMPLES_DISCORD, payload(seq), age=1)
    assert [label(buffer.pop()) for _ in range(4)] == [65534, 65535, 0, 1]
    assert push(buffer, 65535) is Push.LATE


def test_end_of_talk_spurt_goes_silent_and_the_next_spurt_continues_the_sequence() -> None:
    buffer = JitterBuffer()
    out = run(buffer, {0: [1], 1: [2], 2: [3]}, 3 + MAX_CONCEALED + 12)
    assert out[: 3 + MAX_CONCEALED + 1] == [1, 2, 3, "plc", "plc", "plc", None]
    assert not buffer.playing
    # Discord continues the sequence after a silence: 4 and 5 were concealed, yet they are new speech.
    assert run(buffer, {0: [4], 1: [5]}, 2) == [4, 5]


def test_a_new_talk_spurt_is_primed_to_the_target_delay() -> None:
    buffer = JitterBuffer()
    for tick in range(200):  # every other packet a tick late: the target grows to two frames
        push(buffer, tick, age=tick % 2)
        buffer.pop()
        buffer.advance()
    assert buffer.target == 2
    run(buffer, {}, 10)
    assert run(buffer, {0: [200], 1: [201], 2: [202]}, 3) == [None, 200, 201]


def test_the_target_follows_the_measured_jitter() -> None:
    estimator = DelayEstimator()
    for seq in range(300):  # up to 3 ticks of jitter
        estimator.observe(seq + (seq * 7) % 4, seq * FRAME_SAMPLES_DISCORD)
    assert estimator.target == 4
    for seq in range(300, 900):  # the network calms down
        estimator.observe(seq + 3, seq * FRAME_SAMPLES_DISCORD)
    assert estimator.target == 1
    estimator.restart_reference()  # a new talk spurt whose timestamps did not run on through the silence
    for seq in range(10):
        estimator.observe(2000 + seq, seq * FRAME_SAMPLES_DISCORD)
    assert estimator.target == 1


def test_size_is_capped_by_trimming_the_oldest() -> None:
    buffer = JitterBuffer(max_delay=2, max_packets=6)
    for seq in range(20):
        push(buffer, seq)
        assert len(buffer) <= 6
    assert buffer.trimmed == 20 - len(buffer)
    assert [label(buffer.pop()) for _ in range(len(buffer))][-2:] == [18, 19]  # bounded: the newest survive


def test_a_big_jump_restarts_the_stream() -> None:
    buffer = JitterBuffer()
    assert run(buffer, {0: [10]}, 1) == [10]
    assert push(buffer, 30_000) is Push.ACCEPTED  # not "late": a new stream
    assert label(buffer.pop()) == 30_000


def test_a_very_stale_packet_mid_spurt_is_late_and_the_spurt_plays_on() -> None:
    buffer = JitterBuffer()
    for seq in range(1000, 1008):
        push(buffer, seq, age=1)
    assert [label(buffer.pop()) for _ in range(2)] == [1000, 1001]
    assert push(buffer, 850) is Push.LATE  # 150 behind: a straggler, not a new stream
    assert [label(buffer.pop()) for _ in range(6)] == [1002, 1003, 1004, 1005, 1006, 1007]


def test_a_sender_that_restarts_its_sequence_backwards_is_heard_after_its_spurt() -> None:
    buffer = JitterBuffer()
    run(buffer, {0: [5000], 1: [5001], 2: [5002]}, 3 + MAX_CONCEALED + 1)  # played, concealed, then silent
    assert push(buffer, 7) is Push.ACCEPTED
    assert label(buffer.pop()) == 7


def test_decoder_matches_reference_in_order_and_conceals_losses_in_place() -> None:
    packets = opus_encode(frames_of(vowel_pcm(0.6)))
    expected = reference_decode(packets)
    decoder = SpeakerDecoder()
    out: list[bytes | None] = []
    for seq, packet in enumerate(packets):
        decoder.push(seq, seq * FRAME_SAMPLES_DISCORD, packet)
        out.append(decoder.next_frame())
    assert out == expected  # bit-exact, and each frame on the tick its packet arrived

    lossy = SpeakerDecoder()
    out = []
    for seq, packet in enumerate(packets):  # one tick per 20 ms, whether or not the packet arrived
        if seq % 7 != 3:  # lose one packet in seven
            lossy.push(seq, seq * FRAME_SAMPLES_DISCORD, packet)
        out.append(lossy.next_frame())
    assert all(frame is not None and len(frame) == HEARD_PCM.frame_bytes for frame in out)  # every slot filled
    assert lossy.stats["plc"] == len(range(3, len(packets), 7))
    assert correlation(b"".join(expected), b"".join(out), max_lag=0, channels=1) > 0.9  # nothing shifted


def test_decode_error_conceals_and_keeps_going() -> None:
    packets = opus_encode(frames_of(vowel_pcm(0.2)))
    decoder = SpeakerDecoder()
    corrupt = b"\xff" * 3  # code 3 packet with an impossible frame count
    sequence = [packets[0], corrupt, packets[2], packets[3]]
    frames = []
    for seq, packet in enumerate(sequence):
        decoder.push(seq, seq * FRAME_SAMPLES_DISCORD, packet)
        frames.append(decoder.next_frame())
    assert decoder.stats["decode_errors"] == 1
    assert all(frame is not None and len(frame) == HEARD_PCM.frame_bytes for frame in frames)


def test_a_backlog_is_shed_in_pauses_only() -> None:
    words = vowel_pcm(0.2) + bytes(FRAME_BYTES * 10) + vowel_pcm(0.2, f0=180)
    packets = opus_encode(frames_of(words))
    decoder = SpeakerDecoder()
    for seq, packet in enumerate(packets):  # all of it queued at once, a second old
        decoder.push(seq, seq * FRAME_SAMPLES_DISCORD, packet, age=len(packets))
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    assert decoder.stats["shed"] > 0
    assert decoder.stats["decoded"] + decoder.stats["shed"] == len(packets)
    assert b"".join(out[:10]) == b"".join(reference_decode(packets)[:10])  # the first word intact
    assert len(out) < len(packets) + MAX_CONCEALED


def test_decoding_stays_out_of_python_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """SpeakerDecoder decodes with OpusDecoder: discord.py's Decoder copies each frame through a list of ints."""
    packets = opus_encode(frames_of(vowel_pcm(0.2)))
    copies: list[type] = []
    real_array = opus.array.array

    def spy(typecode: str, data: list[int]) -> object:
        copies.append(type(data))
        return real_array(typecode, data)

    monkeypatch.setattr(opus, "array", types.SimpleNamespace(array=spy))
    decoder = SpeakerDecoder()
    for seq, packet in enumerate(packets):
        if seq != 3:  # lost: recovered by FEC from the next packet
            decoder.push(seq, seq * FRAME_SAMPLES_DISCORD, packet)
    out = []
    while (frame := decoder.next_frame()) is not None:  # ends in PLC after the last packet
        out.append(frame)
    assert decoder.stats["fec"] == 1 and decoder.stats["plc"] >= 1
    assert len(out) >= len(packets) and all(len(frame) == HEARD_PCM.frame_bytes for frame in out)
    assert copies == []
