"""Audio DSP between Discord (48 kHz stereo s16le) and the Realtime API (24 kHz mono s16le).

Pure functions and small stateful objects on bytes: no I/O, no Discord. Everything here runs every
20 ms per stream, so the work is done by numpy and libsamplerate, never by Python loops over samples.

Converter choice, measured by bench/bench_audio.py (which re-measures all of it; one core, numpy 2.4):
quality bar = passband to 6 kHz within 1 dB, aliases of 12-24 kHz inputs and images above 12 kHz at
least 60 dB down. The cheapest sinc converter, libsamplerate's `sinc_fastest`, passes with margin:
  48k stereo -> 24k mono: 0.0 dB at 1-6 kHz, -0.5 dB at 9 kHz, -6.3 dB at 10 kHz; tones of
                          12.05-23.5 kHz come out 100-130 dB down with 1 s tones in float, -87 dB in
                          the bench (the int16 rounding floor, same for sinc_medium and sinc_best).
  24k mono -> 48k stereo: same passband; energy above 12 kHz at most -95 dB re the input tone.
  cost per 20 ms frame:   ~47 µs down, ~56 µs up here (ARCHITECTURE.md's machine: 95-130 µs);
                          sinc_medium ~95/100 µs, sinc_best ~280/290 µs; naive numpy floor 2-3 µs.
  linear / zero_order_hold (~9-12 µs) fail: aliases at 0 dB, images at -4 to -7 dB.
sinc_medium/sinc_best only extend the flat passband from ~8 kHz to ~11 kHz, which conversational
speech does not need. The converter holds back ~20 output samples (<1 ms) while streaming.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import samplerate
import webrtcvad

SAMPLE_RATE_DISCORD: Final = 48000
SAMPLE_RATE_REALTIME: Final = 24000
FRAME_MS: Final = 20
SAMPLE_WIDTH: Final = 2  # s16le
DISCORD_CHANNELS: Final = 2
FRAME_SAMPLES_DISCORD: Final = SAMPLE_RATE_DISCORD * FRAME_MS // 1000  # 960 per channel
# 20 ms of 48 kHz stereo s16le: what Discord's Opus decoder gives and AudioSource.read() must return.
FRAME_BYTES: Final = FRAME_SAMPLES_DISCORD * DISCORD_CHANNELS * SAMPLE_WIDTH  # 3840
# 20 ms of 24 kHz mono s16le: the Realtime API's input/output audio format.
REALTIME_FRAME_BYTES: Final = SAMPLE_RATE_REALTIME * FRAME_MS // 1000 * SAMPLE_WIDTH  # 960
SILENCE_FRAME: Final = bytes(FRAME_BYTES)

# Cheapest libsamplerate converter that meets the quality bar (figures in the module docstring).
RESAMPLER_CONVERTER: Final = "sinc_fastest"
INT16_MIN: Final = -32768
INT16_MAX: Final = 32767
PCM_DTYPE: Final = np.dtype("<i2")
# Zero input fed per round when flushing the samples the sinc filter holds back (more than any converter's).
_FLUSH_PAD_SAMPLES: Final = 1024
_FLUSH_MAX_ROUNDS: Final = 8


def _to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Round float samples at int16 scale and saturate, so full-scale input never wraps around."""
    out = np.rint(samples)
    np.clip(out, INT16_MIN, INT16_MAX, out=out)
    return out.astype(PCM_DTYPE)


class _StreamingResampler:
    """libsamplerate stream that can be flushed: the binding's end_of_input cannot emit the held-back tail."""

    def __init__(self, ratio: float, converter: str = RESAMPLER_CONVERTER) -> None:
        self.ratio = ratio
        self._resampler = samplerate.Resampler(converter, 1)
        self._samples_in = 0
        self._samples_out = 0

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample one chunk of float32 mono samples (int16 scale; libsamplerate is linear)."""
        self._samples_in += len(samples)
        out = self._resampler.process(samples, self.ratio)
        self._samples_out += len(out)
        return out

    def flush(self) -> np.ndarray:
        """Emit the tail so the stream totals floor(n_in * ratio) samples, as a one-shot conversion does."""
        missing = int(self._samples_in * self.ratio) - self._samples_out
        tail = []
        for _ in range(_FLUSH_MAX_ROUNDS):  # bounded: one or two rounds in practice
            if missing <= 0:
                break
            out = self._resampler.process(np.zeros(_FLUSH_PAD_SAMPLES, np.float32), self.ratio)[:missing]
            tail.append(out)
            missing -= len(out)
        self.reset()
        return np.concatenate(tail) if tail else np.zeros(0, np.float32)

    def reset(self) -> None:
        """Forget the stream: the next sample starts a new one."""
        self._resampler.reset()
        self._samples_in = 0
        self._samples_out = 0


class Downsampler:
    """48 kHz stereo s16le -> 24 kHz mono s16le, streaming: chunks of any size, even split samples."""

    _BYTES_PER_FRAME: Final = DISCORD_CHANNELS * SAMPLE_WIDTH

    def __init__(self, converter: str = RESAMPLER_CONVERTER) -> None:
        self._stream = _StreamingResampler(SAMPLE_RATE_REALTIME / SAMPLE_RATE_DISCORD, converter)
        self._partial = b""

    def process(self, pcm: bytes) -> bytes:
        """Convert what is whole in `pcm` (plus any partial sample kept from the last call)."""
        if self._partial:
            pcm = self._partial + pcm
        usable = len(pcm) - len(pcm) % self._BYTES_PER_FRAME
        self._partial = pcm[usable:]
        if not usable:
            return b""
        stereo = np.frombuffer(pcm, PCM_DTYPE, usable // SAMPLE_WIDTH).astype(np.float32)
        mono = stereo[0::2] + stereo[1::2]
        mono *= 0.5
        return _to_pcm16(self._stream.process(mono)).tobytes()

    def flush(self) -> bytes:
        """End the stream: return the converter's held-back tail (a trailing partial sample is dropped)."""
        self._partial = b""
        return _to_pcm16(self._stream.flush()).tobytes()

    def reset(self) -> None:
        """Drop all state, e.g. when a caller's stream restarts after a gap."""
        self._partial = b""
        self._stream.reset()


class Upsampler:
    """24 kHz mono s16le -> 48 kHz stereo s16le, streaming: chunks of any size, even split samples."""

    def __init__(self, converter: str = RESAMPLER_CONVERTER) -> None:
        self._stream = _StreamingResampler(SAMPLE_RATE_DISCORD / SAMPLE_RATE_REALTIME, converter)
        self._partial = b""

    def process(self, pcm: bytes) -> bytes:
        """Convert what is whole in `pcm` (plus any partial sample kept from the last call)."""
        if self._partial:
            pcm = self._partial + pcm
        usable = len(pcm) - len(pcm) % SAMPLE_WIDTH
        self._partial = pcm[usable:]
        if not usable:
            return b""
        mono = np.frombuffer(pcm, PCM_DTYPE, usable // SAMPLE_WIDTH).astype(np.float32)
        return _mono_to_stereo(_to_pcm16(self._stream.process(mono)))

    def flush(self) -> bytes:
        """End the stream: return the converter's held-back tail (a trailing partial sample is dropped)."""
        self._partial = b""
        return _mono_to_stereo(_to_pcm16(self._stream.flush()))

    def reset(self) -> None:
        """Drop all state, e.g. on barge-in when queued playback is thrown away."""
        self._partial = b""
        self._stream.reset()


def _mono_to_stereo(mono: np.ndarray) -> bytes:
    """Interleave L=R: repeating each sample twice is exactly the stereo frame layout."""
    return np.repeat(mono, DISCORD_CHANNELS).tobytes()


class Framer:
    """Cuts a byte stream into exact fixed-size frames: Discord and the VAD want exactly 20 ms."""

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        if frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be positive, not {frame_bytes}")
        self.frame_bytes = frame_bytes
        self._buffer = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes waiting for a frame to fill up."""
        return len(self._buffer)

    def push(self, data: bytes) -> list[bytes]:
        """Add data and return every frame now complete (possibly none)."""
        self._buffer += data
        size = self.frame_bytes
        whole = len(self._buffer) - len(self._buffer) % size
        if not whole:
            return []
        frames = [bytes(self._buffer[start : start + size]) for start in range(0, whole, size)]
        del self._buffer[:whole]
        return frames

    def flush(self) -> bytes | None:
        """Return the remainder zero-padded (silence) to a full frame, or None if nothing is pending."""
        if not self._buffer:
            return None
        frame = bytes(self._buffer) + bytes(self.frame_bytes - len(self._buffer))
        self._buffer.clear()
        return frame

    def reset(self) -> None:
        """Drop whatever is pending."""
        self._buffer.clear()


def to_discord_pcm(pcm: bytes, sample_rate: int, channels: int) -> bytes:
    """Any PCM16 (mono or stereo, any rate) -> 48 kHz stereo s16le in one shot (console mode's WAV files).

    A trailing partial sample frame is dropped.
    """
    if channels not in (1, 2):
        raise ValueError(f"only mono or stereo PCM is supported, not {channels} channels")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, not {sample_rate}")
    frame_size = channels * SAMPLE_WIDTH
    samples = np.frombuffer(pcm, PCM_DTYPE, len(pcm) // frame_size * channels)
    if sample_rate != SAMPLE_RATE_DISCORD and len(samples):
        floats = samples.astype(np.float32)
        shaped = floats.reshape(-1, channels) if channels > 1 else floats
        resampled = samplerate.resample(shaped, SAMPLE_RATE_DISCORD / sample_rate, RESAMPLER_CONVERTER)
        samples = _to_pcm16(resampled).reshape(-1)
    if channels == 1:
        return _mono_to_stereo(samples)
    return samples.tobytes()


def mix_frames(frames: Sequence[bytes]) -> bytes:
    """Saturating sum of equal-length s16le frames: several callers mixed into one without wraparound."""
    if not frames:
        return SILENCE_FRAME
    size = len(frames[0])
    if any(len(frame) != size for frame in frames):
        raise ValueError(f"frames differ in length: {sorted({len(frame) for frame in frames})}")
    if len(frames) == 1:
        return bytes(frames[0])
    stacked = np.frombuffer(b"".join(frames), PCM_DTYPE).reshape(len(frames), -1)
    total = stacked.sum(axis=0, dtype=np.int32)
    np.clip(total, INT16_MIN, INT16_MAX, out=total)
    return total.astype(PCM_DTYPE).tobytes()


def frame_rms(frame: bytes) -> float:
    """Root mean square of the s16le samples in `frame` (0.0 when empty), channels pooled."""
    samples = np.frombuffer(frame, PCM_DTYPE, len(frame) // SAMPLE_WIDTH).astype(np.float64)
    if not len(samples):
        return 0.0
    return float(np.sqrt(np.dot(samples, samples) / len(samples)))


def rms_to_dbfs(rms: float) -> float:
    """RMS as dB relative to int16 full scale (a full-scale square wave is 0 dBFS; a sine is -3)."""
    return 20.0 * float(np.log10(max(rms, 1e-9) / -INT16_MIN))


# SpeechOnsetDetector. webrtcvad takes 10/20/30 ms frames at 8/16/32/48 kHz (not 24 kHz), so it gets the
# 48 kHz mono downmix. Measured by bench/bench_audio.py: 60 s per signal, 35 espeak-ng utterances
# (7 sentences x 5 voices), defaults below; onsets/min include the one when each sound starts.
#   webrtcvad + RMS floor alone (aggressiveness 3) flaps 60 times/min on -30 dBFS pink noise and stays
#   stuck in "speaking" on -20 dBFS white or pink noise, held chords and a drum pulse; stuck, it can
#   never fire again, so speech over -30 dBFS chords was missed 35/35.
#   Hence a relative floor too: a frame must also be NOISE_MARGIN_DB above the 10th percentile of the
#   last second's frame energies (stationary noise and held chords are not). With it, onsets/min:
#   white noise -40..-20 dBFS 0-1; pink -40/-30 2, pink -25/-20 18-22; brown -40..-25 0-2, brown -20
#   10; chords, drum pulse, chords+drums at -20 dBFS 1 each. The drum pulse still keeps it "speaking"
#   (each kick rises far above the quiet between beats, and webrtcvad calls kicks speech).
#   Detection delay (first frame above -40 dBFS to the end of the firing frame): from silence median
#   60 ms, max 120 ms; over -30 dBFS pink noise or chords at 10 dB SNR median 80 ms, max 120-140 ms.
#   Cost: ~15 µs per frame of speech, ~4 µs per frame below the RMS floor (webrtcvad skipped).
VAD_SAMPLE_RATE: Final = SAMPLE_RATE_DISCORD
DEFAULT_ONSET_FRAMES: Final = 3  # 60 ms of speech: barge-in must silence playback within 150 ms
DEFAULT_HANGOVER_FRAMES: Final = 15  # 300 ms without speech ends `speaking` (re-arms the onset)
DEFAULT_MIN_RMS: Final = 100.0  # about -50 dBFS: quieter frames are never speech, whatever webrtcvad says
DEFAULT_NOISE_MARGIN_DB: Final = 6.0  # 8 dB: 1/3 of the loud-pink onsets, but speech in music up to 440 ms
NOISE_WINDOW_FRAMES: Final = 50  # 1 s of frame energies for the noise floor
NOISE_FLOOR_RANK: Final = 5  # 10th percentile of the window: robust to pauses, ignores a few loud frames


class SpeechOnsetDetector:
    """Cheap local VAD on inbound 48 kHz stereo 20 ms frames, to start barge-in before the server notices.

    A frame counts as speech when it is above the absolute RMS floor, `noise_margin_db` above the
    recent noise floor (None disables that test) and webrtcvad says so. Onset is declared after
    `onset_frames` consecutive speech frames; `speaking` lasts until `hangover_frames` non-speech ones.
    """

    def __init__(
        self,
        aggressiveness: int = 3,
        onset_frames: int = DEFAULT_ONSET_FRAMES,
        hangover_frames: int = DEFAULT_HANGOVER_FRAMES,
        min_rms: float = DEFAULT_MIN_RMS,
        noise_margin_db: float | None = DEFAULT_NOISE_MARGIN_DB,
    ) -> None:
        if onset_frames < 1 or hangover_frames < 1:
            raise ValueError("onset_frames and hangover_frames must be at least 1")
        self._vad = webrtcvad.Vad(aggressiveness)
        self.onset_frames = onset_frames
        self.hangover_frames = hangover_frames
        self.min_rms = min_rms
        self._min_energy = min_rms * min_rms * FRAME_SAMPLES_DISCORD
        self._margin = None if noise_margin_db is None else 10.0 ** (noise_margin_db / 10.0)
        self._energies = np.zeros(NOISE_WINDOW_FRAMES)  # starts as silence: the first sound can fire
        self._next = 0
        self._speech_run = 0
        self._silence_run = 0
        self._speaking = False

    @property
    def speaking(self) -> bool:
        """True from a declared onset until the hangover runs out."""
        return self._speaking

    def update(self, frame: bytes) -> bool:
        """Feed the next 20 ms frame; True exactly on the frame where speech onset is declared."""
        if self._is_speech(frame):
            self._speech_run += 1
            self._silence_run = 0
            if not self._speaking and self._speech_run >= self.onset_frames:
                self._speaking = True
                return True
            return False
        self._speech_run = 0
        if self._speaking:
            self._silence_run += 1
            if self._silence_run >= self.hangover_frames:
                self._speaking = False
                self._silence_run = 0
        return False

    def reset(self) -> None:
        """Forget any speech in progress and the noise floor, e.g. when the caller's stream restarts."""
        self._energies[:] = 0.0
        self._next = 0
        self._speech_run = 0
        self._silence_run = 0
        self._speaking = False

    def _is_speech(self, frame: bytes) -> bool:
        """Classify one frame on its mono downmix, and record its energy for the noise floor."""
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"expected a {FRAME_BYTES}-byte 20 ms frame, got {len(frame)} bytes")
        stereo = np.frombuffer(frame, PCM_DTYPE).astype(np.int64)  # int64: the energy sum overflows int32
        mono = (stereo[0::2] + stereo[1::2]) >> 1
        energy = float(np.dot(mono, mono))
        floor = float(np.partition(self._energies, NOISE_FLOOR_RANK)[NOISE_FLOOR_RANK])
        self._energies[self._next] = energy
        self._next = (self._next + 1) % NOISE_WINDOW_FRAMES
        if energy < self._min_energy or (self._margin is not None and energy < floor * self._margin):
            return False
        return self._vad.is_speech(mono.astype(PCM_DTYPE).tobytes(), VAD_SAMPLE_RATE)
