"""One libopus decoder state, decoding straight into a reused buffer: discord.py's output, less Python.

discord.py 2.7.1's `opus.Decoder.decode` sizes each call with two more ctypes calls
(`opus_packet_get_nb_frames`, `opus_packet_get_samples_per_frame`, each dropping and re-taking the GIL),
allocates a new ctypes array, and copies the PCM out through a Python list
(`array.array('h', pcm[:ret * channels])`: 1920 Python ints per 20 ms frame). Measured on one core:
131 µs per 20 ms speech frame there against 58 µs here (`opus_decode` into a preallocated buffer, the
frame size read from the packet's TOC byte in Python, copied out with one `ctypes.string_at`): about 5 %
of a core on the event loop at 32 calls. tests/bot/voice/test_opus_decoder.py checks the bytes are
identical to discord.py's and fails once discord.py stops copying through a list.
"""

from __future__ import annotations

import ctypes
from typing import Final

from discord import opus

SAMPLE_RATE: Final = 48000
CHANNELS: Final = 2
BYTES_PER_SAMPLE: Final = 2 * CHANNELS  # s16le stereo
MAX_FRAME_SAMPLES: Final = 5760  # 120 ms at 48 kHz: the longest packet Opus allows (RFC 6716 §3.2.5)
PLC_DEFAULT_SAMPLES: Final = 960  # discord.py conceals 20 ms when libopus knows no last duration
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
    """48 kHz stereo s16le, byte-identical to `discord.opus.Decoder.decode` for the same calls in order.

    `decode(packet)` decodes a packet of any duration; `decode(next_packet, fec=True)` recovers a lost
    packet from the next one's FEC data (as discord.py does, with the next packet's duration); `decode(None)`
    conceals (PLC) for the last packet's duration. Errors raise `discord.opus.OpusError`.
    """

    def __init__(self) -> None:
        opus._OpusStruct.get_opus_version()  # loads libopus the way discord.py does, or raises OpusNotLoaded
        self._lib = opus._lib
        error = ctypes.c_int()
        # discord.py's errcheck on opus_decoder_create raises OpusError unless `error` is OPUS_OK.
        self._state = self._lib.opus_decoder_create(SAMPLE_RATE, CHANNELS, ctypes.byref(error))
        self._buffer = (ctypes.c_int16 * (MAX_FRAME_SAMPLES * CHANNELS))()
        self._duration = ctypes.c_int32()

    def decode(self, data: bytes | None, *, fec: bool = False) -> bytes:
        state = self._state
        if state is None:  # libopus would be handed a freed (NULL) state
            raise ValueError("decode on a closed OpusDecoder")
        if data is None:
            if fec:
                raise TypeError("Invalid arguments: FEC cannot be used with null data")
            frame_size = self._last_packet_duration() or PLC_DEFAULT_SAMPLES
        else:
            # With fec, `data` is the packet after the lost one and, like discord.py, we ask for its whole
            # duration: libopus conceals all but its last frame with PLC, then fills that frame from the
            # FEC data (one frame of the next packet's frame size; CELT packets carry none: all PLC).
            frame_size = packet_samples(data)
        buffer = self._buffer
        if frame_size > MAX_FRAME_SAMPLES:  # an invalid packet: libopus rejects it; size as discord.py does
            buffer = (ctypes.c_int16 * (frame_size * CHANNELS))()
        # opus_decode's errcheck (set by discord.py's loader) raises OpusError on a negative return.
        samples = self._lib.opus_decode(state, data, len(data) if data else 0, buffer, frame_size, fec)
        return ctypes.string_at(buffer, samples * BYTES_PER_SAMPLE)

    def _last_packet_duration(self) -> int:
        """Samples of the last packet decoded or concealed, as libopus counts them (0 before any)."""
        self._lib.opus_decoder_ctl(self._state, OPUS_GET_LAST_PACKET_DURATION, ctypes.byref(self._duration))
        return self._duration.value

    def close(self) -> None:
        """Free the libopus state (idempotent; `__del__` calls it too)."""
        state, self._state = getattr(self, "_state", None), None
        if state is not None:
            self._lib.opus_decoder_destroy(state)

    def __del__(self) -> None:
        self.close()
