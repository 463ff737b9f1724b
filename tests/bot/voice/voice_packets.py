"""Builders for real Discord voice packets: Opus from libopus, encrypted by discord.py's own sender code.

discord.py's `VoiceClient._encrypt_aead_xchacha20_poly1305_rtpsize` is called on a small stand-in
holding `secret_key` and `_incr_nonce`, so the receiver is checked against code nobody here wrote.
That sender adds no header extension and no padding; Discord's relays add both, so `PacketSender`
builds them into the clear header (preamble) and the encrypted payload (body, padding) itself.
"""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
from discord import VoiceClient, opus

from bot.voice.opus_decoder import HEARD_PCM, SPOKEN_PCM
from realtime.audio import FRAME_BYTES, FRAME_SAMPLES_DISCORD, Downsampler, to_discord_pcm

SECRET_KEY = [(7 * i + 3) % 256 for i in range(32)]
MODE = "aead_xchacha20_poly1305_rtpsize"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
# A one-byte header extension element like Discord's (id 1, one data byte), padded to a 32-bit word.
EXTENSION_BODY = bytes([0x10, 0x5A, 0x00, 0x00])


def vowel_pcm(seconds: float, f0: float = 130.0, seed: int = 0) -> bytes:
    """A vowel-like voice (glottal harmonics shaped by two formants, slow vibrato): 48 kHz stereo s16le."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 48000)
    t = np.arange(n) / 48000
    pitch = f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / 48000
    signal = np.zeros(n)
    for harmonic in range(1, 30):
        freq = harmonic * f0
        gain = np.exp(-(((freq - 700) / 250) ** 2)) + 0.6 * np.exp(-(((freq - 1200) / 300) ** 2)) + 0.05
        signal += gain / harmonic**0.5 * np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi))
    signal *= 9000 / np.max(np.abs(signal))
    mono = signal.astype("<i2")
    return np.repeat(mono, 2).tobytes()


def fixture_pcm(name: str = "hello.wav") -> bytes:
    """An espeak-ng fixture converted to 48 kHz stereo s16le."""
    with wave.open(str(FIXTURES / name)) as wav:
        return to_discord_pcm(wav.readframes(wav.getnframes()), wav.getframerate(), wav.getnchannels())


def frames_of(pcm: bytes) -> list[bytes]:
    """Whole 20 ms frames (a partial tail is zero-padded)."""
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    if frames and len(frames[-1]) < FRAME_BYTES:
        frames[-1] = frames[-1].ljust(FRAME_BYTES, b"\0")
    return frames


def opus_encode(frames: list[bytes], frame_ms: int = 20) -> list[bytes]:
    """Opus packets of `frame_ms` (10/20/40/60) each, from 20 ms PCM frames (a partial tail is zero-padded)."""
    encoder = opus.Encoder(application="voip", bitrate=64, fec=True, expected_packet_loss=0.2)
    pcm = b"".join(frames)
    size = FRAME_BYTES * frame_ms // 20
    chunks = [pcm[i : i + size].ljust(size, b"\0") for i in range(0, len(pcm), size)]
    return [encoder.encode(chunk, FRAME_SAMPLES_DISCORD * frame_ms // 20) for chunk in chunks]


class HeardPcmDecoder(opus.Decoder):
    """discord.py's decoder at Cap's HEARD_PCM (its class constants size every call): code nobody here wrote,
    decoding callers as Cap hears them."""

    SAMPLING_RATE = HEARD_PCM.rate
    CHANNELS = HEARD_PCM.channels
    SAMPLES_PER_FRAME = HEARD_PCM.frame_samples
    SAMPLE_SIZE = 2 * HEARD_PCM.channels
    FRAME_SIZE = HEARD_PCM.frame_bytes


def reference_decode(packets: list[bytes]) -> list[bytes]:
    """What a fresh decoder at HEARD_PCM makes of the packets in order: the receiver must match it exactly."""
    decoder = HeardPcmDecoder()
    return [decoder.decode(packet, fec=False) for packet in packets]


def to_heard_pcm(pcm: bytes) -> bytes:
    """48 kHz stereo -> HEARD_PCM (48 kHz mono, the channels' mean): what a caller said, as Cap hears it."""
    stereo = np.frombuffer(pcm, "<i2").astype(np.int32)
    return ((stereo[0::2] + stereo[1::2]) // 2).astype("<i2").tobytes()


def spoken_frames_of(pcm: bytes) -> list[bytes]:
    """48 kHz stereo PCM as whole 20 ms SPOKEN_PCM frames (24 kHz mono): what a Discord call's playback buffer
    holds."""
    down = Downsampler()
    voice, size = down.process(pcm) + down.flush(), SPOKEN_PCM.frame_bytes
    return [voice[i : i + size].ljust(size, b"\0") for i in range(0, len(voice), size)]


class _DiscordSender:
    """The attributes discord.py's encrypt method reads, on a stand-in instead of a connected client."""

    checked_add = VoiceClient.checked_add
    encrypt = VoiceClient._encrypt_aead_xchacha20_poly1305_rtpsize

    def __init__(self, secret_key: list[int]) -> None:
        self.secret_key = secret_key
        self._incr_nonce = 0


class PacketSender:
    """One speaker's RTP stream, encrypted exactly as Discord's voice server relays it."""

    def __init__(
        self, ssrc: int, *, secret_key: list[int] = SECRET_KEY, sequence: int = 1000, timestamp: int = 50_000
    ) -> None:
        self.ssrc = ssrc
        self.sequence = sequence
        self.timestamp = timestamp
        self._sender = _DiscordSender(secret_key)

    def packet(
        self,
        payload: bytes,
        *,
        extension: bytes | None = EXTENSION_BODY,
        padding: int = 0,
        sequence: int | None = None,
        samples: int = FRAME_SAMPLES_DISCORD,
    ) -> bytes:
        """The next packet carrying `payload` (Opus or a DAVE frame); advances sequence and timestamp.

        `samples` is the payload's duration at 48 kHz (960 for Discord's usual 20 ms frames).
        """
        seq = self.sequence if sequence is None else sequence
        first = 0x80 | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
        header = struct.pack(">BBHII", first, 0x78, seq & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc)
        body = payload
        if extension is not None:
            assert len(extension) % 4 == 0
            header += struct.pack(">HH", 0xBEDE, len(extension) // 4)
            body = extension + body
        if padding:
            body += bytes(padding - 1) + bytes([padding])
        if sequence is None:
            self.sequence = (self.sequence + 1) & 0xFFFF
            self.timestamp += samples
        return self._sender.encrypt(header, body)

    def stream(self, payloads: list[bytes], **options) -> list[tuple[int, bytes]]:
        """(sequence, packet) for each payload, in order."""
        out = []
        for payload in payloads:
            seq = self.sequence
            out.append((seq, self.packet(payload, **options)))
        return out


def correlation(a: bytes, b: bytes, max_lag: int = 960, *, channels: int = 2) -> float:
    """Peak normalised cross-correlation of two s16le signals (their first channel), lags up to max_lag."""
    x = np.frombuffer(a, "<i2")[0::channels].astype(np.float64)
    y = np.frombuffer(b, "<i2")[0::channels].astype(np.float64)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    best = 0.0
    for lag in range(0, max_lag + 1, 8):
        xs, ys = x[: n - lag], y[lag:]
        denom = np.sqrt(np.dot(xs, xs) * np.dot(ys, ys))
        if denom:
            best = max(best, float(np.dot(xs, ys) / denom))
    return best


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
