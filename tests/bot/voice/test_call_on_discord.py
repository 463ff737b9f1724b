"""Scenarios of a whole call through discord.py's own connect code against the emulated Discord
(tests/discord_emulator): unmodified CapVoiceClient and VoiceCall, the fake Realtime service behind them."""

from __future__ import annotations

import itertools

import pytest

import bot.voice.client as client_module
import bot.voice.connection as connection_module
from bot.voice.call import LEAVE_MESSAGES
from bot.voice.source import OPUS_SILENCE
from realtime.audio import FRAME_BYTES
from tests.audio_checks import loud
from tests.bot.voice.emulated_call import ALICE, BOB, EVE, SAM, CapOnDiscord, cap_on_discord, speech
from tests.discord_emulator import LOBBY_ID, STAGE_ID, wait_until
from tests.discord_emulator.voice_server import VoiceSession

OP_MLS_PROPOSALS = 27


def sessions(cap: CapOnDiscord) -> int:
    return len(cap.discord.voice_server.sessions)


async def in_a_dave_call(cap: CapOnDiscord) -> VoiceSession:
    """Cap in the Lobby under DAVE, its key package sent: the emulator's voice session for it."""
    await cap.join()
    await cap.connected_in(LOBBY_ID)
    session = cap.discord.voice_server.current
    assert session is not None
    await wait_until(lambda: bool(session.client_binary), what="Cap's key package")
    return session


async def kill_the_voice_poller(cap: CapOnDiscord, session: VoiceSession) -> None:
    """Proposals for a group Cap is not in: davey raises "Failed to process proposals", which ends discord.py's
    voice WebSocket poller (is_connected() stays True)."""
    await cap.discord.voice_server.send_binary(session, OP_MLS_PROPOSALS, b"\x00\x03bad")


async def test_join_hear_answer_then_keep_the_route_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole path, then the quiet part: Cap's voice sleeps and one Opus silence packet keeps Discord's route
    open every KEEPALIVE_TICKS (5 s; 0.5 s here), with sequence numbers and nonces still rising, never reused."""
    monkeypatch.setattr(client_module, "KEEPALIVE_TICKS", 25)
    # Transcripts go to the staff channel by default; here they go to the voice channel's chat, where the
    # emulator's REST side records them.
    async with cap_on_discord(transcript_destination="voice_chat") as cap:
        interaction = await cap.join()
        assert "I'm on" in interaction.followup.send.await_args.args[0]
        await cap.connected_in(LOBBY_ID)
        await cap.discord.say(ALICE, speech() + [OPUS_SILENCE] * 40)
        await wait_until(lambda: sum(loud(cap.cap_audio())) >= 40, what="Cap's reply at the caller")
        assert cap.heard(ALICE) > 100
        assert all(len(frame) == FRAME_BYTES for frame in cap.cap_audio())
        await wait_until(lambda: "**Alice:** Hi Cap." in cap.discord.texts(LOBBY_ID), what="the transcript line")

        voice = cap.voice
        assert voice is not None
        await wait_until(lambda: voice.sleeping, what="Cap's voice asleep after the reply")
        packets = cap.discord.voice_server.cap_packets
        last_audible = max(n for n, packet in enumerate(packets) if packet.payload != OPUS_SILENCE)
        await wait_until(lambda: len(packets) - last_audible > 5 + 3, what="keepalives while quiet")
        assert all(packet.payload == OPUS_SILENCE for packet in packets[last_audible + 1 :])
        nonces = [packet.nonce for packet in packets]
        assert nonces == sorted(set(nonces))
        steps = {(b.sequence - a.sequence) % 65536 for a, b in itertools.pairwise(packets)}
        assert steps == {1}


async def test_a_moderator_moves_cap() -> None:
    async with cap_on_discord() as cap:
        await cap.join()
        await cap.connected_in(LOBBY_ID)
        await cap.hears(ALICE)
        cap.discord.move_cap(STAGE_ID)
        await cap.discord.join(ALICE, STAGE_ID)
        await cap.connected_in(STAGE_ID)
        await cap.hears(ALICE)
        assert cap.call is not None and cap.call.current_channel.id == STAGE_ID
        assert LEAVE_MESSAGES["disconnected"] not in cap.discord.texts()


async def test_a_move_after_a_full_reconnect_keeps_the_call() -> None:
    """Issue 9 item 1: discord.py 2.7.1 keeps `_disconnected` set after a full reconnect (4006), so a later 4014
    was taken for a kick and the call ended."""
    async with cap_on_discord() as cap:
        await cap.join()
        await cap.connected_in(LOBBY_ID)
        cap.discord.close_voice(4006)
        await wait_until(lambda: sessions(cap) == 2, what="a new voice session")
        await cap.connected_in(LOBBY_ID)
        cap.discord.move_cap(STAGE_ID)
        await cap.discord.join(ALICE, STAGE_ID)
        await cap.connected_in(STAGE_ID)
        await cap.hears(ALICE)
        assert cap.call is not None
        assert LEAVE_MESSAGES["disconnected"] not in cap.discord.texts()


async def test_a_new_voice_server_keeps_the_call() -> None:
    async with cap_on_discord() as cap:
        await cap.join()
        await cap.connected_in(LOBBY_ID)
        cap.discord.change_voice_server()
        await wait_until(lambda: sessions(cap) == 2, what="a session on the new voice server")
        await cap.connected_in(LOBBY_ID)
        await cap.hears(ALICE)
        assert cap.call is not None


async def test_a_crashed_voice_server_is_resumed() -> None:
    """Issue 9 item 3: after close 4015 discord.py 2.7.1 waited for voice updates and a secret key that a resume
    never brings, and ended the call after 30 s. Cap resumes the same session within a few seconds."""
    async with cap_on_discord() as cap:
        await cap.join()
        await cap.connected_in(LOBBY_ID)
        await cap.hears(ALICE)
        cap.discord.close_voice(4015)
        session = cap.discord.voice_server.current
        assert session is not None
        await wait_until(lambda: session.resumes == 1, within=10, what="a RESUME")
        await cap.hears(ALICE, announce=False)
        assert sessions(cap) == 1  # resumed, not identified again
        assert cap.call is not None and cap.voice is not None and cap.voice.is_connected()


async def test_a_refused_resume_falls_back_to_a_full_reconnect() -> None:
    """Close 4015 but the voice server no longer knows the session: RESUME is closed with 4006, and Cap
    identifies afresh instead of ending the call."""
    async with cap_on_discord() as cap:
        await cap.join()
        await cap.connected_in(LOBBY_ID)
        await cap.hears(ALICE)
        cap.discord.close_voice(4015, invalidate=True)
        await wait_until(lambda: sessions(cap) == 2, what="a new voice session")
        await cap.connected_in(LOBBY_ID)
        await cap.hears(ALICE, announce=False)
        assert cap.call is not None


async def test_a_bad_mls_message_is_survived_and_reported() -> None:
    """Issue 9 item 2: a ValueError from davey ends discord.py's voice poller while is_connected() stays True.
    Cap notices within a couple of seconds, reconnects, and /cap status says it happened."""
    async with cap_on_discord(dave_protocol_version=1) as cap:
        session = await in_a_dave_call(cap)
        await kill_the_voice_poller(cap, session)
        await wait_until(lambda: sessions(cap) == 2, within=10, what="a reconnect after the dead poller")
        await cap.connected_in(LOBBY_ID)
        await cap.hears(ALICE)
        status = await cap.command("status")
        assert "voice gateway" in status.lower() and "reconnected" in status.lower()


async def test_a_refused_reconnect_after_a_dead_poller_is_tried_again() -> None:
    """The voice server refuses the reconnect that follows a dead poller (a blip on Discord's side): Cap tries
    again, as discord.py does after a dropped voice WebSocket, instead of leaving the call at the first refusal."""
    async with cap_on_discord(dave_protocol_version=1) as cap:
        session, voice = await in_a_dave_call(cap), cap.voice
        assert voice is not None
        cap.discord.voice_server.refuse_connections = 2
        await kill_the_voice_poller(cap, session)
        await wait_until(lambda: sessions(cap) == 2, within=20, what="a reconnect once the voice server answers")
        await cap.connected_in(LOBBY_ID)
        await cap.hears(ALICE)
        assert cap.call is not None
        assert voice.stats()["voice_gateway_revivals"] == 1


async def test_cap_leaves_with_a_message_when_every_reconnect_after_a_dead_poller_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection_module, "REVIVE_ATTEMPTS", 2)
    async with cap_on_discord(dave_protocol_version=1) as cap:
        session = await in_a_dave_call(cap)
        cap.discord.voice_server.refuse_connections = 10
        await kill_the_voice_poller(cap, session)
        await wait_until(lambda: cap.call is None, within=20, what="the call ending")
        await wait_until(lambda: LEAVE_MESSAGES["disconnected"] in cap.discord.texts(LOBBY_ID), what="the goodbye")
        assert cap.discord.voice_server.refuse_connections == 8  # two attempts, then no more


@pytest.mark.parametrize("code", [4006, 1001])
async def test_a_same_channel_reconnect_still_hears_callers_without_new_speaking(code: int) -> None:
    """Issue 9 item 6: op 2 READY used to forget every SSRC; callers keep theirs and may not announce again.
    4006 (session no longer valid) and 1001 (going away) both make discord.py reconnect in full."""
    async with cap_on_discord() as cap:
        await cap.join()
        await cap.connected_in(LOBBY_ID)
        await cap.hears(ALICE)
        cap.discord.close_voice(code, invalidate=True)
        await wait_until(lambda: sessions(cap) == 2, what="a new voice session")
        await cap.connected_in(LOBBY_ID)
        await cap.hears(ALICE, announce=False)


async def test_close_1000_ends_the_call_with_a_message() -> None:
    async with cap_on_discord() as cap:
        await cap.join()
        await cap.connected_in(LOBBY_ID)
        cap.discord.close_voice(1000)
        await wait_until(lambda: cap.call is None, what="the call ending")
        await wait_until(lambda: LEAVE_MESSAGES["disconnected"] in cap.discord.texts(LOBBY_ID), what="the goodbye")


async def test_a_kick_ends_the_call_with_a_message() -> None:
    async with cap_on_discord() as cap:
        await cap.join()
        await cap.connected_in(LOBBY_ID)
        cap.discord.kick_cap()
        await wait_until(lambda: cap.call is None, what="the call ending")
        await wait_until(lambda: LEAVE_MESSAGES["disconnected"] in cap.discord.texts(LOBBY_ID), what="the goodbye")
        assert cap.voice is None


async def test_only_the_call_its_caller_or_staff_can_end_it() -> None:
    """Issue 9 item 6: any member anywhere in the guild could /cap leave someone else's call."""
    async with cap_on_discord() as cap:
        await cap.join(ALICE)
        await cap.connected_in(LOBBY_ID)
        assert "Only the people in" in await cap.command("leave", EVE)  # not in the call, not staff
        await cap.discord.join(BOB, LOBBY_ID)
        await wait_until(lambda: cap.member(BOB).voice is not None, what="Bob in the Lobby")
        assert cap.call is not None
        await cap.discord.join(ALICE, STAGE_ID)  # the caller who started it may end it from anywhere
        await wait_until(lambda: cap.member(ALICE).voice.channel.id == STAGE_ID, what="Alice elsewhere")
        assert await cap.command("leave", ALICE) == "I left the call."
        assert cap.call is None


async def test_staff_and_people_in_the_call_can_end_it() -> None:
    async with cap_on_discord() as cap:
        await cap.join(ALICE)
        await cap.connected_in(LOBBY_ID)
        await cap.discord.join(BOB, LOBBY_ID)
        await wait_until(lambda: cap.member(BOB).voice is not None, what="Bob in the Lobby")
        assert await cap.command("leave", BOB) == "I left the call."
        await cap.join(ALICE)
        await cap.connected_in(LOBBY_ID)
        assert await cap.command("leave", SAM) == "I left the call."  # staff: Move Members


async def test_leaving_while_cap_recovers_from_a_dead_poller_calls_the_recovery_off() -> None:
    """A /cap leave during the reconnect after a dead poller: the reconnect must not go on (and rejoin, or hang
    for discord.py's 30 s connect timeout)."""
    async with cap_on_discord(dave_protocol_version=1) as cap:
        session, voice = await in_a_dave_call(cap), cap.voice
        assert voice is not None
        cap.discord.gateway_latency = 1.0  # the reconnect now waits on the gateway long enough to be overtaken
        await kill_the_voice_poller(cap, session)
        await wait_until(lambda: voice.stats().get("voice_gateway_deaths") == 1, what="the dead poller noticed")
        assert await cap.command("leave") == "I left the call."
        revival = voice._connection._revival
        assert revival is not None and revival.cancelled()
        assert cap.guild.voice_client is None
