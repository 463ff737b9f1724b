"""Discord's voice relay, faked in a process of its own: callers' encrypted Opus in, Cap's packets out.

Each caller is a scripted RTP stream (fixture speech, Opus-encoded at 64 kbps and encrypted exactly as
Discord relays it: header extension, some padding) sent over UDP to one Cap voice socket on 127.0.0.1, on a
drift-free 20 ms grid. Cap's own packets come back to this socket; they are decrypted to tell Opus silence
from speech, so a script can react to Cap ("interrupt 300 ms into the reply") and a barge-in is timed where
the caller is: from the first packet of the interruption to the first silent packet Cap sends after it.
Timestamps are time.perf_counter() (CLOCK_MONOTONIC, shared by every process on the machine).

Protocol: JSON lines on stdin, one JSON line answered on stdout for each.
  {"cmd": "caller", "port": P, "ssrc": S, "script": [...], "repeat": false, "start_after": seconds}
  {"cmd": "report"}          -> {"callers": {"P": {...}}}
  {"cmd": "drop"}            -> forget every caller
  {"cmd": "dave_join", "port": P, "channel": C, "caller_user": U, "cap_user": V}
                             -> {"to_cap": [...]}: the caller forms a real DAVE (MLS) group with Cap, run by the
                                emulator's DAVE server (tests/discord_emulator); from then on its Opus is encrypted
  {"cmd": "dave_from_cap", "port": P, "messages": [...]}  -> {"to_cap": [...]}: Cap's DAVE messages in, the
                                server's answers to Cap out (messages: {"op", "payload" (base64), "data"})
Script steps: ["wait", seconds] | ["say", fixture, max_frames or null, mark or null] |
              ["await_audible", packets] (Cap sent that many non-silent packets since the step began) |
              ["await_quiet", seconds] (Cap has sent nothing audible for that long: a paused player sends
              nothing at all, so quiet is measured in time, not in silent packets).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the packet builders live in tests/

from bot.voice.crypto import TransportDecryptor  # noqa: E402
from bot.voice.rtp import RtpHeader, parse_header  # noqa: E402
from bot.voice.source import OPUS_SILENCE  # noqa: E402
from tests.bot.voice.voice_packets import (  # noqa: E402
    MODE,
    SECRET_KEY,
    PacketSender,
    fixture_pcm,
    frames_of,
    opus_encode,
)
from tests.discord_emulator.dave_caller import ClientMessage, DaveCaller, deliver, join  # noqa: E402
from tests.discord_emulator.dave_group import BinaryFrame, DaveGroupServer, Outgoing  # noqa: E402

TICK_SECONDS = 0.02
PADDING_EVERY = 3  # Discord's relays pad some packets; the receiver must strip it


@dataclass
class Mark:
    """One marked utterance: when its first packet left, and the first silent packet Cap sent after that."""

    name: str
    onset: float | None = None
    cap_audible_at_onset: bool = False
    silent_at: float | None = None


@dataclass
class Caller:
    port: int
    sender: PacketSender
    script: list[list[Any]]
    repeat: bool
    packets_sent: int = 0
    cap_audible: int = 0
    cap_silent: int = 0
    cap_silent_run: int = 0
    cap_audible_at: float = 0.0
    marks: list[Mark] = field(default_factory=list)
    pending_mark: Mark | None = None
    steps: Iterator[bytes | None] | None = None

    def report(self) -> dict[str, Any]:
        return {
            "packets_sent": self.packets_sent,
            "cap_audible": self.cap_audible,
            "cap_silent": self.cap_silent,
            "marks": [vars(mark) for mark in self.marks],
        }


class DaveCall:
    """One call's DAVE group: the emulator's voice-server side, the caller's davey session, Cap's messages."""

    def __init__(self, channel: int, caller_user: int, cap_user: int) -> None:
        self.group = DaveGroupServer(channel)
        self.caller = DaveCaller(caller_user, channel)
        self.cap_user = cap_user

    def start(self) -> list[dict[str, Any]]:
        join(self.group, {self.caller.user_id: self.caller}, self.caller)
        return self._pump(self.group.session_started(self.cap_user))

    def from_cap(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        outgoing: list[Outgoing] = []
        for message in messages:
            payload = base64.b64decode(message.get("payload") or "")
            outgoing += deliver(ClientMessage(self.cap_user, message["op"], payload, message.get("data") or {}),
                                self.group)
        return self._pump(outgoing)

    def _pump(self, outgoing: list[Outgoing]) -> list[dict[str, Any]]:
        """Run the caller's side to quiet; what is left is for Cap."""
        to_cap: list[dict[str, Any]] = []
        queue = list(outgoing)
        while queue:
            message = queue.pop(0)
            if message.user_id == self.cap_user:
                if isinstance(message, BinaryFrame):
                    to_cap.append({"op": message.op, "payload": base64.b64encode(message.payload).decode()})
                else:
                    to_cap.append({"op": message.op, "data": message.data})
            else:
                for reply in self.caller.receive(message):
                    queue += deliver(reply, self.group)
        return to_cap


class Relay(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.callers: dict[int, Caller] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self._decryptor = TransportDecryptor(MODE, SECRET_KEY)
        self._speech: dict[str, list[bytes]] = {}
        self.dave: dict[int, DaveCall] = {}  # by Cap's port: the call's DAVE group, when it has one

    # -- Cap's packets ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.perf_counter()
        caller = self.callers.get(addr[1])
        header = parse_header(data)
        if caller is None or not isinstance(header, RtpHeader):
            return
        payload = self._decryptor.decrypt(data, header)
        if payload == OPUS_SILENCE:
            caller.cap_silent += 1
            caller.cap_silent_run += 1
            for mark in caller.marks:
                if mark.onset is not None and mark.silent_at is None and mark.cap_audible_at_onset:
                    mark.silent_at = now
        elif isinstance(payload, bytes):
            caller.cap_audible += 1
            caller.cap_silent_run = 0
            caller.cap_audible_at = now

    # -- callers ------------------------------------------------------------------------------------------

    def packets(self, fixture: str) -> list[bytes]:
        if fixture not in self._speech:
            self._speech[fixture] = opus_encode(frames_of(fixture_pcm(fixture)))
        return self._speech[fixture]

    def add(self, port: int, ssrc: int, script: list[list[Any]], repeat: bool, start_after: float) -> None:
        caller = Caller(port, PacketSender(ssrc), script, repeat)
        caller.steps = self._run(caller, start_after)
        self.callers[port] = caller

    def _run(self, caller: Caller, start_after: float) -> Iterator[bytes | None]:
        """One item per 20 ms tick: an Opus payload to send, or None (the caller is silent)."""
        for _ in range(round(start_after / TICK_SECONDS)):
            yield None
        while True:
            for step in caller.script:
                kind = step[0]
                if kind == "wait":
                    for _ in range(round(step[1] / TICK_SECONDS)):
                        yield None
                elif kind == "say":
                    _, fixture, max_frames, mark = step
                    payloads = self.packets(fixture)[: max_frames or None]
                    if mark:
                        caller.pending_mark = Mark(mark)
                    yield from payloads
                elif kind == "await_audible":
                    start = caller.cap_audible
                    while caller.cap_audible - start < step[1]:
                        yield None
                elif kind == "await_quiet":
                    while time.perf_counter() - caller.cap_audible_at < step[1]:
                        yield None
                else:
                    raise ValueError(f"unknown script step {step!r}")
            if not caller.repeat:
                break
        while True:
            yield None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            for caller in list(self.callers.values()):
                payload = next(caller.steps)  # type: ignore[arg-type]
                if payload is None:
                    continue
                dave = self.dave.get(caller.port)
                if dave is not None:
                    payload = dave.caller.encrypt(payload)
                padding = 4 if caller.packets_sent % PADDING_EVERY == 0 else 0
                packet = caller.sender.packet(payload, padding=padding)
                assert self.transport is not None
                self.transport.sendto(packet, ("127.0.0.1", caller.port))
                caller.packets_sent += 1
                if caller.pending_mark is not None:
                    mark, caller.pending_mark = caller.pending_mark, None
                    mark.onset = time.perf_counter()
                    mark.cap_audible_at_onset = caller.cap_silent_run == 0 and caller.cap_audible > 0
                    caller.marks.append(mark)
            next_at += TICK_SECONDS
            delay = next_at - loop.time()
            if delay < -0.1:  # stalled: restart the grid rather than burst
                next_at = loop.time()
            await asyncio.sleep(max(0.0, delay))

    def command(self, message: dict[str, Any]) -> dict[str, Any]:
        cmd = message["cmd"]
        if cmd == "caller":
            self.add(message["port"], message["ssrc"], message["script"], message.get("repeat", False),
                     message.get("start_after", 0.0))
            return {"ok": True}
        if cmd == "report":
            return {"callers": {str(port): caller.report() for port, caller in self.callers.items()}}
        if cmd == "drop":
            self.callers.clear()
            self.dave.clear()
            return {"ok": True}
        if cmd == "dave_join":
            call = DaveCall(message["channel"], message["caller_user"], message["cap_user"])
            self.dave[message["port"]] = call
            return {"to_cap": call.start()}
        if cmd == "dave_from_cap":
            return {"to_cap": self.dave[message["port"]].from_cap(message["messages"])}
        raise ValueError(f"unknown command {cmd!r}")


async def serve() -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    transport, relay = await loop.create_datagram_endpoint(Relay, sock=sock)
    relay.packets("hello.wav")
    relay.packets("question.wav")
    ticker = asyncio.create_task(relay.run())
    print(f"port {sock.getsockname()[1]}", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            print(json.dumps(relay.command(json.loads(line))), flush=True)
    finally:
        ticker.cancel()
        transport.close()


def main() -> None:
    asyncio.run(serve())


if __name__ == "__main__":
    main()
