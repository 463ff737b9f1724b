"""DAVE for the emulated voice server: a real MLS group between Cap (over its voice WebSocket) and the callers.

Plug it into a `DiscordEmulator` before Cap joins (`DaveRelay(emulator).install()`). The group is run by
`DaveGroupServer` (the voice server as MLS external sender); callers are in-process `DaveCaller`s with real
davey sessions, whose Opus the relay DAVE-encrypts before the UDP relay sends it; Cap is discord.py itself,
reached through the emulator's `on_dave_*` hooks. Cap's packets can be opened with a caller's session.

Discord behaviours assumed here, beyond those named in dave_group.py:
- Op 25 follows op 4 SESSION_DESCRIPTION on every new voice session of a DAVE client (also after Cap's
  reconnects); a client that sends a key package while already in the group is re-added (Remove + Add).
- Callers already in the channel are in the group (or waiting to form it) before Cap arrives; a caller
  joining or leaving the channel joins or leaves the group at the same moment.
- A RESUMEd session keeps its DAVE state: nothing is re-sent.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .dave_caller import ClientMessage, DaveCaller, deliver
from .dave_group import BinaryFrame, DaveGroupServer, Outgoing

if TYPE_CHECKING:
    from .emulator import DiscordEmulator
    from .voice_server import VoiceSession

log = logging.getLogger(__name__)


class DaveRelay:
    """One voice channel's DAVE group inside the emulator."""

    def __init__(self, emulator: DiscordEmulator, channel_id: int) -> None:
        self.emulator = emulator
        self.channel_id = channel_id
        self.cap_id = emulator.bot.id
        self.group = DaveGroupServer(channel_id)
        self.callers: dict[int, DaveCaller] = {}
        self.errors: list[str] = []  # what davey refused on a caller's side (a test may assert it stays empty)

    def install(self) -> DaveRelay:
        server = self.emulator.voice_server
        server.on_session_described = self._on_session_described
        server.on_dave_binary = self._on_cap_binary
        server.on_dave_json = self._on_cap_json
        return self

    # ---- callers --------------------------------------------------------------------------------------------

    async def join(self, user_id: int) -> None:
        """`user_id` (already in the channel) joins the DAVE group; their microphone is DAVE-encrypted from now."""
        if user_id in self.callers:
            return
        caller = self.callers[user_id] = DaveCaller(user_id, self.channel_id)
        self.emulator.caller(user_id).encrypt_frame = caller.encrypt
        await self._dispatch(self.group.session_started(user_id))
        for message in caller.start():
            await self._dispatch(deliver(message, self.group))

    async def leave(self, user_id: int) -> None:
        """`user_id` leaves the group (call it with the emulator's `leave`)."""
        self.callers.pop(user_id, None)
        await self._dispatch(self.group.left(user_id))

    def open_cap_frame(self, frame: bytes, listener: int) -> bytes:
        """A frame of Cap's (after transport decryption) as `listener`'s client plays it: DAVE-decrypted Opus."""
        return self.callers[listener].decrypt(self.cap_id, frame)

    # ---- protocol transitions and broken messages -------------------------------------------------------------

    async def downgrade(self) -> None:
        await self._dispatch(self.group.downgrade())

    async def upgrade(self) -> None:
        await self._dispatch(self.group.upgrade([*self.callers, self.cap_id]))

    async def send_malformed_proposals_to_cap(self) -> None:
        """One bad MLS message: davey raises ValueError in discord.py's voice-WebSocket poller."""
        await self._send_to_cap(self.group.malformed_proposals(self.cap_id))

    # ---- the emulator's hooks ---------------------------------------------------------------------------------

    async def _on_session_described(self, session: VoiceSession) -> None:
        if session.dave_protocol_version == 0 or session.channel_id != self.channel_id:
            return
        for user_id in self.emulator.users_in(self.channel_id):
            if user_id != self.cap_id:
                await self.join(user_id)
        await self._dispatch(self.group.session_started(session.user_id))

    async def _on_cap_binary(self, session: VoiceSession, op: int, payload: bytes) -> None:
        await self._from_cap(session, ClientMessage(session.user_id, op, payload))

    async def _on_cap_json(self, session: VoiceSession, op: int, data: dict[str, Any]) -> None:
        await self._from_cap(session, ClientMessage(session.user_id, op, data=data))

    async def _from_cap(self, session: VoiceSession, message: ClientMessage) -> None:
        if session is not self.emulator.voice_server.current or session.channel_id != self.channel_id:
            return
        try:
            outgoing = deliver(message, self.group)
        except ValueError as exc:  # an op the group does not handle, or a malformed key package or commit
            log.warning("DAVE message from Cap ignored: %s", exc)
            self.errors.append(f"cap op {message.op}: {exc}")
            return
        await self._dispatch(outgoing)

    # ---- delivery ---------------------------------------------------------------------------------------------

    async def _dispatch(self, outgoing: list[Outgoing]) -> None:
        queue = list(outgoing)
        while queue:
            message = queue.pop(0)
            if message.user_id == self.cap_id:
                await self._send_to_cap(message)
                continue
            caller = self.callers.get(message.user_id)
            if caller is None:
                continue
            try:
                replies = caller.receive(message)
            except ValueError as exc:  # davey refused what the server sent: a bug in the emulator's MLS
                log.error("caller %s refused DAVE op %s: %s", message.user_id, message.op, exc)
                self.errors.append(f"caller {message.user_id} op {message.op}: {exc}")
                continue
            for reply in replies:
                queue += deliver(reply, self.group)

    async def _send_to_cap(self, message: Outgoing) -> None:
        server = self.emulator.voice_server
        session = server.current
        if session is None or not session.valid:
            return
        if isinstance(message, BinaryFrame):
            await server.send_binary(session, message.op, message.payload)
        else:
            await server.send(session, message.op, message.data)
