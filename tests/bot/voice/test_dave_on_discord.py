"""DAVE scenarios of a whole call: discord.py's own connect code, a real MLS group run by the emulated voice
server (tests/discord_emulator/dave_relay.py), callers with real davey sessions, the fake Realtime service."""

from __future__ import annotations

import asyncio

from discord import opus

import bot.voice.dave
from bot.voice.dave import DAVE_MAGIC
from bot.voice.source import OPUS_SILENCE
from tests.audio_checks import loud
from tests.bot.voice.emulated_call import ALICE, BOB, CapOnDiscord, cap_on_discord, speech
from tests.discord_emulator import LOBBY_ID, wait_until
from tests.discord_emulator.dave_relay import DaveRelay


async def dave_call(cap: CapOnDiscord) -> DaveRelay:
    """Cap joins the Lobby, where Alice is, and the DAVE group of the two is formed."""
    relay = DaveRelay(cap.discord, LOBBY_ID).install()
    await cap.join()
    await cap.connected_in(LOBBY_ID)
    await wait_until(lambda: cap_in_group(cap, relay), what="the DAVE group of Cap and Alice")
    return relay


def cap_in_group(cap: CapOnDiscord, relay: DaveRelay) -> bool:
    voice = cap.voice
    session = voice._connection.dave_session if voice is not None else None
    return (session is not None and session.ready and relay.group.transition is None
            and session.epoch == relay.group.epoch and sorted(map(int, session.get_user_ids())) == sorted(
                relay.group.members))


class CallerEar:
    """Cap's audio as a caller's client plays it: every frame DAVE-decrypted once (davey refuses replays)."""

    def __init__(self, cap: CapOnDiscord, relay: DaveRelay, listener: int) -> None:
        self.cap, self.relay, self.listener = cap, relay, listener
        self.decoder = opus.Decoder()
        self.frames: list[bytes] = []
        self.position = len(cap.discord.voice_server.cap_packets)

    def heard(self) -> list[bytes]:
        packets = self.cap.discord.voice_server.cap_packets
        for packet in packets[self.position :]:
            if packet.payload == OPUS_SILENCE:
                continue
            assert packet.payload.endswith(DAVE_MAGIC), "Cap sent plain Opus in a DAVE call"
            opus_frame = self.relay.open_cap_frame(packet.payload, self.listener)
            self.frames.append(self.decoder.decode(opus_frame, fec=False))
        self.position = len(packets)
        return self.frames


async def test_under_dave_cap_hears_a_caller_and_the_caller_decrypts_the_reply() -> None:
    async with cap_on_discord(dave_protocol_version=1) as cap:
        relay = await dave_call(cap)
        alice = CallerEar(cap, relay, ALICE)
        await cap.discord.say(ALICE, speech() + [OPUS_SILENCE] * 40)
        await wait_until(lambda: sum(loud(alice.heard())) >= 40, what="Cap's reply at Alice")
        assert cap.heard(ALICE) > 100
        stats = cap.voice.stats()
        assert stats["dave_decrypted"] > 100
        assert stats.get("dave_no_key", 0) + stats.get("dave_failed", 0) + stats.get("dave_error", 0) < 5
        assert relay.errors == []


async def test_a_second_caller_joins_and_one_leaves_with_frames_in_flight() -> None:
    async with cap_on_discord(dave_protocol_version=1) as cap:
        relay = await dave_call(cap)
        first_epoch = relay.group.epoch
        await cap.discord.join(BOB, LOBBY_ID)
        await relay.join(BOB)
        await wait_until(lambda: cap_in_group(cap, relay) and BOB in relay.group.members, what="Bob in the group")
        assert relay.group.epoch == first_epoch + 1
        await cap.hears(BOB)
        await cap.hears(ALICE)

        # Alice keeps talking while Bob leaves: her frames straddle the epoch change.
        before = cap.heard(ALICE)
        task = asyncio.create_task(cap.discord.say(ALICE, speech(frames=100)))
        await asyncio.sleep(0.5)
        await cap.discord.leave(BOB)
        await relay.leave(BOB)
        await task
        await wait_until(lambda: cap_in_group(cap, relay) and BOB not in relay.group.members, what="Bob removed")
        assert relay.group.epoch == first_epoch + 2
        await wait_until(lambda: cap.heard(ALICE) - before >= 95, what="all of Alice's frames heard")
        stats = cap.voice.stats()
        assert stats.get("dave_no_key", 0) + stats.get("dave_failed", 0) == 0
        assert relay.errors == []


async def test_after_a_downgrade_and_an_upgrade_plain_audio_of_a_member_is_refused_again(monkeypatch) -> None:
    """Issue 9 item 4 through the whole stack: discord.py's upgrade left plain audio accepted for good."""
    monkeypatch.setattr(bot.voice.dave, "PASSTHROUGH_AFTER_TRANSITION_SECONDS", 1)  # 10 s on Discord
    async with cap_on_discord(dave_protocol_version=1) as cap:
        relay = await dave_call(cap)
        await relay.downgrade()
        await wait_until(lambda: cap.voice._connection.dave_protocol_version == 0, what="the downgrade")
        await cap.hears(ALICE)  # plain Opus now, from Alice's client too

        await relay.upgrade()
        await wait_until(lambda: cap_in_group(cap, relay) and cap.voice._connection.dave_protocol_version == 1,
                         what="the DAVE group formed again")
        await cap.hears(ALICE)  # encrypted again
        await asyncio.sleep(1.1)  # the passthrough window after the upgrade is over

        forged = cap.discord.caller(ALICE)
        forged.encrypt_frame = lambda frame: frame  # the voice server speaking as Alice, unencrypted
        refused_before = cap.voice.stats().get("dave_plaintext_refused", 0)
        heard_before = cap.heard(ALICE)
        await cap.discord.say(ALICE, speech(frames=30))
        await wait_until(lambda: cap.voice.stats().get("dave_plaintext_refused", 0) - refused_before >= 28,
                         what="the plain frames refused")
        assert cap.heard(ALICE) - heard_before < 5
        assert relay.errors == []


async def test_after_a_bad_mls_message_cap_rejoins_the_dave_group_and_hears_encrypted_audio() -> None:
    """One malformed op 27 kills discord.py's voice poller (item 2); the reconnect must bring DAVE back too."""
    async with cap_on_discord(dave_protocol_version=1) as cap:
        relay = await dave_call(cap)
        first_session = cap.discord.voice_server.current
        await relay.send_malformed_proposals_to_cap()
        await wait_until(lambda: cap.discord.voice_server.current is not first_session, within=10,
                         what="a reconnect after the dead poller")
        await cap.connected_in(LOBBY_ID)
        await wait_until(lambda: cap_in_group(cap, relay), what="Cap back in the DAVE group")
        decrypted = cap.voice.stats()["dave_decrypted"]
        await cap.hears(ALICE)
        assert cap.voice.stats()["dave_decrypted"] - decrypted >= 40
        assert relay.errors == []
