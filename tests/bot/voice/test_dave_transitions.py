"""DAVE protocol transitions through discord.py's own voice-WebSocket handling, against a real MLS group.

Cap's side runs discord.py 2.7.1's `DiscordVoiceWebSocket.received_message` / `received_binary_message` and
`VoiceConnectionState` on a real davey session; the group is run by the emulator's DAVE server with a real
caller session. Only the socket is missing: what discord.py sends is captured and handed to the server.
"""

from __future__ import annotations

import asyncio
import struct
import time
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock

import davey
import pytest

import bot.voice.dave
from bot.voice.client import CapVoiceClient
from bot.voice.dave import DaveDecryptor, DaveFailure
from tests.bot.voice.test_client import fake_channel, fake_discord_client, voice_ws
from tests.discord_emulator.dave_caller import ClientMessage, DaveCaller, deliver, join
from tests.discord_emulator.dave_group import BinaryFrame, DaveGroupServer, Outgoing

CAP, ALICE = 900, 111
OPUS = b"\xfc\xff\xfe" + bytes(range(40))


class CapOverDiscordPy:
    """Cap's voice connection with discord.py's real DAVE handling; messages it sends are collected."""

    def __init__(self, vc: CapVoiceClient) -> None:
        self.vc = vc
        self.state = vc._connection
        self.ws = voice_ws(vc)
        self.state.ws = self.ws
        self.sent: list[ClientMessage] = []
        self.ws.send_binary = AsyncMock(side_effect=self._binary)
        self.ws.send_as_json = AsyncMock(side_effect=self._json)
        self.seq = 0

    async def _binary(self, op: int, payload: bytes) -> None:
        self.sent.append(ClientMessage(CAP, op, bytes(payload)))

    async def _json(self, message: dict[str, Any]) -> None:
        self.sent.append(ClientMessage(CAP, message["op"], data=message["d"]))

    async def receive(self, message: Outgoing) -> None:
        self.seq += 1
        if isinstance(message, BinaryFrame):
            await self.ws.received_binary_message(struct.pack(">HB", self.seq, message.op) + message.payload)
        else:
            await self.ws.received_message({"op": message.op, "d": message.data, "seq": self.seq})


async def pump(server: DaveGroupServer, cap: CapOverDiscordPy, callers: dict[int, DaveCaller], out: list) -> None:
    """Move messages between the server, Cap (discord.py) and in-process callers until all are quiet."""
    queue = list(out)
    while queue or cap.sent:
        while cap.sent:
            queue += deliver(cap.sent.pop(0), server)
        if not queue:
            break
        message = queue.pop(0)
        if message.user_id == CAP:
            await cap.receive(message)
        elif message.user_id in callers:
            for reply in callers[message.user_id].receive(message):
                queue += deliver(reply, server)


async def cap_and_alice_in_a_dave_call() -> tuple[DaveGroupServer, CapOverDiscordPy, dict[int, DaveCaller]]:
    client = fake_discord_client(asyncio.get_running_loop())
    client._connection.user = SimpleNamespace(id=CAP)  # discord.py reads the bot's id from the client state
    vc = CapVoiceClient(client, fake_channel())
    vc._connection._socket_reader.stop()
    cap = CapOverDiscordPy(vc)
    server = DaveGroupServer(vc.channel.id)
    callers: dict[int, DaveCaller] = {}
    join(server, callers, DaveCaller(ALICE, vc.channel.id))
    cap.state.dave_protocol_version = 1
    await cap.state.reinit_dave_session()  # what discord.py does on op 4 with dave_protocol_version 1
    await pump(server, cap, callers, server.session_started(CAP))
    assert cap.state.dave_session.ready and cap.state.can_encrypt
    return server, cap, callers


async def test_dave_frames_flow_both_ways_through_discord_pys_handling() -> None:
    server, cap, callers = await cap_and_alice_in_a_dave_call()
    session = cap.state.dave_session
    assert session.decrypt(ALICE, davey.MediaType.audio, callers[ALICE].encrypt(OPUS)) == OPUS
    assert callers[ALICE].decrypt(CAP, session.encrypt_opus(OPUS)) == OPUS
    assert session.epoch == server.epoch and session.own_leaf_index == server.leaf_of(CAP)
    cap.state._socket_reader.stop()


async def test_after_a_downgrade_and_an_upgrade_member_plain_audio_is_refused_again(monkeypatch) -> None:
    """Issue 9 item 4: discord.py's upgrade left davey's passthrough on for good."""
    monkeypatch.setattr(bot.voice.dave, "PASSTHROUGH_AFTER_TRANSITION_SECONDS", 1)  # davey counts whole seconds
    server, cap, callers = await cap_and_alice_in_a_dave_call()
    hearing: DaveDecryptor = cap.vc.receiver._dave  # Cap's receive-side DAVE step
    assert hearing.decrypt(ALICE, OPUS) is DaveFailure.PLAINTEXT  # a member speaking unencrypted: refused

    await pump(server, cap, callers, server.downgrade())
    assert cap.state.dave_protocol_version == 0 and cap.state.dave_downgraded
    assert hearing.decrypt(ALICE, OPUS) == OPUS  # the call is plain now

    await pump(server, cap, callers, server.upgrade([ALICE, CAP]))
    assert cap.state.dave_protocol_version == 1 and not cap.state.dave_downgraded
    assert cap.state.dave_session.ready and cap.state.dave_session.epoch == server.epoch
    assert hearing.decrypt(ALICE, OPUS) == OPUS  # within the window: callers may still be switching over
    assert hearing.decrypt(ALICE, callers[ALICE].encrypt(OPUS)) == OPUS

    await asyncio.sleep(1.05)
    assert hearing.decrypt(ALICE, OPUS) is DaveFailure.PLAINTEXT
    assert hearing.decrypt(ALICE, callers[ALICE].encrypt(OPUS)) == OPUS
    cap.state._socket_reader.stop()


# ---- the library behaviours the fix works around: these fail if an upgrade changes them -----------------------


class RecordingSession:
    ready = True

    def __init__(self) -> None:
        self.calls: list[tuple[bool, int | None]] = []

    def set_passthrough_mode(self, passthrough_mode: bool, transition_expiry: int | None = None) -> None:
        self.calls.append((passthrough_mode, transition_expiry))


async def test_discord_py_turns_passthrough_on_when_it_executes_an_upgrade() -> None:
    vc = CapVoiceClient(fake_discord_client(asyncio.get_running_loop()), fake_channel())
    state = vc._connection
    state._socket_reader.stop()
    state.dave_session = RecordingSession()
    state.dave_downgraded = True
    state.dave_pending_transitions = {5: 1}

    await state._execute_transition(5)

    assert state.dave_session.calls == [(True, 10)]


def test_davey_passthrough_on_ignores_its_expiry_and_off_bounds_it() -> None:
    server = DaveGroupServer(77)
    callers: dict[int, DaveCaller] = {}
    for user in (ALICE, CAP):
        join(server, callers, DaveCaller(user, 77))
    session = callers[CAP].session
    session.set_passthrough_mode(True, 1)
    time.sleep(1.05)
    assert session.can_passthrough(ALICE)  # unlimited: the 1 s was ignored
    session.set_passthrough_mode(False, 1)
    assert session.can_passthrough(ALICE)
    time.sleep(1.05)
    assert not session.can_passthrough(ALICE)
    with pytest.raises(ValueError, match="UnencryptedWhenPassthroughDisabled"):
        session.decrypt(ALICE, davey.MediaType.audio, OPUS)
