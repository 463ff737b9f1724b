"""Audio DSP between Discord (48 kHz stereo s16le) and the Realtime API (24 kHz mono s16le).

Pure functions and small stateful objects on bytes: no I/O, no Discord. A transport hands the engine 20 ms
frames in its own `PcmFormat` and plays its replies in another (`TransportAudio`): the console's sound device
and WAV files use 48 kHz stereo both ways; Cap's Discord voice hears 48 kHz mono (libopus downmixes while it
decodes) and speaks the Realtime API's 24 kHz mono, which libopus encodes as it is (bot/voice/opus_decoder.py).
Everything here runs every 20 ms per stream, so the work is done by numpy and libsamplerate, never by Python
loops over samples.

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
from dataclasses import dataclass, field
from typing import Final, NoReturn

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


@dataclass(frozen=True)
class PcmFormat:
    """The s16le PCM a transport exchanges with the engine, in 20 ms frames."""

    rate: int
    channels: int
    frame_samples: int = field(init=False)  # per channel
    frame_bytes: int = field(init=False)
    silence: bytes = field(init=False, repr=False, compare=False)  # one frame of digital silence

    def __post_init__(self) -> None:
        samples = self.rate * FRAME_MS // 1000
        object.__setattr__(self, "frame_samples", samples)
        object.__setattr__(self, "frame_bytes", samples * self.channels * SAMPLE_WIDTH)
        object.__setattr__(self, "silence", bytes(self.frame_bytes))


DISCORD_PCM: Final = PcmFormat(SAMPLE_RATE_DISCORD, DISCORD_CHANNELS)
REALTIME_PCM: Final = PcmFormat(SAMPLE_RATE_REALTIME, 1)


@dataclass(frozen=True)
class TransportAudio:
    """What a transport feeds the engine (`heard`: feed_input's frames) and plays (`spoken`: the playback
    buffer's frames); the engine converts to and from the Realtime API's 24 kHz mono."""

    heard: PcmFormat
    spoken: PcmFormat


STEREO_48K_AUDIO: Final = TransportAudio(DISCORD_PCM, DISCORD_PCM)  # the console's sound device, WAV files

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

    def skip_zeros(self, samples: int) -> bytes:
        """Account for `samples` zero input samples, returning their zero output as s16le bytes, without
        running the converter. Only valid when its history is all zeros and `samples * ratio` is whole (then
        the converter's state is the same as if it had run)."""
        produced = int(samples * self.ratio)
        self._samples_in += samples
        self._samples_out += produced
        return bytes(produced * SAMPLE_WIDTH)

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


class _WholeSamples:
    """Carries a split sample (or stereo frame) from one chunk to the next, so converters see whole ones only."""

    def __init__(self, unit: int) -> None:
        self._unit = unit  # bytes per sample frame
        self._partial = b""

    def take(self, pcm: bytes) -> bytes:
        """The whole samples of what was kept plus `pcm`; a trailing split one is kept for the next chunk."""
        if self._partial:
            pcm = self._partial + pcm
        usable = len(pcm) - len(pcm) % self._unit
        self._partial = pcm[usable:]
        return pcm if usable == len(pcm) else pcm[:usable]

    def clear(self) -> None:
        self._partial = b""


class Downsampler:
    """48 kHz s16le, stereo (Discord's frames) or mono -> 24 kHz mono s16le, streaming: chunks of any size,
    even split samples."""

    # A frame of digital silence after at least this many zero input samples is converted without
    # libsamplerate: the filter's history then holds only zeros, so its output is zeros (issue 14: ~60 µs per
    # frame of a caller who is not talking, until the uplink's silence tail ends). Far more than the filter's
    # reach (sinc_fastest holds back ~20 output samples, i.e. ~40 input samples).
    _SILENT_HISTORY_SAMPLES: Final = FRAME_SAMPLES_DISCORD

    def __init__(self, converter: str = RESAMPLER_CONVERTER, channels: int = DISCORD_CHANNELS) -> None:
        if channels not in (1, 2):
            raise ValueError(f"only mono or stereo input is supported, not {channels} channels")
        self._stream = _StreamingResampler(SAMPLE_RATE_REALTIME / SAMPLE_RATE_DISCORD, converter)
        self._channels = channels
        self._whole = _WholeSamples(channels * SAMPLE_WIDTH)
        self._silence = bytes(FRAME_SAMPLES_DISCORD * channels * SAMPLE_WIDTH)  # the mixer's frame of nobody
        self._zeros_in = 0  # input samples at the end of the stream that were all zero
        self.silent_frames_skipped = 0  # frames of digital silence converted without libsamplerate

    def process(self, pcm: bytes) -> bytes:
        """Convert what is whole in `pcm` (plus any partial sample kept from the last call)."""
        pcm = self._whole.take(pcm)
        if not pcm:
            return b""
        if pcm == self._silence:  # what the mixer gives when nobody speaks (other sizes take the long way)
            if self._zeros_in >= self._SILENT_HISTORY_SAMPLES:
                self.silent_frames_skipped += 1
                return self._stream.skip_zeros(FRAME_SAMPLES_DISCORD)
            self._zeros_in += FRAME_SAMPLES_DISCORD
        else:
            self._zeros_in = 0
        samples = np.frombuffer(pcm, PCM_DTYPE).astype(np.float32)
        if self._channels == 2:
            samples = samples[0::2] + samples[1::2]
            samples *= 0.5
        return _to_pcm16(self._stream.process(samples)).tobytes()

    def flush(self) -> bytes:
        """End the stream: return the converter's held-back tail (a trailing partial sample is dropped)."""
        self._whole.clear()
        self._zeros_in = 0
        return _to_pcm16(self._stream.flush()).tobytes()

    def reset(self) -> None:
        """Drop all state, e.g. when a caller's stream restarts after a gap."""
        self._whole.clear()
        self._zeros_in = 0
        self._stream.reset()


class Upsampler:
    """24 kHz mono s16le -> 48 kHz stereo s16le, streaming: chunks of any size, even split samples."""

    def __init__(self, converter: str = RESAMPLER_CONVERTER) -> None:
        self._stream = _StreamingResampler(SAMPLE_RATE_DISCORD / SAMPLE_RATE_REALTIME, converter)
        self._whole = _WholeSamples(SAMPLE_WIDTH)

    def process(self, pcm: bytes) -> bytes:
        """Convert what is whole in `pcm` (plus any partial sample kept from the last call)."""
        pcm = self._whole.take(pcm)
        if not pcm:
            return b""
        mono = np.frombuffer(pcm, PCM_DTYPE).astype(np.float32)
        return _mono_to_stereo(_to_pcm16(self._stream.process(mono)))

    def flush(self) -> bytes:
        """End the stream: return the converter's held-back tail (a trailing partial sample is dropped)."""
        self._whole.clear()
        return _mono_to_stereo(_to_pcm16(self._stream.flush()))

    def reset(self) -> None:
        """Drop all state, e.g. on barge-in when queued playback is thrown away."""
        self._whole.clear()
        self._stream.reset()


def _mono_to_stereo(mono: np.ndarray) -> bytes:
    """Interleave L=R: repeating each sample twice is exactly the stereo frame layout."""
    return np.repeat(mono, DISCORD_CHANNELS).tobytes()


class Passthrough:
    """The converter for a transport already in the Realtime format: whole samples pass unchanged (a split
    sample waits for its other byte), the same interface as Downsampler and Upsampler."""

    def __init__(self) -> None:
        self._whole = _WholeSamples(SAMPLE_WIDTH)

    def process(self, pcm: bytes) -> bytes:
        return self._whole.take(pcm)

    def flush(self) -> bytes:
        self._whole.clear()
        return b""

    def reset(self) -> None:
        self._whole.clear()


def to_realtime(pcm: PcmFormat) -> Downsampler | Passthrough:
    """A stream converter from a transport's frames to the Realtime API's 24 kHz mono (the uplink)."""
    if pcm == REALTIME_PCM:
        return Passthrough()
    if pcm.rate == SAMPLE_RATE_DISCORD:
        return Downsampler(channels=pcm.channels)
    return _unsupported(pcm)


def from_realtime(pcm: PcmFormat) -> Upsampler | Passthrough:
    """A stream converter from the Realtime API's 24 kHz mono to a transport's frames (Cap's voice)."""
    return Passthrough() if pcm == REALTIME_PCM else Upsampler() if pcm == DISCORD_PCM else _unsupported(pcm)


def _unsupported(pcm: PcmFormat) -> NoReturn:
    raise ValueError(f"no converter between {pcm} and the Realtime API's 24 kHz mono")


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
# 48 kHz mono downmix, cut into 10 ms analysis frames: the onset can then be declared after 40 ms of
# speech, which with 20 ms delivery is two frames where 20 ms analysis needed three (issue 14).
# Measured by bench/bench_audio.py: 60 s per signal, 35 espeak-ng utterances (7 sentences x 5 voices).
#   webrtcvad + RMS floor alone (aggressiveness 3) flaps 60 times/min on -30 dBFS pink noise and stays
#   stuck in "speaking" on -20 dBFS white or pink noise, held chords and a drum pulse; stuck, it can
#   never fire again, so speech over -30 dBFS chords was missed 35/35.
#   Hence a relative floor too: an analysis frame must also be NOISE_MARGIN_DB above the 10th percentile
#   of the last second's energies (stationary noise and held chords are not). 10 ms energies spread
#   wider than 20 ms ones (their 10th percentile sits lower), so the margin is 8 dB, not the 6 dB that
#   20 ms analysis used. False onsets/min, 20 ms analysis + 60 ms onset + 6 dB -> 10 ms + 40 ms + 8 dB:
#   white -40..-20 dBFS 1 -> 0-1; pink -40 1 -> 1, -30 2 -> 1, -25 17 -> 7, -20 21 -> 10; brown -40
#   0 -> 0, -30 1 -> 2, -25 1 -> 1, -20 14 -> 15; chords, chords+drums 1 -> 1; drum pulse 1 -> 2
#   (sum over the 15 signals 64 -> 44). 10 ms + 30 ms + 6 dB would fire after 40 ms too but flaps
#   more (sum 101; pink -25 32/min), 20 ms + 40 ms + 6 dB likewise (sum 110).
#   Detection delay (first 20 ms frame above -40 dBFS to the end of the firing frame): from silence
#   median 60 -> 40 ms, max 120 -> 80 ms; over -30 dBFS pink noise or chords at 10 dB SNR median 80 ms
#   (unchanged), max 140 -> 120 ms.
#   Cost: ~20 µs per 20 ms frame of speech, ~5 µs per frame below the RMS floor (webrtcvad skipped).
VAD_SAMPLE_RATE: Final = SAMPLE_RATE_DISCORD
WEBRTCVAD_RATES: Final = (8000, 16000, 32000, 48000)
VAD_ANALYSIS_MS: Final = 10  # webrtcvad's shortest frame
DEFAULT_ONSET_MS: Final = 40  # of speech before onset: barge-in must silence playback within 100 ms
DEFAULT_HANGOVER_MS: Final = 300  # without speech ends `speaking` (re-arms the onset)
DEFAULT_MIN_RMS: Final = 100.0  # about -50 dBFS: quieter frames are never speech, whatever webrtcvad says
DEFAULT_NOISE_MARGIN_DB: Final = 8.0  # above the noise floor (10 ms energies; see above)
NOISE_WINDOW_MS: Final = 1000  # of analysis-frame energies for the noise floor
NOISE_FLOOR_SHARE: Final = 0.1  # 10th percentile of the window: robust to pauses, ignores a few loud frames


def _energy_downmix(frame: bytes, channels: int) -> np.ndarray:
    """The frame's mono downmix as int64 (an analysis piece's energy sum overflows int32)."""
    samples = np.frombuffer(frame, PCM_DTYPE).astype(np.int64)
    return samples if channels == 1 else (samples[0::2] + samples[1::2]) >> 1


def _check_frame(frame: bytes, pcm: PcmFormat) -> None:
    if len(frame) != pcm.frame_bytes:
        raise ValueError(f"expected a {pcm.frame_bytes}-byte 20 ms frame, got {len(frame)} bytes")


class SpeechOnsetDetector:
    """Cheap local VAD on a transport's inbound 20 ms frames, to start barge-in before the server notices.

    Each frame is analysed as `analysis_ms` pieces of its mono downmix. A piece counts as speech when it is
    above the absolute RMS floor, `noise_margin_db` above the recent noise floor (None disables that test)
    and webrtcvad says so (it has no 24 kHz mode: 24 kHz pieces reach it as 48 kHz with every sample twice,
    and its own 48 -> 8 kHz filter drops the images). Onset is declared after `onset_ms` of consecutive
    speech; `speaking` lasts until `hangover_ms` without speech.
    """

    def __init__(
        self,
        aggressiveness: int = 3,
        onset_ms: int = DEFAULT_ONSET_MS,
        hangover_ms: int = DEFAULT_HANGOVER_MS,
        min_rms: float = DEFAULT_MIN_RMS,
        noise_margin_db: float | None = DEFAULT_NOISE_MARGIN_DB,
        analysis_ms: int = VAD_ANALYSIS_MS,
        pcm: PcmFormat = DISCORD_PCM,
    ) -> None:
        if analysis_ms not in (10, 20):
            raise ValueError("analysis_ms must be 10 or 20 (webrtcvad frames that divide a 20 ms frame)")
        if onset_ms < analysis_ms or hangover_ms < analysis_ms:
            raise ValueError(f"onset_ms and hangover_ms must be at least analysis_ms ({analysis_ms})")
        if pcm.rate in WEBRTCVAD_RATES:
            self._vad_rate, self._vad_repeat = pcm.rate, 1
        elif VAD_SAMPLE_RATE % pcm.rate == 0:
            self._vad_rate, self._vad_repeat = VAD_SAMPLE_RATE, VAD_SAMPLE_RATE // pcm.rate
        else:
            raise ValueError(f"webrtcvad cannot judge {pcm.rate} Hz audio")
        self._vad = webrtcvad.Vad(aggressiveness)
        self._pcm = pcm
        self.analysis_ms = analysis_ms
        self._piece = pcm.rate * analysis_ms // 1000  # mono samples per analysis frame
        self.onset_ms = onset_ms
        self.hangover_ms = hangover_ms
        self._onset_pieces = -(-onset_ms // analysis_ms)
        self._hangover_pieces = -(-hangover_ms // analysis_ms)
        self.min_rms = min_rms
        self._min_energy = min_rms * min_rms * self._piece
        self._margin = None if noise_margin_db is None else 10.0 ** (noise_margin_db / 10.0)
        window = NOISE_WINDOW_MS // analysis_ms
        self._floor_rank = int(window * NOISE_FLOOR_SHARE)
        self._energies = np.zeros(window)  # starts as silence: the first sound can fire
        self._next = 0
        self._speech_run = 0
        self._silence_run = 0
        self._speaking = False

    @property
    def onset_frames(self) -> int:
        """20 ms frames of speech (at least) before an onset is declared."""
        return -(-self.onset_ms // FRAME_MS)

    @property
    def hangover_frames(self) -> int:
        """20 ms frames without speech after which `speaking` ends."""
        return -(-self.hangover_ms // FRAME_MS)

    @property
    def speaking(self) -> bool:
        """True from a declared onset until the hangover runs out."""
        return self._speaking

    def update(self, frame: bytes) -> bool:
        """Feed the next 20 ms frame; True exactly on the frame where speech onset is declared."""
        pcm = self._pcm
        _check_frame(frame, pcm)
        silent = frame == pcm.silence  # the mixer's frame when nobody speaks: no numpy needed
        if not silent:
            mono = _energy_downmix(frame, pcm.channels)
        fired = False
        for start in range(0, pcm.frame_samples, self._piece):
            if silent:
                self._record(0.0)
            if not silent and self._is_speech(mono[start : start + self._piece]):
                self._speech_run += 1
                self._silence_run = 0
                if not self._speaking and self._speech_run >= self._onset_pieces:
                    self._speaking = fired = True
                continue
            self._speech_run = 0
            if self._speaking:
                self._silence_run += 1
                if self._silence_run >= self._hangover_pieces:
                    self._speaking = False
                    self._silence_run = 0
        return fired

    def note_level(self, frame: bytes) -> None:
        """Feed a frame nobody needs an onset for (Cap is quiet): keep the noise floor current, skip webrtcvad.

        The energies go into the same window as update()'s, so the floor is right the moment Cap starts
        speaking; any speech run is forgotten, so speech already under way then counts as an onset after
        `onset_ms` of it (issue 14: ~35 µs per speech frame on the tick was spent on onsets nobody used).
        """
        pcm = self._pcm
        _check_frame(frame, pcm)
        self._speech_run = self._silence_run = 0
        self._speaking = False
        if frame == pcm.silence:
            for _ in range(pcm.frame_samples // self._piece):
                self._record(0.0)
            return
        mono = _energy_downmix(frame, pcm.channels)
        for start in range(0, pcm.frame_samples, self._piece):
            piece = mono[start : start + self._piece]
            self._record(float(np.dot(piece, piece)))

    def _record(self, energy: float) -> None:
        """One analysis piece's energy into the noise-floor window (a ring)."""
        self._energies[self._next] = energy
        self._next = (self._next + 1) % len(self._energies)

    def reset(self) -> None:
        """Forget any speech in progress and the noise floor, e.g. when the caller's stream restarts."""
        self._energies[:] = 0.0
        self._next = 0
        self._speech_run = 0
        self._silence_run = 0
        self._speaking = False

    def _is_speech(self, mono: np.ndarray) -> bool:
        """Classify one analysis frame of the mono downmix, and record its energy for the noise floor."""
        energy = float(np.dot(mono, mono))
        floor = float(np.partition(self._energies, self._floor_rank)[self._floor_rank])
        self._record(energy)
        if energy < self._min_energy or (self._margin is not None and energy < floor * self._margin):
            return False
        pcm16 = mono.astype(PCM_DTYPE)
        if self._vad_repeat > 1:
            pcm16 = np.repeat(pcm16, self._vad_repeat)
        return self._vad.is_speech(pcm16.tobytes(), self._vad_rate)
