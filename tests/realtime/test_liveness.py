"""The liveness watchdog's verdicts with a fake clock: no sockets, no sleeps."""

from __future__ import annotations

from realtime.liveness import LivenessWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watch(clock: Clock) -> LivenessWatch:
    return LivenessWatch(clock, send_stall_seconds=3.0, reply_silence_seconds=4.0)


def test_a_quiet_socket_is_alive_when_nothing_is_owed() -> None:
    clock = Clock()
    w = watch(clock)
    clock.now += 600  # an idle call: the keepalive ping watches it, not this
    assert w.dead_reason() is None


def test_a_send_stuck_for_too_long_means_dead() -> None:
    clock = Clock()
    w = watch(clock)
    w.on_send_started()
    clock.now += 2.9
    assert w.dead_reason() is None
    clock.now += 0.2
    assert w.dead_reason() == "a send has been stuck for 3.1 s"
    w.on_send_finished()
    assert w.dead_reason() is None


def test_an_owed_reply_and_a_silent_server_means_dead() -> None:
    clock = Clock()
    w = watch(clock)
    clock.now += 60  # a long quiet spell before the reply was owed does not count
    w.note_reply_owed(True)
    clock.now += 3.0
    w.on_server_event()
    clock.now += 3.9
    assert w.dead_reason() is None
    clock.now += 0.2
    assert w.dead_reason() == "no server event for 4.1 s while a reply was due"
    w.note_reply_owed(False)
    assert w.dead_reason() is None


def test_a_new_socket_starts_with_a_clean_slate() -> None:
    clock = Clock()
    w = watch(clock)
    w.on_send_started()
    w.note_reply_owed(True)
    clock.now += 10
    w.on_connected()
    assert w.dead_reason() is None




async def test_websockets_close_waits_for_a_peer_that_reads_nothing() -> None:
    """The library behaviour the engine works around by aborting a dead socket (websockets 17): close() sends a
    close frame and waits up to close_timeout for the peer's answer, which a half-dead peer never sends. If an
    upgrade makes close() return at once, this fails and abort() may no longer be needed."""
    import asyncio

    from websockets.asyncio.client import connect

    from tests.realtime_fake import FakeRealtimeServer

    async with FakeRealtimeServer() as server:
        ws = await connect(f"{server.url}?model=gpt-realtime-2.1", max_size=None, close_timeout=5,
                           additional_headers={"Authorization": "Bearer sk-test"})
        await ws.recv()  # session.created
        server.go_silent()
        closing = asyncio.ensure_future(ws.close())
        await asyncio.sleep(0.5)
        assert not closing.done(), "close() returned without the peer's close frame"
        ws.transport.abort()
        await closing

