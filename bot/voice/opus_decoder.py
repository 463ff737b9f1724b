"""One libopus decoder state, decoding straight into a reused buffer: discord.py's output, less Python.

discord.py 2.7.1's `opus.Decoder.decode` sizes each call with two more ctypes calls
(`opus_packet_get_nb_frames`, `opus_packet_get_samples_per_frame`, each dropping and re-taking the GIL),
allocates a new ctypes array, and copies the PCM out through a Python list
(`array.array('h', pcm[:ret * channels])`: 1920 Python ints per 20 ms frame). Measured on one core:
131 µs per 20 ms speech frame there against 58 µs here (`opus_decode` into a preallocated buffer, the
frame size read from the packet's TOC byte in Python, copied out with one `ctypes.string_at`): about 5 %
of a core on the event loop at 32 calls. tests/bot/voice/test_opus_decoder.py checks the bytes are
identical to discord.py's and fails once discord.py stops copying through a list.

The PCM of Cap's Opus (VOICE_AUDIO), chosen by cost and by the quality bar of realtime/audio.py (aliases and
images at least 60 dB down), issue 14:
- Callers are decoded at 48 kHz mono (HEARD_PCM): libopus downmixes inside the decoder, the Downsampler
  skips its own downmix, and libsamplerate still makes the 24 kHz uplink. 39 + 63 µs per frame here against
  55 + 66 µs for 48 kHz stereo. Decoding at 24 kHz would cost only 36 µs and no resampler, but libopus lets a
  12.5 kHz tone through at -39 dB (13 kHz: -57 dB): below the bar, so not done.
- Cap's voice is encoded from the Realtime API's 24 kHz mono as it is (SPOKEN_PCM, bot/voice/source.py).
"""

from __future__ import annotations

import ctypes
from typing import Final

from discord import opus

from realtime.audio import DISCORD_PCM, REALTIME_PCM, SAMPLE_WIDTH, PcmFormat, TransportAudio

SAMPLE_RATE: Final = 48000  # Opus's own clock: packet durations and RTP timestamps count 48 kHz samples
HEARD_PCM: Final = PcmFormat(SAMPLE_RATE, 1)  # what Cap decodes callers to
SPOKEN_PCM: Final = REALTIME_PCM  # what Cap encodes its voice from
VOICE_AUDIO: Final = TransportAudio(HEARD_PCM, SPOKEN_PCM)  # a Discord call's engine session
MAX_PACKET_MS: Final = 120  # the longest packet Opus allows (RFC 6716 §3.2.5)
PLC_DEFAULT_MS: Final = 20  # discord.py conceals 20 ms when libopus knows no last duration
OPUS_BAD_ARG: Final = -1  # opus_defines.h
OPUS_INVALID_PACKET: Final = -4
OPUS_GET_LAST_PACKET_DURATION: Final = 4039


def packet_samples(packet: bytes) -> int:
    """Samples per channel at 48 kHz the packet holds: libopus's nb_frames x samples_per_frame, from the TOC.

    Raises OpusError with the code libopus would (discord.py asks libopus for both through ctypes).
    """
    if not packet:
        raise opus.OpusError(OPUS_BAD_ARG)
    toc = packet[0]
    if toc & 0x80:  # CELT: 2.5, 5, 10 or 20 ms
        per_frame = (SAMPLE_RATE << ((toc >> 3) & 0x3)) // 400
    elif toc & 0x60 == 0x60:  # hybrid: 10 or 20 ms
        per_frame = SAMPLE_RATE // 50 if toc & 0x08 else SAMPLE_RATE // 100
    else:  # SILK: 10, 20, 40 or 60 ms
        size = (toc >> 3) & 0x3
        per_frame = SAMPLE_RATE * 60 // 1000 if size == 3 else (SAMPLE_RATE << size) // 100
    code = toc & 0x3
    if code == 0:
        frames = 1
    elif code != 3:
        frames = 2
    elif len(packet) < 2:
        raise opus.OpusError(OPUS_INVALID_PACKET)
    else:
        frames = packet[1] & 0x3F
    return frames * per_frame


class OpusDecoder:
    """s16le at `pcm`'s rate and channels; at DISCORD_PCM (48 kHz stereo) byte-identical to
    `discord.opus.Decoder.decode` for the same calls in order.

    `decode(packet)` decodes a packet of any duration; `decode(next_packet, fec=True)` recovers a lost
    packet from the next one's FEC data (as discord.py does, with the next packet's duration); `decode(None)`
    conceals (PLC) for the last packet's duration. Errors raise `discord.opus.OpusError`.
    """

    def __init__(self, pcm: PcmFormat = DISCORD_PCM) -> None:
        if SAMPLE_RATE % pcm.rate or pcm.channels not in (1, 2):
            raise ValueError(f"libopus cannot decode to {pcm}")
        opus._OpusStruct.get_opus_version()  # loads libopus the way discord.py does, or raises OpusNotLoaded
        self._lib = opus._lib
        error = ctypes.c_int()
        # discord.py's errcheck on opus_decoder_create raises OpusError unless `error` is OPUS_OK.
        self._state = self._lib.opus_decoder_create(pcm.rate, pcm.channels, ctypes.byref(error))
        self._per_48k = SAMPLE_RATE // pcm.rate  # packet durations are counted at 48 kHz
        self._channels = pcm.channels
        self._bytes_per_sample = SAMPLE_WIDTH * pcm.channels
        self._max_samples = pcm.rate * MAX_PACKET_MS // 1000
        self._plc_samples = pcm.rate * PLC_DEFAULT_MS // 1000
        self._buffer = (ctypes.c_int16 * (self._max_samples * pcm.channels))()
        self._duration = ctypes.c_int32()

    def decode(self, data: bytes | None, *, fec: bool = False) -> bytes:
        state = self._state
        if state is None:  # libopus would be handed a freed (NULL) state
            raise ValueError("decode on a closed OpusDecoder")
        if data is None:
            if fec:
                raise TypeError("Invalid arguments: FEC cannot be used with null data")
            frame_size = self._last_packet_duration() or self._plc_samples
        else:
            # With fec, `data` is the packet after the lost one and, like discord.py, we ask for its whole
            # duration: libopus conceals all but its last frame with PLC, then fills that frame from the
            # FEC data (one frame of the next packet's frame size; CELT packets carry none: all PLC).
            frame_size = packet_samples(data) // self._per_48k
        buffer = self._buffer
        if frame_size > self._max_samples:  # an invalid packet: libopus rejects it; size as discord.py does
            buffer = (ctypes.c_int16 * (frame_size * self._channels))()
        # opus_decode's errcheck (set by discord.py's loader) raises OpusError on a negative return.
        samples = self._lib.opus_decode(state, data, len(data) if data else 0, buffer, frame_size, fec)
        return ctypes.string_at(buffer, samples * self._bytes_per_sample)

    def _last_packet_duration(self) -> int:
        """Samples per channel of the last packet decoded or concealed at this decoder's rate (0 before any)."""
        self._lib.opus_decoder_ctl(self._state, OPUS_GET_LAST_PACKET_DURATION, ctypes.byref(self._duration))
        return self._duration.value

    def close(self) -> None:
        """Free the libopus state (idempotent; `__del__` calls it too)."""
        state, self._state = getattr(self, "_state", None), None
        if state is not None:
            self._lib.opus_decoder_destroy(state)

    def __del__(self) -> None:
        self.close()
