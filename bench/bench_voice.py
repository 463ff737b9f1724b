"""Cost of Cap's Discord voice path, each figure beside a reference measured in the same run.

Run as `.venv/bin/python bench/bench_voice.py` (about 10 s, one core). Per-packet receive cost (socket
thread: parse + transport decrypt + DAVE passthrough; tick: jitter + Opus decode; Cap's OpusDecoder beside
discord.py's opus.Decoder), per-tick mixer
cost for 1/3/10 speakers, and EngineAudioSource.read() while quiet vs while speaking.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for the packet builders shared with the tests

from discord import VoiceClient, opus  # noqa: E402

from bot.voice.crypto import TransportDecryptor, _aead_open  # noqa: E402 (_aead_open: the bare libsodium call)
from bot.voice.mixer import Mixer  # noqa: E402
from bot.voice.opus_decoder import HEARD_PCM, OpusDecoder  # noqa: E402
from bot.voice.receiver import VoiceReceiver  # noqa: E402
from bot.voice.rtp import RtpHeader, parse_header  # noqa: E402
from bot.voice.source import OPUS_SILENCE, EngineAudioSource  # noqa: E402
from realtime.audio import FRAME_SAMPLES_DISCORD  # noqa: E402
from tests.bot.voice.voice_packets import (  # noqa: E402
    MODE,
    SECRET_KEY,
    PacketSender,
    fixture_pcm,
    frames_of,
    opus_encode,
)

BATCHES = 5  # best of: other processes only ever make a batch slower


def best_us(run: Callable[[], int], batches: int = BATCHES) -> float:
    """Best per-item time in µs over batches; `run()` does the work and returns how many items it did."""
    best = float("inf")
    for _ in range(batches):
        start = time.perf_counter_ns()
        items = run()
        best = min(best, (time.perf_counter_ns() - start) / 1000 / items)
    return best


def row(label: str, value: float, reference_label: str = "", reference: float | None = None) -> None:
    ref = f"   | {reference_label}: {reference:7.1f} µs" if reference is not None else ""
    print(f"  {label:<52} {value:7.1f} µs{ref}")


def speech_packets() -> list[bytes]:
    return opus_encode(frames_of(fixture_pcm("hello.wav")))


def bench_receive(packets: list[bytes]) -> None:
    print("Receive, per packet (hello.wav, 64 kbps Opus, 1-byte header extension, some padding)")
    sender = PacketSender(0x1001)
    datagrams = [sender.packet(p, padding=4 if i % 3 == 0 else 0) for i, p in enumerate(packets)]
    connection = SimpleNamespace(mode=MODE, secret_key=SECRET_KEY, dave_session=None, ssrc=1)

    def socket_thread() -> int:
        receiver = VoiceReceiver(connection)  # type: ignore[arg-type]
        receiver.on_ws_message({"op": 5, "d": {"user_id": "111", "ssrc": 0x1001, "speaking": 1}})
        for datagram in datagrams:
            receiver.on_packet(datagram)
        return len(datagrams)

    decryptor = TransportDecryptor(MODE, SECRET_KEY)
    headers = [parse_header(d) for d in datagrams]
    key = bytes(SECRET_KEY)

    def raw_decrypt() -> int:
        for datagram, header in zip(datagrams, headers, strict=True):
            assert isinstance(header, RtpHeader)
            clear = header.header_length
            _aead_open(datagram[clear:-4], datagram[:clear], datagram[-4:] + bytes(20), key)
        return len(datagrams)

    def decrypt_only() -> int:
        for datagram, header in zip(datagrams, headers, strict=True):
            decryptor.decrypt(datagram, header)  # type: ignore[arg-type]
        return len(datagrams)

    def full_pipeline() -> int:
        receiver = VoiceReceiver(connection)  # type: ignore[arg-type]
        receiver.on_ws_message({"op": 5, "d": {"user_id": "111", "ssrc": 0x1001, "speaking": 1}})
        for datagram in datagrams:
            receiver.on_packet(datagram)
            receiver.pull_frames()
        assert receiver.stats()["decoded"] == len(datagrams)  # one frame of delay: each plays on its tick
        return len(datagrams)

    def raw_decode() -> int:
        decoder = OpusDecoder(HEARD_PCM)  # the decode SpeakerDecoder runs
        for packet in packets:
            decoder.decode(packet, fec=False)
        return len(packets)

    raw = best_us(raw_decrypt)
    row("socket thread: parse + decrypt + DAVE passthrough", best_us(socket_thread), "raw libsodium decrypt", raw)
    row("  of which TransportDecryptor.decrypt", best_us(decrypt_only), "raw libsodium decrypt", raw)
    decode = best_us(raw_decode)
    row("whole path incl. jitter + Opus decode on the tick", best_us(full_pipeline), "raw Opus decode", decode)

    def discord_py_decode() -> int:
        decoder = opus.Decoder()
        for packet in packets:
            decoder.decode(packet, fec=False)
        return len(packets)

    row("  raw Opus decode (OpusDecoder, what Cap runs)", decode, "discord.py opus.Decoder", best_us(discord_py_decode))


def bench_mixer(packets: list[bytes]) -> None:
    print("Mixer tick (pull_frames: inbox -> jitter -> decode, then saturating mix), per 20 ms tick")
    connection = SimpleNamespace(mode=MODE, secret_key=SECRET_KEY, dave_session=None, ssrc=1)
    ticks = min(len(packets), 120)

    def raw_decode(speakers: int) -> Callable[[], int]:
        def run() -> int:
            decoders = [OpusDecoder(HEARD_PCM) for _ in range(speakers)]
            for packet in packets[:ticks]:
                for decoder in decoders:
                    decoder.decode(packet, fec=False)
            return ticks

        return run

    for speakers in (1, 3, 10):
        senders = [PacketSender(0x1000 + n) for n in range(speakers)]
        streams = [[sender.packet(p) for p in packets[:ticks]] for sender in senders]

        def run(streams: list[list[bytes]] = streams, speakers: int = speakers) -> int:
            receiver = VoiceReceiver(connection)  # type: ignore[arg-type]
            for n in range(speakers):
                receiver.on_ws_message({"op": 5, "d": {"user_id": str(100 + n), "ssrc": 0x1000 + n}})
            mixer = Mixer(receiver.pull_frames)
            elapsed = 0
            for tick in range(ticks):
                for stream in streams:  # the socket thread's share is not timed here
                    receiver.on_packet(stream[tick])
                start = time.perf_counter_ns()
                mixer.tick()
                elapsed += time.perf_counter_ns() - start
            assert receiver.stats()["decoded"] >= speakers * (ticks - 2)
            run.elapsed_ns = elapsed  # type: ignore[attr-defined]
            return ticks

        best = float("inf")
        for _ in range(BATCHES):
            run()
            best = min(best, run.elapsed_ns / 1000 / ticks)  # type: ignore[attr-defined]
        row(f"{speakers:>2} speaker(s)", best, f"{speakers} x raw Opus decode", best_us(raw_decode(speakers)))


def bench_source(packets: list[bytes]) -> None:
    print("EngineAudioSource.read(), per 20 ms frame (player thread)")
    pcm_frames = frames_of(fixture_pcm("hello.wav"))

    class Quiet:
        def read_frame(self) -> None:
            return None

    class Speaking:
        def __init__(self) -> None:
            self.index = 0

        def read_frame(self) -> bytes:
            self.index += 1
            return pcm_frames[self.index % len(pcm_frames)]

    quiet = EngineAudioSource(Quiet())
    speaking = EngineAudioSource(Speaking())
    reads = len(pcm_frames)

    def read_quiet() -> int:
        for _ in range(reads):
            quiet.read()
        return reads

    def read_speaking() -> int:
        for _ in range(reads):
            speaking.read()
        return reads

    encoder = opus.Encoder(application="voip", bitrate=64, fec=True, expected_packet_loss=0.1, signal_type="voice")
    silence = bytes(len(pcm_frames[0]))

    def raw_encode() -> int:
        for frame in pcm_frames:
            encoder.encode(frame, FRAME_SAMPLES_DISCORD)
        return reads

    def raw_encode_silence() -> int:
        for _ in range(reads):
            encoder.encode(silence, FRAME_SAMPLES_DISCORD)
        return reads

    row("quiet (Opus silence, no encode)", best_us(read_quiet), "encoding 20 ms of zeros", best_us(raw_encode_silence))
    row("speaking (Opus encode of the engine's frame)", best_us(read_speaking), "raw Opus encode", best_us(raw_encode))

    # What discord.py then does with each packet on the same thread: RTP header + transport encryption
    # (DAVE is skipped here: it needs an MLS group; davey passes the silence frame through unencrypted).
    sender = SimpleNamespace(
        _connection=SimpleNamespace(dave_session=None, can_encrypt=False),
        sequence=0,
        timestamp=0,
        ssrc=1,
        mode=MODE,
        secret_key=SECRET_KEY,
        _incr_nonce=0,
    )
    sender.checked_add = lambda attr, value, limit: VoiceClient.checked_add(sender, attr, value, limit)
    sender._encrypt_aead_xchacha20_poly1305_rtpsize = lambda header, data: (
        VoiceClient._encrypt_aead_xchacha20_poly1305_rtpsize(sender, header, data)
    )
    speech = speaking.read()

    def send(packet: bytes) -> Callable[[], int]:
        def run() -> int:
            for _ in range(reads):
                VoiceClient._get_voice_packet(sender, packet)
            return reads

        return run

    row("discord.py packetising a silence frame", best_us(send(OPUS_SILENCE)), "a speech packet", best_us(send(speech)))


def main() -> None:
    print(f"libopus {opus._OpusStruct.get_opus_version()}")
    packets = speech_packets()
    bench_receive(packets)
    bench_mixer(packets)
    bench_source(packets)


if __name__ == "__main__":
    main()
