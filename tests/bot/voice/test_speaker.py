"""The shared speaker thread: every call's packets on one 20 ms grid, one call's failure never another's."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable

import pytest

from bot.voice import speaker as speaker_module
from bot.voice.client import CapVoiceClient
from bot.voice.crypto import TransportDecryptor
from bot.voice.grid import MAX_CATCH_UP_TICKS, Grid
from bot.voice.opus_decoder import SPOKEN_PCM
from bot.voice.rtp import parse_header
from bot.voice.source import OPUS_SILENCE
from bot.voice.speaker import Send, SendPacing, Speaker, SpeakerPool, current_deadline, speaker
from realtime.playback import PlaybackBuffer
from tests.bot.voice.rust_panic import raise_rust_panic
from tests.bot.voice.test_client import fake_channel, fake_discord_client, opus_encode_like_cap, wait_until
from tests.bot.voice.voice_packets import MODE, SECRET_KEY, spoken_frames_of, vowel_pcm

# ----- the grid -------------------------------------------------------------------------------------------------


def test_a_grid_keeps_its_deadlines_whatever_each_tick_cost() -> None:
    grid = Grid(start=10.0, interval=0.02)
    assert grid.advance(now=10.005) == pytest.approx(0.015)  # a tick that took 5 ms waits the rest
    assert grid.advance(now=10.02 + 0.019) == pytest.approx(0.001)
    assert grid.deadline == pytest.approx(10.04)  # no drift


@pytest.mark.parametrize("stall_ticks", [1, 3, MAX_CATCH_UP_TICKS, MAX_CATCH_UP_TICKS + 1, 50, 5000])
def test_a_stalled_grid_catches_up_at_most_a_few_frames(stall_ticks: int) -> None:
    """After a stall the missed ticks run back to back, but never more than MAX_CATCH_UP_TICKS of them: after a
    longer stall the grid restarts from now rather than bursting stale frames."""
    grid = Grid(start=0.0, interval=0.02)
    now = grid.deadline + stall_ticks * 0.02 + 0.001  # the tick at 0 ran this late
    back_to_back = 0
    while grid.advance(now) <= 0:
        back_to_back += 1
    assert back_to_back <= MAX_CATCH_UP_TICKS
    assert back_to_back == min(stall_ticks, MAX_CATCH_UP_TICKS) or stall_ticks > MAX_CATCH_UP_TICKS
    assert 0 < grid.deadline - now <= 0.02 + 1e-9  # back on a 20 ms grid from here


# ----- pacing ---------------------------------------------------------------------------------------------------


def test_pacing_sends_while_speaking_and_through_the_trailing_silence_then_keepalives_only() -> None:
    pacing = SendPacing(keepalive_ticks=3)
    assert pacing.next(speech_queued=False, quiet=False) is Send.FRAME  # a new call sends its silence frames
    assert pacing.next(speech_queued=False, quiet=True) is Send.NOTHING
    assert [pacing.next(speech_queued=False, quiet=True) for _ in range(6)] == [
        Send.NOTHING, Send.KEEPALIVE, Send.NOTHING, Send.NOTHING, Send.KEEPALIVE, Send.NOTHING]
    assert pacing.next(speech_queued=True, quiet=True) is Send.FRAME
    assert pacing.next(speech_queued=False, quiet=False) is Send.FRAME  # the trailing silence
    assert pacing.next(speech_queued=False, quiet=True) is Send.NOTHING


# ----- the thread -----------------------------------------------------------------------------------------------


def counter() -> tuple[list[int], threading.Event, Callable[[], None]]:
    ticks: list[int] = []
    enough = threading.Event()

    def step() -> None:
        ticks.append(1)
        if len(ticks) >= 5:
            enough.set()

    return ticks, enough, step


def test_the_thread_stops_when_the_last_call_leaves_and_starts_again_for_the_next() -> None:
    shared = Speaker(name="test-speaker")
    _, first_enough, first = counter()
    second_ticks, second_enough, second = counter()
    shared.add(first)
    shared.add(second)
    thread = shared.thread
    assert thread is not None and thread.daemon
    assert first_enough.wait(2) and second_enough.wait(2)
    shared.discard(first)
    assert shared.running  # the second call still speaks
    shared.discard(second)
    assert not shared.running
    thread.join(1)
    assert not thread.is_alive()
    count = len(second_ticks)
    _, third_enough, third = counter()
    shared.add(third)
    try:
        assert shared.thread is not thread and third_enough.wait(2)
        assert len(second_ticks) == count  # a discarded step is not called again
    finally:
        shared.discard(third)


def test_a_failing_or_panicking_step_never_stops_the_others(caplog: pytest.LogCaptureFixture) -> None:
    """A davey panic is a BaseException: `except Exception` would let it end the thread, and every call's voice."""
    shared = Speaker(name="test-speaker")

    def failing() -> None:
        raise RuntimeError("socket gone")

    def panicking() -> None:
        raise_rust_panic()

    _, enough, healthy = counter()
    with caplog.at_level(logging.ERROR, logger="bot.voice.speaker"):
        for step in (failing, panicking, healthy):
            shared.add(step)
        try:
            assert enough.wait(2)
            thread = shared.thread
            assert thread is not None and thread.is_alive()
        finally:
            for step in (failing, panicking, healthy):
                shared.discard(step)
    failures = [r for r in caplog.records if "voice send step" in r.getMessage()]
    assert len(failures) == 2  # once per failing step (rate limited), not once per tick


def test_a_pool_gives_every_few_calls_a_thread_of_their_own_and_ends_them_with_their_calls() -> None:
    """One sender thread for every call got too small a share of the GIL beside a busy event loop."""
    pool = SpeakerPool(per_speaker=2)
    steps = [counter()[2] for _ in range(5)]
    for step in steps:
        pool.add(step)
    pool.add(steps[0])  # idempotent
    lanes = pool.speakers
    assert [len(lane) for lane in lanes] == [2, 2, 1] and all(lane.running for lane in lanes)
    pool.discard(steps[4])
    assert len(pool.speakers) == 2 and not lanes[2].running  # an emptied thread ends
    pool.add(steps[4])  # joins a thread with room rather than starting one
    assert len(pool.speakers) == 3
    for step in steps:
        pool.discard(step)
    assert pool.speakers == [] and not pool.running
    assert all(step not in pool for step in steps)


def test_a_step_can_tell_the_deadline_of_the_tick_it_serves() -> None:
    """The bench counts a packet late when it leaves more than 20 ms after that deadline (bench/rig.py)."""
    shared = Speaker(name="test-speaker")
    seen: list[tuple[float | None, float]] = []
    done = threading.Event()

    def step() -> None:
        seen.append((current_deadline(), time.perf_counter()))
        if len(seen) >= 5:
            done.set()

    shared.add(step)
    try:
        assert done.wait(2)
    finally:
        shared.discard(step)
    assert current_deadline() is None  # not on a speaker thread
    deadlines = [deadline for deadline, _ in seen[:5]]
    assert all(deadline is not None and deadline <= now for deadline, now in seen[:5])
    assert all(b > a for a, b in itertools.pairwise(deadlines))  # type: ignore[operator]  # one per tick


def test_a_thread_whose_calls_all_sleep_waits_idle_until_woken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle calls cost no wake-up every 20 ms (bench_idle.py); `wake()` brings the thread back at once."""
    monkeypatch.setattr(speaker_module, "IDLE_WAIT_TICKS", 1000)  # 20 s: only a wake() can end the wait
    shared = Speaker(name="test-speaker")
    calls: list[float] = []
    awake = threading.Event()

    def step() -> bool:
        calls.append(time.perf_counter())
        return awake.is_set()

    shared.add(step)
    try:
        time.sleep(0.3)  # 15 ticks of a thread that never sleeps
        assert len(calls) <= 2
        awake.set()
        shared.wake()
        deadline = time.perf_counter() + 2
        while len(calls) < 10 and time.perf_counter() < deadline:
            time.sleep(0.01)
        assert len(calls) >= 10  # awake again: every tick
    finally:
        shared.discard(step)


def test_asleep_calls_still_count_their_ticks_and_send_keepalives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speaker_module, "IDLE_WAIT_TICKS", 5)  # 100 ms waits
    shared = Speaker(name="test-speaker")
    pacing = SendPacing(keepalive_ticks=10)  # one every 200 ms
    sent: list[Send] = []

    def step() -> bool:
        sent.append(pacing.next(speech_queued=False, quiet=True))
        return pacing.awake

    shared.add(step)
    try:
        time.sleep(1.0)
    finally:
        shared.discard(step)
    assert 3 <= sent.count(Send.KEEPALIVE) <= 6  # ~5 in 50 ticks, though the thread woke ~10 times


def test_a_call_that_wakes_while_idle_ticks_are_counted_is_neither_late_nor_sent_twice_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After an idle wait the asleep calls count the ticks that passed; one that has speech by then sends at
    once, measured against now (the bench counts late frames by this deadline), and its next frame a tick on."""
    monkeypatch.setattr(speaker_module, "IDLE_WAIT_TICKS", 5)  # 100 ms waits, then 4 counted ticks
    shared = Speaker(name="test-speaker")
    sends: list[tuple[float, float]] = []  # (lateness against the tick's deadline, when)
    done = threading.Event()
    calls = itertools.count(1)

    def step() -> bool:
        if next(calls) < 3:  # asleep for the first tick and the first counted one: no wake() ever comes
            return False
        deadline = current_deadline()
        assert deadline is not None
        now = time.perf_counter()
        sends.append((now - deadline, now))
        if len(sends) >= 3:
            done.set()
        return True

    shared.add(step)
    try:
        assert done.wait(2)
    finally:
        shared.discard(step)
    assert sends[0][0] < 0.02  # not 100 ms late: the counted tick was due when it ran
    assert sends[1][1] - sends[0][1] >= 0.01  # the next frame a tick later, not back to back


# ----- calls on the process's speaker thread --------------------------------------------------------------------


class Call:
    """A CapVoiceClient with discord.py's real packet path (RTP, transport encryption) up to the socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ssrc: int) -> None:
        self.vc = vc = CapVoiceClient(fake_discord_client(loop), fake_channel())
        state = vc._connection
        state._socket_reader.stop()
        state.mode, state.secret_key, state.ssrc = MODE, list(SECRET_KEY), ssrc
        self.datagrams: list[bytes] = []
        state.send_packet = lambda packet: self.datagrams.append(bytes(packet))  # type: ignore[method-assign]
        vc.is_connected = lambda: True  # type: ignore[method-assign]
        vc._set_speaking = lambda speaking: None  # type: ignore[method-assign]

    def start(self, playback: object) -> None:
        self.vc.start_conversation(lambda frame, speakers: None, playback)  # type: ignore[arg-type]

    def received(self) -> list[tuple[int, int, bytes]]:
        """(ssrc, sequence, Opus payload) of every packet sent, decrypted as a listener would."""
        decryptor = TransportDecryptor(MODE, SECRET_KEY)
        out = []
        for datagram in list(self.datagrams):
            header = parse_header(datagram)
            out.append((header.ssrc, header.sequence, decryptor.decrypt(datagram, header)))
        return out

    def audible(self) -> list[bytes]:
        return [payload for _, _, payload in self.received() if payload != OPUS_SILENCE]


def reply(seconds: float, f0: float) -> tuple[PlaybackBuffer, list[bytes]]:
    playback = PlaybackBuffer(frame_bytes=SPOKEN_PCM.frame_bytes)
    frames = spoken_frames_of(vowel_pcm(seconds, f0=f0))
    for frame in frames:
        playback.push("item_1", frame)
    return playback, frames


async def test_two_calls_on_one_thread_each_get_every_frame_of_their_reply_in_order() -> None:
    loop = asyncio.get_running_loop()
    calls = [Call(loop, 0x5001), Call(loop, 0x5002)]
    replies = [reply(1.0, 120.0), reply(0.6, 210.0)]
    try:
        for call, (playback, _) in zip(calls, replies, strict=True):
            call.start(playback)
        assert speaker().running and all(call.vc._on_speak in speaker() for call in calls)
        for call in calls:
            assert await asyncio.to_thread(wait_until, lambda call=call: call.vc.sleeping)
    finally:
        for call in calls:
            await call.vc.stop_conversation()
    assert not speaker().running  # the last call left
    for call, (_, frames), ssrc in zip(calls, replies, (0x5001, 0x5002), strict=True):
        packets = call.received()
        assert {packet_ssrc for packet_ssrc, _, _ in packets} == {ssrc}
        sequences = [sequence for _, sequence, _ in packets]
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))  # their own RTP sequence
        assert call.audible() == opus_encode_like_cap(frames)  # every frame, in order


@pytest.mark.parametrize("breakage", ["send raises", "DAVE encrypt panics"])
async def test_a_broken_call_does_not_stop_the_other_calls_audio(breakage: str) -> None:
    loop = asyncio.get_running_loop()
    broken, healthy = Call(loop, 0x6001), Call(loop, 0x6002)
    if breakage == "send raises":
        def send(packet: bytes) -> None:
            raise OSError("the socket went away")

        broken.vc._connection.send_packet = send  # type: ignore[method-assign]
    else:
        class PanickingEncryptor:
            ready = True

            def encrypt_opus(self, data: bytes) -> bytes:
                if data == OPUS_SILENCE:
                    return data
                raise_rust_panic()

        state = broken.vc._connection
        state.dave_protocol_version, state.dave_session = 1, PanickingEncryptor()
    (broken_playback, _), (playback, frames) = reply(0.6, 150.0), reply(0.6, 180.0)
    try:
        broken.start(broken_playback)
        healthy.start(playback)
        assert await asyncio.to_thread(wait_until, lambda: healthy.vc.sleeping and broken.vc.sleeping)
    finally:
        for call in (broken, healthy):
            await call.vc.stop_conversation()
    assert healthy.audible() == opus_encode_like_cap(frames)
    if breakage == "DAVE encrypt panics":  # silence went out in place of every frame
        assert broken.audible() == [] and broken.vc.stats()["dave_encrypt_failed"] == len(frames)

