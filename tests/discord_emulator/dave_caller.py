"""A simulated caller's DAVE client: a real `davey.DaveSession` driven the way discord.py 2.7.1 drives Cap's.

The emulator's callers are not discord.py clients, but their MLS must be real so that Cap's session is
checked against real signatures, epochs and keys. This mirrors `DiscordVoiceWebSocket.received_message` /
`received_binary_message` and `VoiceConnectionState.reinit_dave_session` / `_execute_transition` (the
passthrough calls included), and returns what such a client would send back. One difference, on purpose:
a commit or welcome under a transition is applied when the transition executes (op 22), as Discord's own
clients switch keys, not when it arrives, as davey and discord.py do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import davey

from .dave_group import (
    OP_ANNOUNCE_COMMIT,
    OP_EXECUTE_TRANSITION,
    OP_EXTERNAL_SENDER,
    OP_PREPARE_EPOCH,
    OP_PREPARE_TRANSITION,
    OP_PROPOSALS,
    OP_WELCOME,
    BinaryFrame,
    DaveGroupServer,
    Outgoing,
)

OP_TRANSITION_READY: Final = 23
OP_KEY_PACKAGE: Final = 26
OP_COMMIT_WELCOME: Final = 28
OP_INVALID_COMMIT_WELCOME: Final = 31


@dataclass(frozen=True)
class ClientMessage:
    """Client -> server: binary (`payload` after the op byte) or JSON (`data`)."""

    user_id: int
    op: int
    payload: bytes = b""
    data: dict[str, Any] = field(default_factory=dict)


class DaveCaller:
    """One caller's DAVE state; feed it the server's frames, send back what it returns."""

    def __init__(self, user_id: int, channel_id: int, protocol_version: int = davey.DAVE_PROTOCOL_VERSION) -> None:
        self.user_id = user_id
        self.channel_id = channel_id
        self.protocol_version = protocol_version
        self.session = davey.DaveSession(protocol_version, user_id, channel_id)
        self.pending_transitions: dict[int, int] = {}
        self.staged: dict[int, tuple[int, bytes]] = {}  # transition id -> (op 29 or 30, commit or welcome)
        self.downgraded = False
        self.errors: list[str] = []

    def start(self) -> list[ClientMessage]:
        """After op 4 with a DAVE protocol version: the key package (op 26)."""
        return [self._key_package()]

    @property
    def can_encrypt(self) -> bool:
        return self.protocol_version != 0 and self.session.ready

    def encrypt(self, opus: bytes) -> bytes:
        """What this caller's client puts in its RTP payload (plain Opus when DAVE is off or not ready)."""
        return self.session.encrypt_opus(opus) if self.can_encrypt else opus

    def decrypt(self, sender_id: int, frame: bytes) -> bytes:
        return self.session.decrypt(sender_id, davey.MediaType.audio, frame)

    # ---- server -> client -----------------------------------------------------------------------------------

    def receive(self, message: Outgoing) -> list[ClientMessage]:
        if isinstance(message, BinaryFrame):
            return self._on_binary(message.op, message.payload)
        return self._on_json(message.op, message.data)

    def _on_binary(self, op: int, payload: bytes) -> list[ClientMessage]:
        session = self.session
        if op == OP_EXTERNAL_SENDER:
            session.set_external_sender(payload)
        elif op == OP_PROPOSALS:
            operation = davey.ProposalsOperationType.append if payload[0] == 0 else davey.ProposalsOperationType.revoke
            result = session.process_proposals(operation, payload[1:])
            if result is not None:
                return [ClientMessage(self.user_id, OP_COMMIT_WELCOME, result.commit + (result.welcome or b""))]
        elif op in (OP_ANNOUNCE_COMMIT, OP_WELCOME):
            transition_id = int.from_bytes(payload[:2], "big")
            if transition_id == 0:
                return self._apply(transition_id, op, payload[2:])
            # Discord's own clients switch to the new epoch's keys when the transition executes (op 22), once
            # every member is ready; davey switches when it processes the commit. Holding the commit until op 22
            # makes these callers send new-epoch media only after Cap (a member that sent op 23) has the keys.
            self.staged[transition_id] = (op, payload[2:])
            self.pending_transitions[transition_id] = self.protocol_version
            return [self._ready(transition_id)]
        return []

    def _apply(self, transition_id: int, op: int, message: bytes) -> list[ClientMessage]:
        try:
            if op == OP_ANNOUNCE_COMMIT:
                self.session.process_commit(message)
            else:
                self.session.process_welcome(message)
        except ValueError as exc:
            self.errors.append(str(exc))
            invalid = ClientMessage(self.user_id, OP_INVALID_COMMIT_WELCOME, data={"transition_id": transition_id})
            return [invalid, *self._reinit()]
        return []

    def _on_json(self, op: int, data: dict[str, Any]) -> list[ClientMessage]:
        if op == OP_PREPARE_TRANSITION:
            self.pending_transitions[data["transition_id"]] = data["protocol_version"]
            if data["transition_id"] == 0:
                self._execute(0)
                return []
            if data["protocol_version"] == 0:
                self.session.set_passthrough_mode(True, 120)
            return [self._ready(data["transition_id"])]
        if op == OP_EXECUTE_TRANSITION:
            staged = self.staged.pop(data["transition_id"], None)
            replies = self._apply(data["transition_id"], *staged) if staged else []
            self._execute(data["transition_id"])
            return replies
        if op == OP_PREPARE_EPOCH and data["epoch"] == 1:
            self.protocol_version = data["protocol_version"]
            return self._reinit()
        return []

    def _execute(self, transition_id: int) -> None:
        if transition_id not in self.pending_transitions:
            return
        old = self.protocol_version
        self.protocol_version = self.pending_transitions.pop(transition_id)
        if old != self.protocol_version and self.protocol_version == 0:
            self.downgraded = True
        elif transition_id > 0 and self.downgraded:
            self.downgraded = False
            self.session.set_passthrough_mode(True, 10)  # as discord.py 2.7.1 does (unlimited in davey)

    def _reinit(self) -> list[ClientMessage]:
        if self.protocol_version == 0:
            self.session.reset()
            self.session.set_passthrough_mode(True, 10)
            return []
        self.session.reinit(self.protocol_version, self.user_id, self.channel_id)
        return [self._key_package()]

    def _key_package(self) -> ClientMessage:
        return ClientMessage(self.user_id, OP_KEY_PACKAGE, self.session.get_serialized_key_package())

    def _ready(self, transition_id: int) -> ClientMessage:
        return ClientMessage(self.user_id, OP_TRANSITION_READY, data={"transition_id": transition_id})


def deliver(message: ClientMessage, server: DaveGroupServer) -> list[Outgoing]:
    """Hand one client message to the group server (what the emulator does with ops 23, 26, 28, 31)."""
    if message.op == OP_KEY_PACKAGE:
        return server.key_package(message.user_id, message.payload)
    if message.op == OP_COMMIT_WELCOME:
        return server.commit_welcome(message.user_id, message.payload)
    if message.op == OP_TRANSITION_READY:
        return server.transition_ready(message.user_id, message.data["transition_id"])
    if message.op == OP_INVALID_COMMIT_WELCOME:
        return server.invalid_commit_welcome(message.user_id, message.data["transition_id"])
    raise ValueError(f"not a DAVE client op: {message.op}")


def run_until_quiet(server: DaveGroupServer, callers: dict[int, DaveCaller], outgoing: list[Outgoing]) -> int:
    """Pump messages between the server and in-process callers until nobody has anything to say.

    Server messages to users without a caller here (Cap, in the emulator) are dropped; returns how many
    messages moved. Commits go one caller at a time, in order, so the first commit wins as on Discord.
    """
    moved = 0
    queue = list(outgoing)
    while queue:
        message = queue.pop(0)
        moved += 1
        caller = callers.get(message.user_id)
        if caller is None:
            continue
        for reply in caller.receive(message):
            queue += deliver(reply, server)
    return moved


def join(server: DaveGroupServer, callers: dict[int, DaveCaller], caller: DaveCaller) -> None:
    """An in-process caller joins: op 25 to it first (as after op 4), then its key package to the server."""
    callers[caller.user_id] = caller
    run_until_quiet(server, callers, server.session_started(caller.user_id))
    for message in caller.start():
        run_until_quiet(server, callers, deliver(message, server))


def leave(server: DaveGroupServer, callers: dict[int, DaveCaller], user_id: int) -> None:
    """An in-process caller leaves the channel."""
    callers.pop(user_id, None)
    run_until_quiet(server, callers, server.left(user_id))
