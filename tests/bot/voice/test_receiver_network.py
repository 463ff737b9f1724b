"""VoiceReceiver on a real network's faults (issue 10): late SPEAKING, departed callers, burst loss, jitter,
backlog, exact counters and every Opus frame size. Packets are real Opus encrypted by discord.py's sender."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from bot.voice.receiver import DEPARTED_SECONDS, HELD_MAX_AGE_TICKS, PENDING_PACKETS, VoiceReceiver
from realtime.audio import FRAME_BYTES, FRAME_SAMPLES_DISCORD
from tests.bot.voice.test_receiver import ALICE, ALICE_SSRC, BOB, BOB_SSRC, connection, speaking
from tests.bot.voice.voice_packets import (
    PacketSender,
    correlation,
    fixture_pcm,
    frames_of,
    opus_encode,
    reference_decode,
    rms,
    vowel_pcm,
)

CAROL = 333


@pytest.fixture(scope="module")
def hello() -> tuple[list[bytes], list[bytes]]:
    """Real speech (aperiodic, so a timing shift shows), its Opus packets and their ideal decode."""
    packets = opus_encode(frames_of(fixture_pcm("hello.wav")))
    return packets, reference_decode(packets)


def new_receiver() -> VoiceReceiver:
    return VoiceReceiver(connection())  # type: ignore[arg-type]


def play(receiver: VoiceReceiver, schedule: dict[int, list[bytes]], ticks: int) -> list[dict[int, bytes]]:
    """Tick `ticks` times; before tick t the datagrams schedule[t] arrive (the socket thread's work)."""
    out = []
    for tick in range(ticks):
        for datagram in schedule.get(tick, ()):
            receiver.on_packet(datagram)
        out.append(receiver.pull_frames())
    return out


def frame_lag(expected: list[bytes], heard: list[bytes], start: int, count: int = 20, search: int = 3) -> int:
    """By how many whole frames `heard` is shifted against `expected` around frame `start`."""
    want = b"".join(expected[start : start + count])
    scores = {}
    for lag in range(-search, search + 1):
        if start + lag >= 0:
            scores[lag] = correlation(want, b"".join(heard[start + lag : start + lag + count]), max_lag=0)
    return max(scores, key=scores.__getitem__)


def outcome_total(stats: dict[str, int]) -> int:
    from bot.voice.receiver import PACKET_OUTCOMES  # imported here: the name is new with issue 10

    return sum(stats.get(name, 0) for name in PACKET_OUTCOMES)


# ---- 1. an utterance that ends before its SPEAKING -----------------------------------------------------------


def test_an_utterance_that_ends_before_its_speaking_is_heard_as_soon_as_speaking_comes(hello) -> None:
    packets, expected = hello
    receiver = new_receiver()
    bob = PacketSender(BOB_SSRC)
    short = packets[:10]  # "yes": 200 ms, over before Discord's op 5 reaches us
    ticks = play(receiver, {t: [bob.packet(p)] for t, p in enumerate(short)}, 15)
    assert not any(BOB in tick for tick in ticks)
    receiver.on_ws_message(speaking(BOB, BOB_SSRC))
    after = play(receiver, {}, 15)
    assert BOB in after[0], "heard on the first tick after SPEAKING"
    assert [tick[BOB] for tick in after if BOB in tick][:10] == expected[:10]  # in full, bit-exact

    # Bob's next utterance starts on time: nothing stale is queued in front of it.
    later = play(receiver, {0: [bob.packet(packets[10])], 1: [bob.packet(packets[11])]}, 3)
    assert BOB in later[0]


def test_held_dave_frames_are_opened_with_the_announced_users_key(hello) -> None:
    from tests.bot.voice.test_dave import StandInSession

    packets, expected = hello
    conn = connection(dave_session=StandInSession(0x5A, members=(BOB,)))
    receiver = VoiceReceiver(conn)  # type: ignore[arg-type]
    bob = PacketSender(BOB_SSRC)
    play(receiver, {t: [bob.packet(conn.dave_session.seal(p))] for t, p in enumerate(packets[:8])}, 10)
    assert conn.dave_session.calls == []  # nobody to decrypt for before SPEAKING
    receiver.on_ws_message(speaking(BOB, BOB_SSRC))
    heard = [tick[BOB] for tick in play(receiver, {}, 10) if BOB in tick]
    assert heard[:8] == expected[:8]
    assert {user for user, _ in conn.dave_session.calls} == {BOB}


# ---- 2. a caller who leaves ----------------------------------------------------------------------------------


def test_a_departed_callers_stragglers_are_not_heard_as_the_next_owner_of_the_ssrc(hello) -> None:
    packets, _ = hello
    receiver = new_receiver()
    receiver.on_ws_message(speaking(BOB, BOB_SSRC))
    bob = PacketSender(BOB_SSRC, sequence=100)
    play(receiver, {t: [bob.packet(p)] for t, p in enumerate(packets[:5])}, 8)
    receiver.on_ws_message({"op": 13, "d": {"user_id": str(BOB)}})
    stragglers = [bob.packet(p) for p in packets[5:8]]  # still in flight when Bob left
    play(receiver, {0: stragglers}, 2)
    carol = PacketSender(BOB_SSRC, sequence=5000)  # Discord reuses the SSRC for Carol: a sequence of her own
    voice = opus_encode(frames_of(vowel_pcm(0.4, f0=210, seed=3)))
    play(receiver, {t: [carol.packet(p)] for t, p in enumerate(voice[:3])}, 3)  # before her SPEAKING: held
    receiver.on_ws_message(speaking(CAROL, BOB_SSRC))
    ticks = play(receiver, {t: [carol.packet(p)] for t, p in enumerate(voice[3:])}, len(voice) + 4)
    heard = [tick[CAROL] for tick in ticks if CAROL in tick]
    assert heard[: len(voice)] == reference_decode(voice), "only Carol's own voice, from her first word"
    assert receiver.stats()["departed"] == 3


# ---- 3. burst loss -------------------------------------------------------------------------------------------


def test_a_burst_loss_is_concealed_in_place_and_timing_never_shifts(hello) -> None:
    packets, expected = hello
    receiver = new_receiver()
    receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))
    alice = PacketSender(ALICE_SSRC)
    datagrams = [alice.packet(p) for p in packets[:60]]
    schedule: dict[int, list[bytes]] = {t: [d] for t, d in enumerate(datagrams)}
    schedule[8] = schedule[9] = schedule[10] = []
    schedule[11] = datagrams[8:12]  # a 60 ms delay spike deepens the buffer (nothing lost) ...
    for lost in (30, 31, 32):  # ... so the packets after this burst loss are already queued when it is due
        del schedule[lost]
    ticks = play(receiver, schedule, 75)
    present = [ALICE in tick for tick in ticks]
    first, last = present.index(True), len(present) - present[::-1].index(True)
    assert all(present[first:last]), "no silent gap: every lost slot is concealed"
    heard = [tick[ALICE] for tick in ticks[first:last]]
    before = frame_lag(expected, heard, 14, count=14)
    assert frame_lag(expected, heard, 36) == before, "speech after the burst stays where it belongs"
    stats = receiver.stats()
    assert stats["decoded"] + stats.get("shed", 0) == 57  # after the spike a pause may be shed (shrinking)
    assert stats.get("late", 0) == 0
    assert stats["jitter_lost"] == 3


# ---- 4. jitter: adapt the target delay ------------------------------------------------------------------------


def jittered_schedule(
    datagrams: list[bytes], jitter_ms: float, seed: int, start_tick: int = 0
) -> dict[int, list[bytes]]:
    """Packet i is sent at i*20 ms and arrives after a uniformly random 0..jitter_ms delay."""
    rng = random.Random(seed)
    schedule: dict[int, list[bytes]] = {}
    for i, datagram in enumerate(datagrams):
        arrival_ms = i * 20 + 1 + rng.uniform(0, jitter_ms)
        schedule.setdefault(start_tick + int(np.ceil(arrival_ms / 20)), []).append(datagram)
    return schedule


def test_a_clean_stream_plays_each_packet_on_the_tick_it_arrives(hello) -> None:
    packets, expected = hello
    receiver = new_receiver()
    receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))
    alice = PacketSender(ALICE_SSRC)
    ticks = play(receiver, {t: [alice.packet(p)] for t, p in enumerate(packets)}, len(packets) + 5)
    assert [tick.get(ALICE) for tick in ticks[: len(packets)]] == expected, "one frame of delay, not two"


def test_packets_45_ms_late_behind_their_successors_are_waited_for_once_the_buffer_adapts(hello) -> None:
    packets, _ = hello
    receiver = new_receiver()
    receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))
    alice = PacketSender(ALICE_SSRC)
    stream = (packets * 4)[:200]
    schedule: dict[int, list[bytes]] = {}
    for i, datagram in enumerate(alice.packet(p) for p in stream):  # every other packet 45 ms late
        arrival_ms = i * 20 + 2 + (45 if i % 2 else 0)
        schedule.setdefault(int(np.ceil(arrival_ms / 20)), []).append(datagram)
    adapting = play(receiver, {t: b for t, b in schedule.items() if t < 50}, 50)
    assert adapting
    early = receiver.stats().get("late", 0)
    play(receiver, {t - 50: b for t, b in schedule.items() if t >= 50}, 160)
    late = receiver.stats().get("late", 0) - early
    assert late <= 0.05 * 150, f"{late} of the last 150 packets dropped as late"


def test_the_target_delay_grows_with_jitter_and_shrinks_back_when_the_network_calms(hello) -> None:
    packets, _ = hello
    receiver = new_receiver()
    receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))
    alice = PacketSender(ALICE_SSRC)
    stream = (packets * 6)[:300]  # 6 s of talk with 45 ms of jitter
    play(receiver, jittered_schedule([alice.packet(p) for p in stream[:100]], 45, seed=1), 110)
    before = receiver.stats()
    play(receiver, jittered_schedule([alice.packet(p) for p in stream[100:]], 45, seed=2), 210)
    after = receiver.stats()
    late = after.get("late", 0) - before.get("late", 0)
    assert late <= 0.05 * 200, f"{late} of 200 packets late once adapted"

    # 10 s of a calm network in talk spurts, then a new spurt plays with one frame of delay again.
    for _ in range(5):
        play(receiver, {t: [alice.packet(p)] for t, p in enumerate(stream[:100])}, 110)
    spurt = [alice.packet(p) for p in packets[:20]]
    ticks = play(receiver, {t: [d] for t, d in enumerate(spurt)}, 25)
    assert ALICE in ticks[0]


# ---- 5. backlog after a late SPEAKING ------------------------------------------------------------------------


def test_the_backlog_after_a_late_speaking_is_shed_in_the_pauses_without_losing_speech() -> None:
    words = []
    for n in range(6):  # 300 ms words with 200 ms pauses, 3 s in all
        words += [vowel_pcm(0.3, f0=120 + 20 * n, seed=n), bytes(FRAME_BYTES * 10)]
    frames = frames_of(b"".join(words))
    packets = opus_encode(frames)
    receiver = new_receiver()
    bob = PacketSender(BOB_SSRC)
    datagrams = [bob.packet(p) for p in packets]
    ticks = []
    for tick, datagram in enumerate(datagrams):
        receiver.on_packet(datagram)
        if tick == 16:  # SPEAKING arrives 320 ms into the utterance
            receiver.on_ws_message(speaking(BOB, BOB_SSRC))
        ticks.append(receiver.pull_frames())
    last_packet_heard = ticks[-1].get(BOB)
    assert last_packet_heard is not None
    lag = frame_lag(reference_decode(packets), [t.get(BOB, bytes(FRAME_BYTES)) for t in ticks], len(packets) - 40)
    assert lag <= 1, f"still {lag} frames behind at the end of the utterance"
    loud = [frame for frame in reference_decode(packets) if rms(frame) > 300]
    heard_loud = [t[BOB] for t in ticks + play(receiver, {}, 40) if BOB in t and rms(t[BOB]) > 300]
    assert len(heard_loud) >= len(loud), "only pauses were shed, never speech"


# ---- 6. counters and frame sizes -----------------------------------------------------------------------------


def test_every_datagram_lands_in_exactly_one_outcome(hello) -> None:
    packets, _ = hello
    receiver = new_receiver()
    receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))
    alice, bob, ghost = PacketSender(ALICE_SSRC), PacketSender(BOB_SSRC), PacketSender(0x6006)
    schedule: dict[int, list[bytes]] = {}
    for t, p in enumerate(packets[:40]):
        batch = [alice.packet(p), bob.packet(p), ghost.packet(p)]
        if t % 7 == 0:
            batch.append(batch[0])  # a duplicate
        batch.append(struct.pack(">BBHII", 0x80, 0x21, t, 0, 0x7007) + bytes(30))  # another payload type
        schedule[t] = batch
    play(receiver, schedule, 20)
    receiver.on_ws_message(speaking(BOB, BOB_SSRC))  # Bob's first 20 were held: handed over now
    play(receiver, {t - 20: b for t, b in schedule.items() if t >= 20}, 30)
    for p in packets[40:55]:  # the ghost's owner never comes: only the newest PENDING_PACKETS are kept
        receiver.on_packet(ghost.packet(p))
    receiver.on_packet(alice.packet(packets[40]))  # queued, not yet played, when Alice leaves
    receiver.on_ws_message({"op": 13, "d": {"user_id": str(ALICE)}})
    receiver.on_packet(alice.packet(packets[41]))  # in flight after she left
    stats = receiver.stats()
    assert stats["packets"] == 40 * 4 + len(range(0, 40, 7)) + 15 + 2
    assert stats["other_payload_type"] == 40
    assert stats.get("video", 0) == 0, "garbage with another payload type is not video"
    assert stats["held_overflow"] == 40 + 15 - PENDING_PACKETS
    assert stats["unplayed"] == 1
    assert stats["departed"] == 1
    assert stats["delivered"] == 40 + 6 + 1 + 40, "a held packet is delivered once, when its owner is known"
    assert outcome_total(stats) == stats["packets"], {k: v for k, v in stats.items() if v}


@pytest.mark.parametrize("frame_ms", [10, 20, 40, 60])
def test_every_opus_frame_size_is_decoded_in_full(frame_ms: int) -> None:
    pcm = b"".join(frames_of(vowel_pcm(1.2)))
    packets = opus_encode(frames_of(pcm), frame_ms)
    decoder_reference = b"".join(reference_decode(packets))
    receiver = new_receiver()
    receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))
    alice = PacketSender(ALICE_SSRC)
    samples = FRAME_SAMPLES_DISCORD * frame_ms // 20
    schedule: dict[int, list[bytes]] = {}
    for i, packet in enumerate(packets):  # sent when its audio is complete, on the 20 ms grid
        schedule.setdefault(i * frame_ms // 20, []).append(alice.packet(packet, samples=samples))
    ticks = play(receiver, schedule, len(pcm) // FRAME_BYTES + 10)
    heard = b"".join(tick[ALICE] for tick in ticks if ALICE in tick)
    assert heard[: len(decoder_reference)] == decoder_reference, "every sample, in order"
    assert receiver.stats().get("decode_errors", 0) == 0


# ---- review 2: the receiver's smaller points (review1.md) ----------------------------------------------------


def test_departed_ssrcs_are_forgotten_once_their_stragglers_window_has_passed(hello) -> None:
    """Each departed SSRC is kept DEPARTED_SECONDS to drop its stragglers, then forgotten: a long call with many
    comings and goings must not grow the table (read by the socket thread for every unknown packet) for ever."""
    packets, _ = hello
    now = [0.0]
    receiver = VoiceReceiver(connection(), clock=lambda: now[0])  # type: ignore[arg-type]
    for n in range(200):
        user, ssrc = 10_000 + n, 0x5000 + n
        receiver.on_ws_message(speaking(user, ssrc))
        receiver.on_packet(PacketSender(ssrc).packet(packets[0]))
        receiver.pull_frames()
        receiver.on_ws_message({"op": 13, "d": {"user_id": str(user)}})
    assert len(receiver._departed) == 200
    now[0] += DEPARTED_SECONDS + 1
    for _ in range(60):  # a little over a second of ticks
        receiver.pull_frames()
    assert len(receiver._departed) == 0


def test_held_packets_the_socket_thread_hands_over_are_dropped_when_stale(hello) -> None:
    """SPEAKING maps the SSRC, then `_flush_held` takes the held packets; the socket thread can take them first
    (its next packet sees the speaker before the flush gets the lock). Both hand-overs apply the same age rule."""
    packets, _ = hello
    receiver = new_receiver()
    bob = PacketSender(BOB_SSRC)
    for packet in packets[:5]:  # Bob talks before his SPEAKING: held
        receiver.on_packet(bob.packet(packet))
    for _ in range(HELD_MAX_AGE_TICKS + 10):  # ...and SPEAKING is long in coming
        receiver.pull_frames()
    flush = receiver._flush_held
    receiver._flush_held = lambda ssrc, speaker: None  # type: ignore[method-assign]  # the socket thread wins
    receiver.on_ws_message(speaking(BOB, BOB_SSRC))
    receiver._flush_held = flush  # type: ignore[method-assign]
    receiver.on_packet(bob.packet(packets[5]))  # hands the held packets over on the socket thread
    stats = receiver.stats()
    assert stats.get("held_stale", 0) == 5 and stats["delivered"] == 1


def test_a_caller_heard_only_through_held_packets_leaves_no_straggler_trap_for_the_next_owner(hello) -> None:
    """A user whose only packets were held (then flushed by SPEAKING) and who leaves: the departed entry keeps
    their last sequence, so the next owner of the SSRC (a sequence of its own) is held, not dropped as Bob's."""
    packets, _ = hello
    receiver = new_receiver()
    bob = PacketSender(BOB_SSRC, sequence=100)
    play(receiver, {0: [bob.packet(p) for p in packets[:3]]}, 1)  # held: no SPEAKING yet
    receiver.on_ws_message(speaking(BOB, BOB_SSRC))  # flushed on the event loop
    play(receiver, {}, 5)
    receiver.on_ws_message({"op": 13, "d": {"user_id": str(BOB)}})
    carol = PacketSender(BOB_SSRC, sequence=5000)
    voice = opus_encode(frames_of(vowel_pcm(0.4, f0=210, seed=3)))
    play(receiver, {t: [carol.packet(p)] for t, p in enumerate(voice[:3])}, 3)  # before her SPEAKING: held
    receiver.on_ws_message(speaking(CAROL, BOB_SSRC))
    ticks = play(receiver, {t: [carol.packet(p)] for t, p in enumerate(voice[3:])}, len(voice) + 4)
    heard = [tick[CAROL] for tick in ticks if CAROL in tick]
    assert receiver.stats().get("departed", 0) == 0
    assert heard[: len(voice)] == reference_decode(voice), "Carol heard from her first word"
