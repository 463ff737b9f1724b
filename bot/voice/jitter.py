"""Per-speaker jitter buffer and Opus decoding: one 20 ms PCM frame (or None: not speaking) per tick.

Discord sends nothing while someone is silent, so "no packet" is the normal state between talk spurts;
a gap in the *sequence numbers* is a real loss. The buffer holds a speaker's packets ordered by 16-bit
sequence number (wraparound-aware), drops duplicates and packets that arrive after their slot was
played, primes `depth` frames before a talk spurt starts (absorbing reordering and jitter), and caps
its size so latency and memory stay bounded. A hole in the sequence is concealed with Opus in-band FEC
(from the next packet) or PLC, once, and then skipped, so a loss never adds latency. An underrun (the
due packet is late) is concealed with PLC without giving up its slot, so the buffer regrows and the
late packet still plays; after MAX_CONCEALED such frames the talk spurt is over.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from discord import opus

from bot.voice.rtp import sequence_delta
from realtime.audio import FRAME_BYTES

DEFAULT_DEPTH: Final = 2  # frames primed before a talk spurt plays: 40 ms of reordering/jitter tolerance
MAX_PACKETS: Final = 16  # 320 ms: more means a stall or a fast sender clock; trim back to depth + 1
MAX_CONCEALED: Final = 2  # PLC frames after the last packet before the speaker counts as silent
RESTART_DISTANCE: Final = 100  # a jump of 2 s or more is a new stream (backwards: only between talk spurts)


class SlotKind(Enum):
    PACKET = "packet"
    FEC = "fec"
    PLC = "plc"


@dataclass(frozen=True, slots=True)
class Slot:
    """What plays in one tick: a packet, its FEC recovery from the next packet, or loss concealment."""

    kind: SlotKind
    payload: bytes | None = None


class Push(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


class JitterBuffer:
    """Orders one speaker's packets by sequence number and decides what plays on each tick."""

    def __init__(self, depth: int = DEFAULT_DEPTH, max_packets: int = MAX_PACKETS) -> None:
        if depth < 1 or max_packets <= depth:
            raise ValueError("need depth >= 1 and max_packets > depth")
        self.depth = depth
        self.max_packets = max_packets
        self._packets: dict[int, bytes] = {}
        self._next: int | None = None  # the sequence number due next; None while idle or priming
        self._last: int | None = None  # the last slot consumed (played or concealed): older packets are late
        self._priming_ticks = 0
        self._concealed_run = 0
        self.trimmed = 0

    @property
    def playing(self) -> bool:
        return self._next is not None

    def __len__(self) -> int:
        return len(self._packets)

    def push(self, sequence: int, payload: bytes) -> Push:
        if self._last is not None:
            behind = sequence_delta(sequence, self._last)
            busy = self._next is not None or bool(self._packets)
            # Far behind while a talk spurt is queued or playing is one very stale packet: dropping the
            # spurt for it would lose speech. Once idle, it is a sender that restarted its sequence.
            if -RESTART_DISTANCE < behind <= 0 or (behind <= -RESTART_DISTANCE and busy):
                return Push.LATE
            if abs(behind) >= RESTART_DISTANCE:
                self.reset()
        if sequence in self._packets:
            return Push.DUPLICATE
        self._packets[sequence] = payload
        if len(self._packets) > self.max_packets:
            self._trim()
        return Push.ACCEPTED

    def pop(self) -> Slot | None:
        """The slot for this tick, or None when the speaker is silent (or still priming)."""
        if self._next is None and not self._start():
            return None
        assert self._next is not None
        due = self._next
        payload = self._packets.pop(due, None)
        if payload is not None:
            self._consume(due)
            self._concealed_run = 0
            return Slot(SlotKind.PACKET, payload)
        if not self._packets:
            # Nothing queued: the packet is late, or the talk spurt is over. Conceal without using up the
            # slot (the buffer regrows, so a late packet still plays); give up after MAX_CONCEALED frames.
            if self._concealed_run >= MAX_CONCEALED:
                self._next = None
                self._concealed_run = 0
                return None
            self._concealed_run += 1
            return Slot(SlotKind.PLC)
        # A hole with later packets queued: conceal one frame, then resume at the oldest queued packet.
        following = self._packets.get((due + 1) & 0xFFFF)
        self._next = self._oldest()
        self._last = (self._next - 1) & 0xFFFF
        return Slot(SlotKind.FEC, following) if following is not None else Slot(SlotKind.PLC)

    def reset(self) -> None:
        self._packets.clear()
        self._next = None
        self._last = None
        self._priming_ticks = 0
        self._concealed_run = 0

    def _start(self) -> bool:
        if not self._packets:
            self._priming_ticks = 0
            return False
        self._priming_ticks += 1
        # A spurt shorter than `depth` packets must play too: wait at most `depth` ticks.
        if len(self._packets) < self.depth and self._priming_ticks <= self.depth:
            return False
        self._priming_ticks = 0
        self._next = self._oldest()
        return True

    def _consume(self, slot: int) -> None:
        self._last = slot
        self._next = (slot + 1) & 0xFFFF

    def _oldest(self) -> int:
        reference = next(iter(self._packets))
        return min(self._packets, key=lambda seq: sequence_delta(seq, reference))

    def _trim(self) -> None:
        """Drop the oldest packets down to depth + 1: the sender's clock runs ahead of ours, or we stalled."""
        while len(self._packets) > self.depth + 1:
            oldest = self._oldest()
            del self._packets[oldest]
            self.trimmed += 1
            self._last = oldest
        if self._next is not None:
            self._next = self._oldest()


class SpeakerDecoder:
    """A JitterBuffer plus that speaker's Opus decoder: `next_frame()` gives FRAME_BYTES of PCM or None."""

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        self.jitter = JitterBuffer(depth)
        self._decoder = opus.Decoder()
        self.stats = {"decoded": 0, "fec": 0, "plc": 0, "decode_errors": 0, "odd_frame_size": 0}

    def push(self, sequence: int, payload: bytes) -> Push:
        return self.jitter.push(sequence, payload)

    def next_frame(self) -> bytes | None:
        """Decode this tick's slot. A decode error conceals the frame; it never raises."""
        slot = self.jitter.pop()
        if slot is None:
            return None
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
            self.stats["decode_errors"] += 1
            pcm = self._conceal()
        if len(pcm) != FRAME_BYTES:  # Discord clients send 20 ms frames; anything else is fitted
            self.stats["odd_frame_size"] += 1
            pcm = pcm[:FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
        return pcm

    def _conceal(self) -> bytes:
        try:
            return self._decoder.decode(None, fec=False)
        except Exception:
            return bytes(FRAME_BYTES)
