"""Adaptive per-speaker jitter buffer and Opus decoding, in the spirit of WebRTC's NetEq.

Discord sends nothing while someone is silent, so "no packet" is the normal state between talk spurts;
a gap in the *sequence numbers* is a real loss. Time here is the 20 ms tick (`now`), and each packet's
arrival tick is recorded. The rules:

- Target delay: each packet's delay relative to the fastest packet of the last 2 s is measured from its
  RTP timestamp (`DelayEstimator`); the target is the 97th percentile of those delays plus one frame,
  with old packets slowly forgotten. On a clean stream that is one frame: a packet plays on the tick it
  arrives. Late packets grow it at once; a calm network shrinks it over a few seconds.
- A talk spurt starts `target - 1` ticks after its first packet arrived.
- Underrun (the due packet is missing and nothing later has arrived): conceal with PLC *without* using up
  the slot. If the due packet then arrives, it plays (the delay grew: that is how the buffer adapts
  mid-spurt). If a later packet arrives instead, the concealed frames stood in for the lost slots and the
  later packet plays exactly where it belongs. After MAX_CONCEALED such frames the speaker is silent.
- A hole with later packets queued: conceal every lost slot in place (FEC from the next packet when it
  is there, else PLC), so a loss never shifts the timing - unless the buffer holds less than the target
  delay: then it waits for the due packet instead (PLC without using up the slot), growing to the target.
- Shrinking: when every recent packet waited at least a tick longer than needed and the target is
  still queued, `SpeakerDecoder` drops a quiet decoded frame (a pause): the delay shrinks only in
  silence, never by cutting speech or by moving concealed losses.
- Growing: underrun concealment and waiting below the target (above), and each new talk spurt primed
  to the current target.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Final, NamedTuple

import numpy as np

from bot.voice.opus_decoder import HEARD_PCM, OpusDecoder
from bot.voice.rtp import sequence_delta
from realtime.audio import FRAME_SAMPLES_DISCORD, PcmFormat

SAMPLES_PER_TICK: Final = FRAME_SAMPLES_DISCORD  # RTP timestamps count 48 kHz samples
MIN_DELAY: Final = 1  # ticks: the packet plays on the tick it arrives
MAX_DELAY: Final = 10  # 200 ms: beyond this a packet counts as lost rather than waited for
MAX_PACKETS: Final = 64  # 1.3 s: more means a stall or a fast sender clock; trim back to target + 1
MAX_CONCEALED: Final = 3  # PLC frames after the last packet before the speaker counts as silent
RESTART_DISTANCE: Final = 100  # a jump of 2 s or more is a new stream (backwards: only between talk spurts)
DELAY_QUANTILE: Final = 0.97  # the share of packets the target delay lets play on time
FORGET_PER_PACKET: Final = 0.99  # the delay histogram's memory: ~100 packets (2 s) carry most weight
REFERENCE_WINDOW_TICKS: Final = 100  # delays are measured against the fastest packet of the last 2 s
SHED_WINDOW: Final = 10  # packets that must all have waited a spare tick before a frame is shed
QUIET_RMS: Final = 200  # a decoded frame this quiet (about -44 dBFS) is a pause, fit to shed
MAX_SHED_PER_TICK: Final = 2


class SlotKind(Enum):
    PACKET = "packet"
    FEC = "fec"
    PLC = "plc"


class Slot(NamedTuple):
    """What plays next: a packet, its FEC recovery from the next packet, or loss concealment.

    `sequence` is the slot's sequence number (None for a frame added while the due packet is late). A
    NamedTuple, as `RtpHeader` is: one is built per packet played.
    """

    kind: SlotKind
    payload: bytes | None = None
    sequence: int | None = None


class Push(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


class DelayEstimator:
    """The target playout delay in ticks from measured arrival jitter (a NetEq-style relative-delay histogram).

    Delays are relative to the fastest packet of the last REFERENCE_WINDOW_TICKS, so a constant network
    delay costs nothing; the reference restarts with each talk spurt because senders differ in whether
    RTP timestamps run on through silence. Forgetting uses a growing weight instead of decaying every
    bucket, so a packet costs O(1).
    """

    def __init__(self, max_delay: int = MAX_DELAY, quantile: float = DELAY_QUANTILE) -> None:
        self._buckets = [0.0] * max_delay  # by delay in ticks (0 = on time); the last also holds longer ones
        self._total = 0.0
        self._weight = 1.0
        self._quantile = quantile
        self._fastest: deque[tuple[int, int]] = deque()  # (arrival tick, relative arrival), a sliding minimum
        self._reference_timestamp: int | None = None

    def restart_reference(self) -> None:
        self._fastest.clear()
        self._reference_timestamp = None

    def observe(self, arrival: int, timestamp: int) -> None:
        if self._reference_timestamp is None:
            self._reference_timestamp = timestamp
        elapsed = (timestamp - self._reference_timestamp + 0x8000_0000) % 0x1_0000_0000 - 0x8000_0000
        relative = arrival * SAMPLES_PER_TICK - elapsed
        fastest = self._fastest
        while fastest and fastest[-1][1] >= relative:
            fastest.pop()
        fastest.append((arrival, relative))
        while fastest[0][0] <= arrival - REFERENCE_WINDOW_TICKS:
            fastest.popleft()
        delay = -(-(relative - fastest[0][1]) // SAMPLES_PER_TICK)
        self._buckets[min(delay, len(self._buckets) - 1)] += self._weight
        self._total += self._weight
        self._weight /= FORGET_PER_PACKET
        if self._weight > 1e12:
            self._buckets = [mass / self._weight for mass in self._buckets]
            self._total /= self._weight
            self._weight = 1.0

    @property
    def target(self) -> int:
        """Ticks from a packet's arrival to its playout that let DELAY_QUANTILE of packets play on time."""
        needed = self._quantile * self._total
        seen = 0.0
        for delay, mass in enumerate(self._buckets):
            seen += mass
            if seen >= needed:
                return max(MIN_DELAY, delay + 1)
        return len(self._buckets)


class JitterBuffer:
    """Orders one speaker's packets by sequence number and decides what plays next (pure: no Opus)."""

    def __init__(self, *, max_delay: int = MAX_DELAY, max_packets: int = MAX_PACKETS) -> None:
        if max_delay < MIN_DELAY or max_packets <= max_delay:
            raise ValueError("need max_delay >= 1 and max_packets > max_delay")
        self.max_packets = max_packets
        self.delay = DelayEstimator(max_delay)
        self.now = 0  # ticks; the owner calls advance() once per 20 ms tick
        self._packets: dict[int, tuple[bytes, int]] = {}  # sequence -> (payload, arrival tick)
        self._next: int | None = None  # the slot due next; kept through silences (Discord's sequences run on)
        self._last: int | None = None  # the last slot used up (played or concealed): older packets are late
        self._playing = False
        self._stall = 0  # frames concealed since the due packet went missing with nothing later queued
        self._waits: deque[int] = deque(maxlen=SHED_WINDOW)  # ticks each recent packet waited beyond need
        self.trimmed = 0
        self.lost = 0  # slots concealed because their packet never came (in time)
        self.grown = 0  # frames concealed while waiting for a due packet to grow the delay to the target

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def target(self) -> int:
        return self.delay.target

    def __len__(self) -> int:
        return len(self._packets)

    def advance(self) -> None:
        """One 20 ms tick passed."""
        self.now += 1

    def push(self, sequence: int, timestamp: int, payload: bytes, age: int = 0) -> Push:
        """Queue a packet that arrived `age` ticks ago (0: since the last tick)."""
        arrival = self.now - age
        if self._last is not None:
            behind = sequence_delta(sequence, self._last)
            busy = self._playing or bool(self._packets)
            # Far behind while a talk spurt is queued or playing is one very stale packet: dropping the
            # spurt for it would lose speech. Once idle, it is a sender that restarted its sequence.
            if -RESTART_DISTANCE < behind <= 0:
                if self._playing:
                    self.delay.observe(arrival, timestamp)  # late packets are what grows the target
                return Push.LATE
            if behind <= -RESTART_DISTANCE and busy:
                return Push.LATE
            if abs(behind) >= RESTART_DISTANCE:
                self.reset()
        if sequence in self._packets:
            return Push.DUPLICATE
        self.delay.observe(arrival, timestamp)
        self._packets[sequence] = (payload, arrival)
        if len(self._packets) > self.max_packets:
            self._trim()
        return Push.ACCEPTED

    def pop(self) -> Slot | None:
        """The next slot to play, or None when the speaker is silent (or the spurt is still priming)."""
        if not self._playing and not self._start():
            self._stall = min(self._stall + 1, RESTART_DISTANCE)
            return None
        while True:
            due = self._next
            assert due is not None
            entry = self._packets.pop(due, None)
            if entry is not None:
                self._use(due)
                self._stall = 0
                self._waits.append(self.now - entry[1])
                return Slot(SlotKind.PACKET, entry[0], due)
            if not self._packets:  # underrun: the due packet is late, or the talk spurt is over
                if self._stall >= MAX_CONCEALED:
                    self._go_silent()
                    return None
                self._stall += 1
                return Slot(SlotKind.PLC)
            if self._ahead(due) < self.target - 1:
                # Later packets are here but the buffer is shallower than the measured jitter needs: wait
                # for the due one (conceal without using up its slot), so the delay grows to the target.
                self._stall = 0
                self.grown += 1
                return Slot(SlotKind.PLC)
            gap = sequence_delta(self._oldest(), due)
            covered = min(self._stall, gap)  # the underrun frames stood in for the first lost slots
            if covered:
                self._lose(due, covered)
                self._stall = 0
                continue
            self._lose(due, 1)  # a known hole: conceal this slot in place
            following = self._packets.get((due + 1) & 0xFFFF)
            if following is not None:
                return Slot(SlotKind.FEC, following[0], due)
            return Slot(SlotKind.PLC, None, due)

    def may_shed(self) -> bool:
        """Each of the last SHED_WINDOW packets waited a tick or more: one frame less would make none late."""
        waits = self._waits
        return len(waits) == SHED_WINDOW and waits[-1] >= 1 and min(waits) >= 1

    def shed_packet(self) -> None:
        """The owner dropped the packet it just got (a quiet one) to shrink the delay by one frame."""
        self._waits = deque((wait - 1 for wait in self._waits), maxlen=SHED_WINDOW)

    def reset(self) -> None:
        self._packets.clear()
        self._next = None
        self._last = None
        self._playing = False
        self._stall = 0
        self._waits.clear()
        self.delay.restart_reference()

    def _start(self) -> bool:
        if not self._packets:
            return False
        oldest = self._oldest()
        if self._next is not None and 0 < sequence_delta(oldest, self._next) <= self._stall:
            # Back after a loss longer than MAX_CONCEALED: the silent ticks stood in for the lost slots.
            self._lose(self._next, sequence_delta(oldest, self._next))
        else:
            first_arrival = min(arrival for _, arrival in self._packets.values())
            if self.now - first_arrival < self.target - 1:
                return False
            self._next = oldest
        self._playing = True
        self._stall = 0
        return True

    def _go_silent(self) -> None:
        self._playing = False
        self._waits.clear()
        self.delay.restart_reference()

    def _use(self, slot: int) -> None:
        self._last = slot
        self._next = (slot + 1) & 0xFFFF

    def _lose(self, first: int, count: int) -> None:
        self.lost += count
        self._use((first + count - 1) & 0xFFFF)

    def _ahead(self, due: int) -> int:
        """How many slots past `due` the newest queued packet is: the delay the buffer holds right now."""
        return max(sequence_delta(seq, due) for seq in self._packets)

    def _oldest(self) -> int:
        reference = self._next if self._next is not None else next(iter(self._packets))
        return min(self._packets, key=lambda seq: sequence_delta(seq, reference))

    def _trim(self) -> None:
        """Drop the oldest packets down to target + 1: the sender's clock runs ahead of ours, or we stalled."""
        while len(self._packets) > self.target + 1:
            oldest = self._oldest()
            del self._packets[oldest]
            self.trimmed += 1
            self._use(oldest)


class SpeakerDecoder:
    """A JitterBuffer plus that speaker's Opus decoder: `next_frame()` gives 20 ms of PCM in `pcm` or None.

    Opus packets may hold 10, 20, 40 or 60 ms: decoded audio is queued and handed out 20 ms at a time,
    so a 40 ms packet plays over two ticks and two 10 ms packets fill one.
    """

    def __init__(self, jitter: JitterBuffer | None = None, pcm: PcmFormat = HEARD_PCM) -> None:
        self.jitter = jitter or JitterBuffer()
        self._decoder = OpusDecoder(pcm)  # without discord.py's per-frame Python copies, at the engine's rate
        self._frame_bytes = pcm.frame_bytes
        self._pcm = bytearray()
        # decoded/shed/decode_errors count packets (each exactly once); fec/plc count concealed frames.
        self.stats = {"decoded": 0, "shed": 0, "decode_errors": 0, "fec": 0, "plc": 0, "conceal_errors": 0}

    def push(self, sequence: int, timestamp: int, payload: bytes, age: int = 0) -> Push:
        return self.jitter.push(sequence, timestamp, payload, age)

    def next_frame(self) -> bytes | None:
        """This tick's 20 ms. A decode error conceals the frame; it never raises."""
        jitter = self.jitter
        pcm = self._pcm
        size = self._frame_bytes
        shed = 0
        while len(pcm) < size:
            slot = jitter.pop()
            if slot is None:
                break
            decoded = self._decode(slot)
            if (
                slot.kind is SlotKind.PACKET
                and shed < MAX_SHED_PER_TICK
                and not pcm
                and jitter.may_shed()
                and len(jitter) >= jitter.target
                and _is_quiet(decoded, size)
            ):
                jitter.shed_packet()  # a pause: dropping it shrinks the delay without cutting speech
                self.stats["decoded"] -= 1
                self.stats["shed"] += 1
                shed += 1
                continue
            if not pcm and len(decoded) == size:  # one 20 ms packet, nothing carried over: no copies
                jitter.advance()
                return decoded
            pcm += decoded
        jitter.advance()
        if not pcm:
            return None
        frame = bytes(pcm[:size])
        del pcm[:size]
        return frame if len(frame) == size else frame.ljust(size, b"\0")

    def _decode(self, slot: Slot) -> bytes:
        try:
            if slot.kind is SlotKind.PACKET:
                pcm = self._decoder.decode(slot.payload, fec=False)
                self.stats["decoded"] += 1
            elif slot.kind is SlotKind.FEC:
                pcm = self._decoder.decode(slot.payload, fec=True)
                self.stats["fec"] += 1
            else:
                pcm = self._decoder.decode(None, fec=False)
                self.stats["plc"] += 1
        except Exception:  # OpusError ("corrupted stream", ...): lose this frame only
            self.stats["decode_errors" if slot.kind is SlotKind.PACKET else "conceal_errors"] += 1
            pcm = self._conceal()
        return pcm

    def _conceal(self) -> bytes:
        try:
            return self._decoder.decode(None, fec=False)
        except Exception:
            return bytes(self._frame_bytes)


def _is_quiet(pcm: bytes, frame_bytes: int) -> bool:
    if len(pcm) != frame_bytes:
        return False
    samples = np.frombuffer(pcm, "<i2").astype(np.float32)
    return float(np.dot(samples, samples)) < QUIET_RMS * QUIET_RMS * len(samples)
