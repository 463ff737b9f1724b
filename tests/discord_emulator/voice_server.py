"""The voice server: Voice WebSocket v8 (aiohttp, behind the emulator's TLS) plus its UDP media relay.

One `VoiceSession` is Cap's session on the server (SSRC, secret key, UDP address); it outlives its WebSocket
when Cap RESUMEs and ends when Cap IDENTIFYs again. Callers are `Caller`s whose Opus goes to Cap's address
from the server's one UDP port, encrypted with the session's key exactly as Discord's relay does.

Discord behaviours assumed here (each also named where it is used):
- HELLO (op 8) is the first message of every connection; the client's heartbeat is answered by op 6 with `t`.
- Every server message carries `seq`, one counter per voice session for JSON and binary messages alike; a
  RESUMEd session keeps counting.
- READY (op 2) offers several modes; the client picks one in SELECT_PROTOCOL; SESSION_DESCRIPTION (op 4)
  gives the mode, a 32-byte key and `dave_protocol_version`.
- After SESSION_DESCRIPTION the server lists the users already in the channel with CLIENTS_CONNECT (op 11,
  `user_ids` only); op 12 is never sent; op 5 SPEAKING is forwarded only when a caller's client sends it.
- A RESUME (op 7) with the session's token and session id answers RESUMED (op 9) and nothing else: no new
  READY, no new key, the same SSRC and UDP route. An unknown or invalidated session is closed with 4006.
- IP discovery: 74-byte request (type 1, length 70, SSRC); the answer is type 2, length 70, the SSRC, the
  address as NUL-terminated ASCII from byte 8 and the port big-endian in the last two bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from bot.voice.crypto import TransportDecryptor
from bot.voice.rtp import RtpHeader, parse_header
from tests.bot.voice.voice_packets import PacketSender

if TYPE_CHECKING:
    from tests.discord_emulator.emulator import DiscordEmulator

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 13_750  # what Discord's voice servers announce; discord.py uses min(it, 5 s)
MODES = ("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize")  # Discord's current offer
DISCOVERY_LENGTH = 74
CLOSE_TIMEOUT_SECONDS = 2.0  # discord.py does not always answer a server's close frame (autoclose=False)

OP_IDENTIFY, OP_SELECT_PROTOCOL, OP_READY, OP_HEARTBEAT, OP_SESSION_DESCRIPTION, OP_SPEAKING = 0, 1, 2, 3, 4, 5
OP_HEARTBEAT_ACK, OP_RESUME, OP_HELLO, OP_RESUMED, OP_CLIENTS_CONNECT, OP_CLIENT_DISCONNECT = 6, 7, 8, 9, 11, 13

CLOSE_SESSION_INVALID = 4006
CLOSE_DISCONNECTED = 4014
CLOSE_SERVER_CRASHED = 4015


@dataclass
class CapPacket:
    """One of Cap's RTP packets as the relay received and decrypted it."""

    ssrc: int
    sequence: int
    timestamp: int
    nonce: int
    payload: bytes
    received_at: float


@dataclass
class VoiceSession:
    """Cap's session on this voice server."""

    session_id: str
    token: str
    user_id: int
    channel_id: int
    ssrc: int
    dave_protocol_version: int
    secret_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    mode: str | None = None
    address: tuple[str, int] | None = None
    seq: int = 0
    ws: web.WebSocketResponse | None = None
    valid: bool = True
    resumes: int = 0
    heartbeats: list[tuple[int | None, int]] = field(default_factory=list)  # (client's seq_ack, server's seq)
    client_messages: list[dict[str, Any]] = field(default_factory=list)
    client_binary: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def media_ready(self) -> bool:
        return self.valid and self.mode is not None and self.address is not None


class Caller:
    """A caller's microphone stream: its SSRC and RTP counters, kept across Cap's reconnects."""

    def __init__(self, user_id: int, ssrc: int) -> None:
        self.user_id = user_id
        self.ssrc = ssrc
        self.rtp = PacketSender(ssrc)
        self.packets_sent = 0
        # A hook for end-to-end encryption (DAVE): frame in, frame out. Plain Opus by default.
        self.encrypt_frame: Callable[[bytes], bytes] = lambda frame: frame


BinaryHandler = Callable[[VoiceSession, int, bytes], Awaitable[None]]
JsonHandler = Callable[[VoiceSession, int, dict[str, Any]], Awaitable[None]]


class VoiceServer(asyncio.DatagramProtocol):
    """Voice WebSocket sessions and the UDP relay of one emulated voice server."""

    def __init__(self, emulator: DiscordEmulator) -> None:
        self.emulator = emulator
        self.sessions: list[VoiceSession] = []
        self.current: VoiceSession | None = None
        self.cap_packets: list[CapPacket] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.udp_port = 0
        self.heartbeat_interval_ms = HEARTBEAT_INTERVAL_MS
        self.refuse_connections = 0  # answer the next N voice WebSocket handshakes with 503 (a voice server blip)
        self._ssrcs = itertools.count(0x5000)
        self._closing: set[asyncio.Task[None]] = set()
        # DAVE (ops 21-31) is relayed by an MLS module when one is plugged in (tests/discord_emulator/mls.py).
        self.on_dave_json: JsonHandler | None = None
        self.on_dave_binary: BinaryHandler | None = None
        self.on_session_described: Callable[[VoiceSession], Awaitable[None]] | None = None

    # ---- UDP ---------------------------------------------------------------------------------------------

    async def start_udp(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.udp_port = transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) == DISCOVERY_LENGTH and data[:4] == struct.pack(">HH", 1, 70):
            self._answer_discovery(data, addr)
            return
        header = parse_header(data)
        if not isinstance(header, RtpHeader):
            return
        session = next((s for s in self.sessions if s.ssrc == header.ssrc and s.mode), None)
        if session is None:
            return
        payload = TransportDecryptor(session.mode, session.secret_key).decrypt(data, header)
        if isinstance(payload, bytes):
            nonce = struct.unpack(">I", data[-4:])[0]
            self.cap_packets.append(CapPacket(header.ssrc, header.sequence, header.timestamp, nonce, payload,
                                              time.monotonic()))

    def _answer_discovery(self, data: bytes, addr: tuple[str, int]) -> None:
        (ssrc,) = struct.unpack_from(">I", data, 4)
        session = next((s for s in reversed(self.sessions) if s.ssrc == ssrc), None)
        if session is None or self.transport is None:
            return
        session.address = addr  # Discord relays to the address the discovery came from
        answer = bytearray(DISCOVERY_LENGTH)
        struct.pack_into(">HHI", answer, 0, 2, 70, ssrc)
        ip = addr[0].encode("ascii")
        answer[8 : 8 + len(ip)] = ip
        struct.pack_into(">H", answer, DISCOVERY_LENGTH - 2, addr[1])
        self.transport.sendto(bytes(answer), addr)

    def send_audio(self, caller: Caller, opus: bytes, *, padding: int = 0) -> bool:
        """One 20 ms frame of `caller` to Cap, if Cap has a session with media; False when nothing was sent."""
        session = self.current
        if session is None or not session.media_ready or self.transport is None:
            caller.rtp.packet(b"\xf8\xff\xfe")  # the caller's clock runs on while nobody hears it
            return False
        caller.rtp._sender.secret_key = list(session.secret_key)
        packet = caller.rtp.packet(caller.encrypt_frame(opus), padding=padding)
        self.transport.sendto(packet, session.address)
        caller.packets_sent += 1
        return True

    # ---- the WebSocket -------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_connections > 0:
            self.refuse_connections -= 1
            return web.Response(status=503, text="voice server unavailable")
        ws = web.WebSocketResponse(compress=True, max_msg_size=0, timeout=CLOSE_TIMEOUT_SECONDS, autoping=True)
        await ws.prepare(request)
        if request.query.get("v") != "8":
            await ws.close(code=4012, message=b"unknown protocol version")
            return ws
        session: VoiceSession | None = None
        hello = {"op": OP_HELLO, "d": {"v": 8, "heartbeat_interval": self.heartbeat_interval_ms}}
        await ws.send_str(json.dumps(hello))  # before any session exists: no seq yet
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                payload = json.loads(message.data)
                session = await self._on_json(ws, session, payload)
            elif message.type is WSMsgType.BINARY and session is not None:
                data = bytes(message.data)
                session.client_binary.append((data[0], data[1:]))
                if self.on_dave_binary is not None:
                    await self.on_dave_binary(session, data[0], data[1:])
        if session is not None and session.ws is ws:
            session.ws = None
        return ws

    async def _on_json(
        self, ws: web.WebSocketResponse, session: VoiceSession | None, payload: dict[str, Any]
    ) -> VoiceSession | None:
        op, data = payload.get("op"), payload.get("d") or {}
        if session is not None:
            session.client_messages.append(payload)
        if op == OP_IDENTIFY:
            return await self._identify(ws, data)
        if op == OP_RESUME:
            return await self._resume(ws, data)
        if session is None:
            await self._close(ws, 4003, "not authenticated")
            return None
        if op == OP_HEARTBEAT:
            session.heartbeats.append((data.get("seq_ack"), session.seq))
            await self.send(session, OP_HEARTBEAT_ACK, {"t": data.get("t")})
        elif op == OP_SELECT_PROTOCOL:
            await self._select_protocol(session, data)
        elif op == OP_SPEAKING:
            pass  # recorded above; Discord would forward it to the other clients
        elif self.on_dave_json is not None:
            await self.on_dave_json(session, op, data)
        return session

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> VoiceSession | None:
        grant = self.emulator.voice_grant(str(data.get("token")), str(data.get("session_id")))
        if grant is None:
            await self._close(ws, 4004, "authentication failed")
            return None
        if self.current is not None:
            self.current.valid = False  # a new IDENTIFY replaces the user's previous session
        version = min(int(data.get("max_dave_protocol_version") or 0), self.emulator.dave_protocol_version)
        session = VoiceSession(session_id=str(data["session_id"]), token=str(data["token"]),
                               user_id=int(data["user_id"]), channel_id=grant, ssrc=next(self._ssrcs),
                               dave_protocol_version=version, ws=ws)
        self.sessions.append(session)
        self.current = session
        await self.send(session, OP_READY, {"ssrc": session.ssrc, "ip": "127.0.0.1", "port": self.udp_port,
                                            "modes": list(MODES), "heartbeat_interval": HEARTBEAT_INTERVAL_MS})
        return session

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> VoiceSession | None:
        session = self.current
        if (session is None or not session.valid or session.token != data.get("token")
                or session.session_id != data.get("session_id")):
            await self._close(ws, CLOSE_SESSION_INVALID, "session no longer valid")
            return None
        old, session.ws = session.ws, ws
        session.resumes += 1
        if old is not None and old is not ws:
            self._close_soon(old, 1000)
        # Assumption: RESUMED and nothing else; the key, SSRC and UDP route stay as they were.
        await self.send(session, OP_RESUMED, None)
        return session

    async def _select_protocol(self, session: VoiceSession, data: dict[str, Any]) -> None:
        mode = (data.get("data") or {}).get("mode")
        if mode not in MODES:
            await self._close(session.ws, 4016, "unknown encryption mode")
            return
        session.mode = mode
        await self.send(session, OP_SESSION_DESCRIPTION, {
            "mode": mode, "secret_key": list(session.secret_key), "audio_codec": "opus",
            "media_session_id": secrets.token_hex(16), "dave_protocol_version": session.dave_protocol_version,
        })
        others = [user_id for user_id in self.emulator.users_in(session.channel_id) if user_id != session.user_id]
        if others:
            await self.send(session, OP_CLIENTS_CONNECT, {"user_ids": [str(user_id) for user_id in others]})
        if self.on_session_described is not None:
            await self.on_session_described(session)

    # ---- sending and closing -------------------------------------------------------------------------------

    async def send(self, session: VoiceSession, op: int, data: Any) -> None:
        ws = session.ws
        if ws is None or ws.closed:
            return
        session.seq += 1
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(json.dumps({"op": op, "d": data, "seq": session.seq}))

    async def send_binary(self, session: VoiceSession, op: int, payload: bytes) -> None:
        """A server->client binary frame: u16 seq | u8 op | payload."""
        ws = session.ws
        if ws is None or ws.closed:
            return
        session.seq += 1
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_bytes(struct.pack(">HB", session.seq & 0xFFFF, op) + payload)

    async def broadcast(self, channel_id: int, op: int, data: Any) -> None:
        """A message to Cap's session if it is in `channel_id` (Cap is the only client with a WebSocket here)."""
        session = self.current
        if session is not None and session.valid and session.channel_id == channel_id:
            await self.send(session, op, data)

    def close_session(self, session: VoiceSession | None, code: int, *, invalidate: bool) -> None:
        """Close that session's voice WebSocket with `code`; `invalidate` makes a RESUME of it fail."""
        if session is None:
            return
        if invalidate:
            session.valid = False
        if session.ws is not None:
            self._close_soon(session.ws, code)

    def _close_soon(self, ws: web.WebSocketResponse, code: int) -> None:
        task = asyncio.get_running_loop().create_task(self._close(ws, code, ""))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(ws: web.WebSocketResponse | None, code: int, reason: str) -> None:
        if ws is not None and not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
                await ws.close(code=code, message=reason.encode())

    async def aclose(self) -> None:
        for session in self.sessions:
            if session.ws is not None:
                self._close_soon(session.ws, 1001)
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=CLOSE_TIMEOUT_SECONDS + 1)
        if self.transport is not None:
            self.transport.close()
