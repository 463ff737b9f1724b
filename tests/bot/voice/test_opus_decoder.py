"""The lean decoder against discord.py's: the same calls in the same order give the same bytes (or errors), at
Discord's 48 kHz stereo and at the 24 kHz mono Cap decodes callers to (discord.py's decoder with its class rate
and channels set to HEARD_PCM)."""

from __future__ import annotations

import array
import types

import numpy as np
import pytest
from discord import opus

from bot.voice.opus_decoder import HEARD_PCM, MAX_PACKET_MS, SAMPLE_RATE, OpusDecoder, packet_samples
from bot.voice.source import ENCODER_SETTINGS, OPUS_SILENCE
from realtime.audio import DISCORD_PCM, FRAME_BYTES, FRAME_SAMPLES_DISCORD, PcmFormat
from tests.bot.voice.voice_packets import HeardPcmDecoder, fixture_pcm

Call = tuple[bytes | None, bool]  # (packet or None for PLC, fec)


FORMATS = pytest.mark.parametrize("pcm", [DISCORD_PCM, HEARD_PCM], ids=["48k-stereo", "heard-pcm"])


def client_encoder() -> opus.Encoder:
    """A Discord client's encoder: 48 kHz stereo, Cap's speech settings."""
    return opus.Encoder(**ENCODER_SETTINGS)  # type: ignore[arg-type]


def packets_of(pcm: bytes, frame_ms: int, encoder: opus.Encoder | None = None) -> list[bytes]:
    """A client's encoder (or `encoder`) over 48 kHz stereo `pcm` in packets of `frame_ms` (10, 20, 40 or 60)."""
    encoder = encoder or client_encoder()
    size = FRAME_BYTES * frame_ms // 20
    samples = FRAME_SAMPLES_DISCORD * frame_ms // 20
    return [encoder.encode(pcm[i : i + size].ljust(size, b"\0"), samples) for i in range(0, len(pcm), size)]


def outcome(decoder: opus.Decoder | OpusDecoder, call: Call) -> bytes | tuple[str, int]:
    packet, fec = call
    try:
        return decoder.decode(packet, fec=fec)
    except opus.OpusError as error:
        return ("OpusError", error.code)


def assert_same_as_discord(calls: list[Call], pcm: PcmFormat = DISCORD_PCM) -> list[bytes | tuple[str, int]]:
    """Both decoders at `pcm`, fresh, fed `calls` in order: every output (or error code) must match."""
    reference = opus.Decoder() if pcm == DISCORD_PCM else HeardPcmDecoder()
    lean = OpusDecoder(pcm)
    expected = [outcome(reference, call) for call in calls]
    got = [outcome(lean, call) for call in calls]
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        packet, fec = calls[index]
        assert have == want, f"call {index} ({'fec' if fec else 'decode'} {packet!r:.20}) differs from discord.py"
    return got


@pytest.fixture(scope="module")
def speech() -> bytes:
    return fixture_pcm("question.wav")


@FORMATS
@pytest.mark.parametrize("frame_ms", [10, 20, 40, 60])
def test_a_stream_decodes_to_discord_pys_bytes(speech: bytes, frame_ms: int, pcm: PcmFormat) -> None:
    packets = packets_of(speech, frame_ms)
    out = assert_same_as_discord([(packet, False) for packet in packets], pcm)
    assert all(len(frame) == pcm.frame_bytes * frame_ms // 20 for frame in out)  # follows the packet's length


@FORMATS
@pytest.mark.parametrize("frame_ms", [10, 20, 40, 60])
def test_fec_of_the_next_packet_and_plc_match_discord_py(speech: bytes, frame_ms: int, pcm: PcmFormat) -> None:
    packets = packets_of(speech, frame_ms)
    calls: list[Call] = []
    for index, packet in enumerate(packets):
        if index % 5 == 2 and index + 1 < len(packets):
            calls.append((packets[index + 1], True))  # this one is lost: recover it from the next one's FEC
        elif index % 5 == 4:
            calls.append((None, False))  # lost with nothing after it yet: conceal
            calls.append((None, False))
        else:
            calls.append((packet, False))
    out = assert_same_as_discord(calls, pcm)
    assert [len(frame) for frame in out if isinstance(frame, bytes)] == [pcm.frame_bytes * frame_ms // 20] * len(calls)


@FORMATS
def test_mixed_durations_silence_frames_and_celt_match_discord_py(speech: bytes, pcm: PcmFormat) -> None:
    """A sender may change frame size mid-stream; PLC then lasts as long as the last packet did."""
    encoder = client_encoder()
    celt = packets_of(speech[: FRAME_BYTES * 10], 20, opus.Encoder(application="lowdelay"))
    chunks = [packets_of(speech[i * 12000 : (i + 1) * 12000], ms, encoder) for i, ms in enumerate([60, 10, 40, 20])]
    calls: list[Call] = [(None, False)]  # PLC before any packet: discord.py's 20 ms default
    for chunk in chunks:
        calls += [(packet, False) for packet in chunk[:-1]] + [(None, False), (chunk[-1], True), (chunk[-1], False)]
    calls += [(OPUS_SILENCE, False), (None, False), (celt[1], True), (celt[1], False), (None, False)]
    calls += [(packet, False) for packet in celt[2:]]
    assert_same_as_discord(calls, pcm)


@FORMATS
def test_corrupt_packets_raise_the_same_errors_and_leave_the_same_state(speech: bytes, pcm: PcmFormat) -> None:
    packets = packets_of(speech[: FRAME_BYTES * 8], 20)
    corrupt = [
        b"",  # empty: discord.py's opus_packet_get_nb_frames says OPUS_BAD_ARG
        b"\x03",  # code 3 without its frame count byte
        b"\x03\x00",  # code 3 with zero frames
        b"\xff\xff\xff",  # code 3, 63 CELT frames of 20 ms: far beyond 120 ms, bigger than the reused buffer
        b"\x7b\xbf" + bytes(40),  # code 3, 63 hybrid frames, VBR
        packets[3][:2],  # truncated
        bytes([packets[3][0] | 0x03, 0x02]) + packets[3][1:],  # a real payload under a lying header
    ]
    assert packet_samples(b"\xff\xff\xff") > SAMPLE_RATE * MAX_PACKET_MS // 1000
    calls: list[Call] = [(packets[0], False)]
    for bad in corrupt:
        calls += [(bad, False), (None, False), (bad, True), (packets[1], False)]
    calls += [(packet, False) for packet in packets[2:]]
    out = assert_same_as_discord(calls, pcm)
    assert sum(isinstance(result, tuple) for result in out) >= len(corrupt)  # they do raise


def test_fec_without_a_packet_is_a_type_error_like_discord_py() -> None:
    with pytest.raises(TypeError):
        opus.Decoder().decode(None, fec=True)
    with pytest.raises(TypeError):
        OpusDecoder().decode(None, fec=True)


@pytest.mark.parametrize("length", [1, 2, 3])
def test_packet_samples_agrees_with_libopus_for_every_header(length: int) -> None:
    """The TOC parse in Python gives libopus's nb_frames x samples_per_frame, or its error code."""
    for first in range(256):
        for second in range(256) if length > 1 else [None]:
            packet = bytes([first]) + (bytes([second, 0][: length - 1]) if second is not None else b"")
            try:
                want: int | tuple[str, int] = opus.Decoder.packet_get_nb_frames(
                    packet
                ) * opus.Decoder.packet_get_samples_per_frame(packet)
            except opus.OpusError as error:
                want = ("OpusError", error.code)
            try:
                have: int | tuple[str, int] = packet_samples(packet)
            except opus.OpusError as error:
                have = ("OpusError", error.code)
            assert have == want, packet


def test_close_frees_the_state_once_and_a_closed_decoder_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    destroyed = []
    real_destroy = opus._lib.opus_decoder_destroy
    monkeypatch.setattr(opus._lib, "opus_decoder_destroy", lambda state: (destroyed.append(state), real_destroy(state)))
    decoder = OpusDecoder()
    decoder.close()
    decoder.close()
    assert len(destroyed) == 1
    with pytest.raises(ValueError):
        decoder.decode(OPUS_SILENCE)
    OpusDecoder()  # dropped at once: __del__ frees it
    assert len(destroyed) == 2


def test_discord_py_still_copies_decoded_pcm_through_a_python_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin: discord.py 2.7.1's Decoder.decode returns `array.array('h', pcm[:ret * channels]).tobytes()`,
    and slicing a ctypes array builds a list of Python ints (1920 per 20 ms). That copy (plus two ctypes
    calls and a fresh buffer per call) is why bot/voice/opus_decoder.py exists. If this fails, discord.py
    changed how it decodes: measure again whether OpusDecoder still earns its place."""
    copied_from: list[type] = []

    def spy(typecode: str, initializer: object) -> array.array:
        copied_from.append(type(initializer))
        return array.array(typecode, initializer)  # type: ignore[arg-type]

    packet = client_encoder().encode(bytes(FRAME_BYTES), FRAME_SAMPLES_DISCORD)  # the encoder uses array too
    monkeypatch.setattr(opus, "array", types.SimpleNamespace(array=spy))
    pcm = opus.Decoder().decode(packet, fec=False)
    assert copied_from == [list]
    assert len(pcm) == FRAME_BYTES


@pytest.mark.parametrize("freq", [12500, 13000])
def test_libopus_decoding_at_24_khz_would_let_aliases_through(freq: int) -> None:
    """Why Cap decodes at 48 kHz and leaves the rate to libsamplerate (≥ 60 dB, realtime/audio.py's bar): libopus
    1.3's own 24 kHz decode, cheaper by the Downsampler's ~60 µs a frame, lets a caller's 12.5 kHz tone through
    at about -39 dB and a 13 kHz one at about -57 dB. If a libopus upgrade meets the bar, this fails: measure the
    24 kHz decode again."""
    amplitude = 8000
    t = np.arange(48000) / 48000
    pcm = np.repeat((amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2"), 2).tobytes()
    packets = packets_of(pcm, 20, opus.Encoder(application="audio", bitrate=128))  # a full-band client
    decoder = OpusDecoder(PcmFormat(24000, 1))
    out = np.frombuffer(b"".join(decoder.decode(packet) for packet in packets), "<i2")[4800:].astype(float)
    assert 20 * np.log10(np.sqrt(np.mean(out**2)) / (amplitude / np.sqrt(2))) > -60
