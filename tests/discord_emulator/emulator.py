"""DiscordEmulator: the parts of Discord a voice bot talks to, on 127.0.0.1, for discord.py to connect to.

- Gateway (voice side only): the client's `_get_websocket()` returns `FakeGateway`, whose `voice_state()`
  (gateway op 4) is answered with VOICE_STATE_UPDATE / VOICE_SERVER_UPDATE fed through discord.py's own
  `ConnectionState.parse_voice_state_update` / `parse_voice_server_update`, in order, one round trip later.
- The guild is built from GUILD_CREATE-shaped JSON by discord.py (`_add_guild_from_data`): real `Guild`,
  `guild.me`, channels, members and their voice states.
- REST: `POST /channels/{id}/messages` (what `channel.send` calls) on the same TLS server, recorded.
- The voice server (voice_server.py): Voice WebSocket v8 and the UDP relay.

Discord behaviours assumed here (the voice server's are listed in voice_server.py):
- Gateway events reach the client after the op 4 that caused them has been sent (a round trip), in order.
- Op 4 to the channel the user is already in changes nothing on Discord's side: only VOICE_STATE_UPDATE
  comes back (no VOICE_SERVER_UPDATE), so no new voice session is offered.
- Op 4 to another channel (or from none) answers VOICE_STATE_UPDATE then VOICE_SERVER_UPDATE with a fresh
  token and the endpoint `host:port` without a scheme; a moved user's open voice WebSocket is then closed with
  4014 (discord.py's documented meaning: "disconnected: moved, kicked, channel deleted").
- Op 4 with no channel answers VOICE_STATE_UPDATE with `channel_id` null and ends the voice session; the
  client closes its own voice WebSocket.
- A kick: VOICE_STATE_UPDATE with `channel_id` null, then the voice WebSocket is closed with 4014.
- A voice-server change for the same channel: VOICE_SERVER_UPDATE alone, with a new token.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
from aiohttp import web
from discord.gateway import DiscordClientWebSocketResponse

from tests.discord_emulator import payloads
from tests.discord_emulator.payloads import CHANNEL_TYPE_TEXT, CHANNEL_TYPE_VOICE, EmulatedUser
from tests.discord_emulator.tls import HOST, make_tls
from tests.discord_emulator.voice_server import (
    CLOSE_DISCONNECTED,
    OP_CLIENT_DISCONNECT,
    OP_CLIENTS_CONNECT,
    OP_SPEAKING,
    Caller,
    VoiceServer,
)

GATEWAY_LATENCY_SECONDS = 0.005
TICK_SECONDS = 0.02
GUILD_ID = 700_000_000_000_000_001
BOT_ID = 700_000_000_000_000_002
LOBBY_ID, STAGE_ID, TEXT_ID = 700_000_000_000_000_010, 700_000_000_000_000_011, 700_000_000_000_000_012
STAFF_ROLE_ID = 700_000_000_000_000_020
MANAGE = discord.Permissions(manage_channels=True, move_members=True)


@dataclass
class PostedMessage:
    channel_id: int
    content: str
    filenames: list[str]


class FakeGateway:
    """The voice-state half of the main gateway WebSocket (what `Guild.change_voice_state` calls)."""

    def __init__(self, emulator: DiscordEmulator) -> None:
        self.emulator = emulator
        self.requests: list[int | None] = []

    async def voice_state(
        self, guild_id: int, channel_id: int | None, self_mute: bool = False, self_deaf: bool = False
    ) -> None:
        self.requests.append(channel_id)
        self.emulator.gateway_voice_state(int(channel_id) if channel_id is not None else None)


class DiscordEmulator:
    """One guild with two voice channels and a text channel, its members, a voice server and the REST API."""

    def __init__(self, *, dave_protocol_version: int = 0) -> None:
        self.dave_protocol_version = dave_protocol_version
        self.tls = make_tls()
        self.bot = EmulatedUser(BOT_ID, "Cap", bot=True)
        self.users: dict[int, EmulatedUser] = {BOT_ID: self.bot}
        self.channels = {LOBBY_ID: ("Lobby", CHANNEL_TYPE_VOICE), STAGE_ID: ("Stage", CHANNEL_TYPE_VOICE),
                         TEXT_ID: ("general", CHANNEL_TYPE_TEXT)}
        self.voice: dict[int, int] = {}  # user id -> voice channel id (the gateway's view)
        self.messages: list[PostedMessage] = []
        self.voice_server = VoiceServer(self)
        self.gateway = FakeGateway(self)
        self.gateway_session_id = secrets.token_hex(16)
        self.port = 0
        self.gateway_latency = GATEWAY_LATENCY_SECONDS  # a test may slow the gateway to widen a race
        self._grants: dict[str, int] = {}  # voice token -> channel id it admits to
        self._ids = itertools.count(800_000_000_000_000_000)
        self._ssrcs = itertools.count(0x1000, 0x111)
        self._events: asyncio.Queue[Callable[[], Any]] = asyncio.Queue()
        self._runner: web.AppRunner | None = None
        self._pump: asyncio.Task[None] | None = None
        self._client: discord.Client | None = None
        self._route_base: str | None = None
        self.callers: dict[int, Caller] = {}

    # ---- set-up --------------------------------------------------------------------------------------------

    def add_member(self, user_id: int, name: str, *, staff: bool = False, in_channel: int | None = None) -> None:
        """A guild member (before attach); `in_channel` puts them in a voice channel already."""
        self.users[user_id] = EmulatedUser(user_id, name, roles=(STAFF_ROLE_ID,) if staff else ())
        if in_channel is not None:
            self.voice[user_id] = in_channel

    async def __aenter__(self) -> DiscordEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self.voice_server.handle)
        app.router.add_post("/api/v10/channels/{channel_id}/messages", self._post_message)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0, ssl_context=self.tls.server)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await self.voice_server.start_udp()
        self._pump = asyncio.create_task(self._pump_gateway(), name="emulated-gateway")

    async def attach(self, client: discord.Client) -> discord.Guild:
        """Make `client` logged in to this Discord: its user, its guild (from GUILD_CREATE JSON), HTTP over the
        test TLS, and the gateway's voice side. Returns the guild."""
        self._client = client
        await client._async_setup_hook()  # what login() does first: the loop for asyncio objects
        state = client._connection
        state.user = discord.ClientUser(state=state, data=self.bot.user())
        http = client.http
        http.connector = aiohttp.TCPConnector(ssl=self.tls.client)
        http._HTTPClient__session = aiohttp.ClientSession(  # type: ignore[attr-defined]
            connector=http.connector, ws_response_class=DiscordClientWebSocketResponse,
            cookie_jar=aiohttp.DummyCookieJar())
        http._global_over = asyncio.Event()
        http._global_over.set()
        http.token = "emulated-token"
        # discord.py builds every REST URL from this class attribute.
        self._route_base = discord.http.Route.BASE
        discord.http.Route.BASE = f"https://{HOST}:{self.port}/api/v10"
        state._get_websocket = lambda guild_id=None, *, shard_id=None: self.gateway  # type: ignore[method-assign]
        return state._add_guild_from_data(self._guild_payload())

    def _guild_payload(self) -> dict[str, Any]:
        everyone = discord.Permissions(view_channel=True, connect=True, speak=True, send_messages=True,
                                       attach_files=True, use_application_commands=True)
        return {
            "id": str(GUILD_ID), "name": "Emulated guild", "owner_id": str(next(iter(self.users))), "icon": None,
            "roles": [payloads.role(GUILD_ID, "@everyone", everyone),
                      payloads.role(STAFF_ROLE_ID, "Staff", MANAGE | everyone, position=1)],
            "channels": [payloads.channel(GUILD_ID, cid, name, kind, n)
                         for n, (cid, (name, kind)) in enumerate(self.channels.items())],
            "members": [user.member() for user in self.users.values()],
            "voice_states": [payloads.voice_state(GUILD_ID, self.users[uid], cid, self.gateway_session_id)
                             for uid, cid in self.voice.items()],
            "member_count": len(self.users), "features": [], "emojis": [], "stickers": [], "large": False,
            "premium_tier": 0, "verification_level": 0, "explicit_content_filter": 0, "mfa_level": 0,
            "default_message_notifications": 0, "afk_timeout": 300, "preferred_locale": "en-US",
        }

    async def aclose(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        await self.voice_server.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._route_base is not None:
            discord.http.Route.BASE = self._route_base

    # ---- gateway -------------------------------------------------------------------------------------------

    async def _pump_gateway(self) -> None:
        """Deliver gateway events one at a time, a round trip after they were caused."""
        while True:
            event = await self._events.get()
            await asyncio.sleep(self.gateway_latency)
            result = event()
            if asyncio.iscoroutine(result):
                await result

    def _state(self) -> Any:
        assert self._client is not None, "attach() a client first"
        return self._client._connection

    def _voice_state_event(self, user_id: int, channel_id: int | None) -> None:
        data = payloads.voice_state(GUILD_ID, self.users[user_id], channel_id, self.gateway_session_id)
        self._events.put_nowait(lambda: self._state().parse_voice_state_update(data))

    def _voice_server_event(self) -> None:
        token = secrets.token_hex(8)
        self._grants[token] = self.voice[BOT_ID]
        data = {"token": token, "guild_id": str(GUILD_ID), "endpoint": f"{HOST}:{self.port}"}
        self._events.put_nowait(lambda: self._state().parse_voice_server_update(data))

    def voice_grant(self, token: str, session_id: str) -> int | None:
        """The channel a voice IDENTIFY may join: the token's, if it is the newest issued and the session id is
        the gateway's."""
        if session_id != self.gateway_session_id or token not in self._grants:
            return None
        newest = next(reversed(self._grants))
        return self._grants[token] if token == newest and self.voice.get(BOT_ID) == self._grants[token] else None

    def gateway_voice_state(self, channel_id: int | None) -> None:
        """Cap's gateway op 4."""
        previous = self.voice.get(BOT_ID)
        if channel_id is None:
            self.voice.pop(BOT_ID, None)
            if self.voice_server.current is not None:
                self.voice_server.current.valid = False
            self._voice_state_event(BOT_ID, None)
            return
        self.voice[BOT_ID] = channel_id
        self._voice_state_event(BOT_ID, channel_id)
        if previous != channel_id:  # assumption: the same channel again offers no new voice server
            self._voice_server_event()
            if previous is not None:
                self._close_voice_later(CLOSE_DISCONNECTED)

    def _close_voice_later(self, code: int) -> None:
        """Close the session open now (not whatever session Cap has opened by the time the event is delivered)."""
        session = self.voice_server.current
        self._events.put_nowait(lambda: self.voice_server.close_session(session, code, invalidate=True))

    # ---- what the test (Discord's users and staff) does -------------------------------------------------------

    def move_cap(self, channel_id: int) -> None:
        """A moderator drags Cap to another voice channel."""
        self.voice[BOT_ID] = channel_id
        self._voice_state_event(BOT_ID, channel_id)
        self._voice_server_event()
        self._close_voice_later(CLOSE_DISCONNECTED)

    def kick_cap(self) -> None:
        """A moderator disconnects Cap from voice."""
        self.voice.pop(BOT_ID, None)
        self._voice_state_event(BOT_ID, None)
        self._close_voice_later(CLOSE_DISCONNECTED)

    def change_voice_server(self) -> None:
        """Discord moves the call to another voice server (same channel)."""
        self._voice_server_event()

    def close_voice(self, code: int, *, invalidate: bool | None = None) -> None:
        """Close Cap's voice WebSocket now; the session stays resumable only for 4015 unless told otherwise."""
        keep = code == 4015 if invalidate is None else not invalidate
        self.voice_server.close_session(self.voice_server.current, code, invalidate=not keep)

    async def join(self, user_id: int, channel_id: int) -> None:
        self.voice[user_id] = channel_id
        self._voice_state_event(user_id, channel_id)
        await self.voice_server.broadcast(channel_id, OP_CLIENTS_CONNECT, {"user_ids": [str(user_id)]})

    async def leave(self, user_id: int) -> None:
        channel_id = self.voice.pop(user_id, None)
        self._voice_state_event(user_id, None)
        self.callers.pop(user_id, None)
        if channel_id is not None:
            await self.voice_server.broadcast(channel_id, OP_CLIENT_DISCONNECT, {"user_id": str(user_id)})

    def users_in(self, channel_id: int) -> list[int]:
        return [user_id for user_id, cid in self.voice.items() if cid == channel_id]

    def caller(self, user_id: int) -> Caller:
        """The user's microphone stream (one SSRC for as long as they stay in the call)."""
        if user_id not in self.callers:
            self.callers[user_id] = Caller(user_id, next(self._ssrcs))
        return self.callers[user_id]

    async def announce_speaking(self, user_id: int) -> None:
        """The caller's client says it is speaking: op 5 with its SSRC, forwarded to Cap."""
        caller = self.caller(user_id)
        channel_id = self.voice.get(user_id)
        if channel_id is not None:
            await self.voice_server.broadcast(channel_id, OP_SPEAKING,
                                              {"user_id": str(user_id), "ssrc": caller.ssrc, "speaking": 1})

    async def say(self, user_id: int, opus_frames: list[bytes], *, announce: bool = True) -> int:
        """Send the frames on a 20 ms grid (padding every third packet, as Discord's relays do); returns how
        many reached a session with media."""
        caller = self.caller(user_id)
        if announce:
            await self.announce_speaking(user_id)
        loop = asyncio.get_running_loop()
        next_at, sent = loop.time(), 0
        for n, frame in enumerate(opus_frames):
            sent += self.voice_server.send_audio(caller, frame, padding=4 if n % 3 == 0 else 0)
            next_at += TICK_SECONDS
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        return sent

    # ---- REST ----------------------------------------------------------------------------------------------

    async def _post_message(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel_id"])
        filenames: list[str] = []
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            body = json.loads(str(form["payload_json"]))
            filenames = [field.filename for field in form.values() if isinstance(field, web.FileField)]
        else:
            body = await request.json()
        content = str(body.get("content") or "")
        self.messages.append(PostedMessage(channel_id, content, filenames))
        attachments = [{"id": str(next(self._ids)), "filename": name, "size": 1, "url": "https://x/a",
                        "proxy_url": "https://x/a"} for name in filenames]
        data = payloads.message(next(self._ids), channel_id, GUILD_ID, self.bot, content, attachments)
        # discord.py parses a body as JSON only when the content type is exactly "application/json".
        return web.Response(body=json.dumps(data).encode(), headers={"Content-Type": "application/json"})

    def texts(self, channel_id: int | None = None) -> list[str]:
        return [m.content for m in self.messages if channel_id is None or m.channel_id == channel_id]


async def wait_until(predicate: Callable[[], bool], within: float = 20.0, what: str = "condition") -> None:
    """Poll until `predicate()` holds; generous limits, because the machine may be busy (never a timing check)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, f"{what} not reached within {within} s"
        await asyncio.sleep(0.05)
