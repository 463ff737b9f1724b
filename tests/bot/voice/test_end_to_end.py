"""Discord's side without Discord: encrypted packets from two callers -> receiver -> mixer -> VoiceSession
(against the fake Realtime service on 127.0.0.1) -> playback -> EngineAudioSource Opus packets, decoded as a
Discord client decodes them (48 kHz stereo). The session runs at VOICE_AUDIO, as VoiceCall makes it."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace

from discord import opus

from bot.voice.mixer import Mixer
from bot.voice.opus_decoder import VOICE_AUDIO
from bot.voice.receiver import VoiceReceiver
from bot.voice.source import OPUS_SILENCE, EngineAudioSource
from realtime.audio import FRAME_MS, SILENCE_FRAME
from realtime.engine import VoiceSession
from realtime.protocol import SessionConfig
from realtime.tools import ToolRegistry
from realtime.transcript import TranscriptEntry
from tests.audio_checks import loud, runs
from tests.bot.voice.test_dave import StandInSession
from tests.bot.voice.voice_packets import MODE, SECRET_KEY, PacketSender, fixture_pcm, frames_of, opus_encode
from tests.realtime_fake import FakeRealtimeServer, tone_pcm

ALICE, BOB = 111, 222
ALICE_SSRC, BOB_SSRC = 0x1001, 0x2002
PACE = 4.0  # ticks run 4x faster than real time; every decision is per frame, not per wall-clock second


def speaking(user_id: int, ssrc: int) -> dict:
    return {"op": 5, "d": {"user_id": str(user_id), "ssrc": ssrc, "speaking": 1}}


class DiscordSide:
    """Receiver, mixer and playback source wired as CapVoiceClient wires them, ticked by the test."""

    def __init__(self, session: VoiceSession) -> None:
        self.dave = StandInSession(0x5A)
        self.connection = SimpleNamespace(mode=MODE, secret_key=SECRET_KEY, dave_session=self.dave, ssrc=0x4004)
        self.receiver = VoiceReceiver(self.connection)  # type: ignore[arg-type]
        self.receiver.on_ws_message(speaking(ALICE, ALICE_SSRC))
        self.receiver.on_ws_message(speaking(BOB, BOB_SSRC))
        self.mixer = Mixer(self.receiver.pull_frames)
        self.session = session
        self.source = EngineAudioSource(session.playback)
        self.decoder = opus.Decoder()
        self.heard: list[frozenset[int]] = []

    async def run(self, arrivals: list[list[bytes]], *, tail_ticks: int = 300) -> list[bytes]:
        """One tick per 20 ms: deliver that tick's datagrams, mix into the engine, pull one Opus packet."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        output: list[bytes] = []
        idle_run = 0
        for n in range(len(arrivals) + tail_ticks):
            for datagram in arrivals[n] if n < len(arrivals) else ():
                self.receiver.on_packet(datagram)  # the socket reader thread's job
            frame, speakers = self.mixer.tick()
            self.heard.append(speakers)
            self.session.feed_input(frame, speakers)
            packet = self.source.read()  # the player thread's job
            output.append(SILENCE_FRAME if packet == OPUS_SILENCE else self.decoder.decode(packet, fec=False))
            if n >= len(arrivals):
                idle_run = idle_run + 1 if self.session.idle else 0
                if idle_run >= 75:
                    break
            await asyncio.sleep(max(0.0, started + (n + 1) * FRAME_MS / 1000 / PACE - loop.time()))
        return output


def talk(sender: PacketSender, pcm: bytes, *, sealed_by: StandInSession | None = None) -> list[bytes]:
    """A caller's speech as the datagrams Discord relays (extension, some padding, maybe DAVE)."""
    packets = opus_encode(frames_of(pcm))
    return [
        sender.packet(sealed_by.seal(p) if sealed_by else p, padding=4 if i % 3 == 0 else 0)
        for i, p in enumerate(packets)
    ]


def schedule(length: int, *streams: tuple[int, list[bytes]]) -> list[list[bytes]]:
    """arrivals[tick] = datagrams arriving then; each stream starts at its tick, one packet per tick."""
    arrivals: list[list[bytes]] = [[] for _ in range(length)]
    for start, datagrams in streams:
        for i, datagram in enumerate(datagrams):
            arrivals[start + i].append(datagram)
    return arrivals


def config_for(server: FakeRealtimeServer) -> SessionConfig:
    return SessionConfig(
        api_key="sk-test", url=server.url, instructions="You are Cap.", reconnect_base_seconds=0.05, connect_attempts=3
    )


async def test_two_callers_each_get_a_reply_and_their_turns_know_who_spoke() -> None:
    hello, question = fixture_pcm("hello.wav"), fixture_pcm("question.wav")
    transcripts: list[TranscriptEntry] = []
    async with FakeRealtimeServer(reply_audio=tone_pcm(1.0), user_transcripts=["Hi.", "Rates?"]) as server:
        session = VoiceSession(config_for(server), ToolRegistry(), on_transcript=transcripts.append,
                               transport_audio=VOICE_AUDIO)
        await session.start()
        try:
            side = DiscordSide(session)
            alice = talk(PacketSender(ALICE_SSRC), hello, sealed_by=side.dave)  # E2EE under DAVE
            bob = talk(PacketSender(BOB_SSRC), question)  # plain Opus (a DAVE transition): passthrough
            bob_start = 10 + len(alice) + 200  # after Alice's turn and Cap's 1 s reply
            output = await side.run(schedule(bob_start + len(bob), (10, alice), (bob_start, bob)))
        finally:
            await session.aclose()
    callers = [t for t in transcripts if t.role == "caller"]
    assert [(t.text, t.speakers) for t in callers] == [("Hi.", frozenset({ALICE})), ("Rates?", frozenset({BOB}))]
    replies = runs(loud(output))
    assert len(replies) >= 2
    assert all(abs(length - 50) <= 3 for _, length in replies[-2:]), replies  # each 1 s reply, unbroken
    stats = side.receiver.stats()
    assert stats["dave_decrypted"] == len(alice) and stats["dave_passthrough"] == len(bob)
    assert stats["decoded"] == len(alice) + len(bob)
    assert not any(key.startswith(("decrypt", "bad_", "dave_no", "dave_f", "dave_e")) for key in stats)
    assert server.schema_errors == [] and server.internal_errors == []
    # The engine received what the callers said: the uplink carried speech while they talked.
    assert sum(bool(speakers) for speakers in side.heard) >= len(alice) + len(bob)


async def test_barge_in_through_the_discord_path_silences_cap_and_truncates_at_what_was_heard() -> None:
    hello, question = fixture_pcm("hello.wav"), fixture_pcm("question.wav")
    async with FakeRealtimeServer(reply_audio=tone_pcm(6.0)) as server:
        session = VoiceSession(dataclasses.replace(config_for(server)), ToolRegistry(), transport_audio=VOICE_AUDIO)
        await session.start()
        try:
            side = DiscordSide(session)
            alice = talk(PacketSender(ALICE_SSRC), hello)
            bob = talk(PacketSender(BOB_SSRC), question)[:60]
            onset = 10 + len(alice) + 100  # Bob cuts in about 1.5 s into Cap's 6 s reply
            output = await side.run(schedule(onset + len(bob) + 50, (10, alice), (onset, bob)), tail_ticks=150)
        finally:
            await session.aclose()
    flags = loud(output)
    reply_start = next(i for i in range(10 + len(alice), len(flags)) if flags[i])
    cut = next(i for i in range(onset, len(flags)) if not flags[i])
    # Jitter-buffer priming (2 frames) + the engine's onset detection, within the 150 ms budget.
    assert (cut - onset) * FRAME_MS <= 150, "Cap must go quiet within 150 ms of the caller's onset"
    assert not any(flags[cut : cut + 40]), "the interrupted reply must not come back"
    (truncation,) = server.truncations
    assert abs(truncation["audio_end_ms"] - (cut - reply_start) * FRAME_MS) <= 60
    assert session.metrics.barge_ins == 1
    assert server.schema_errors == []
