"""DAVE for the session benchmarks: each rig call joins a real MLS group with its caller in the fake relay.

Cap's side of the call gets a real davey session, driven as discord.py drives one (the emulator's DaveCaller);
the relay process runs the voice server's DAVE side and the caller's session (bench/fake_voice_relay.py). Once
the group is formed, the caller's Opus arrives DAVE-encrypted, Cap's receiver opens it with DaveDecryptor, and
Cap's packets are DAVE-encrypted by discord.py's own `_get_voice_packet` before transport encryption.
"""

from __future__ import annotations

import base64
from typing import Any

from rig import CallRig, FarSide

from tests.discord_emulator.dave_caller import ClientMessage, DaveCaller
from tests.discord_emulator.dave_group import BinaryFrame, JsonOp, Outgoing

CAP_USER_BASE = 200_000
CHANNEL_BASE = 300_000


async def join_dave(far: FarSide, call: CallRig) -> DaveCaller:
    """Form the call's DAVE group; Cap encrypts and decrypts from then on."""
    channel = CHANNEL_BASE + call.index
    cap = DaveCaller(CAP_USER_BASE + call.index, channel)
    answer = await far.relay({"cmd": "dave_join", "port": call.port, "channel": channel,
                              "caller_user": call.caller_user, "cap_user": cap.user_id})
    outbox = cap.start()  # discord.py sends its key package on op 4, before op 25 arrives
    while True:
        for message in _decode(answer["to_cap"], cap.user_id):
            outbox += cap.receive(message)
        if not outbox:
            break
        answer = await far.relay({"cmd": "dave_from_cap", "port": call.port, "messages": _encode(outbox)})
        outbox = []
    if not cap.session.ready:
        raise RuntimeError(f"call {call.index}: the DAVE group did not form")
    call.transport.dave_session = cap.session
    call.client._connection.dave_session = cap.session
    call.client._connection.can_encrypt = True
    return cap


def _encode(messages: list[ClientMessage]) -> list[dict[str, Any]]:
    return [{"op": m.op, "payload": base64.b64encode(m.payload).decode(), "data": m.data} for m in messages]


def _decode(messages: list[dict[str, Any]], user_id: int) -> list[Outgoing]:
    return [BinaryFrame(user_id, m["op"], base64.b64decode(m["payload"])) if "payload" in m
            else JsonOp(user_id, m["op"], m["data"]) for m in messages]
