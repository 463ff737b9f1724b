"""Cap's voice out: a few sender threads per process, each sending up to 16 calls' packets on one 20 ms grid.

Cap does not use discord.py's AudioPlayer: it runs one thread per call, and each wakes 50 times a second to
send one packet. At 32 talking calls on one core those wake-ups cost ~3.6 points of a core (1.94x the codec
floor against 1.78x with shared threads; uplink lag p99 8.8 against 5.4 ms; bench/bench_concurrency.py).
`Speaker` runs each registered call's send step once per tick instead, on a drift-free grid
(bot/voice/grid.py: catch up a few frames after a stall, then resynchronise). A step that raises, a davey
panic included (a BaseException), is logged at most once per interval and costs that call one frame, never
the thread or the other calls. A thread runs only while a call is registered.

Why not one thread for every call: the event loop and the senders share one GIL, and CPython hands it out
per waiting thread. One sender against a busy loop got too small a share at 64 talking calls (its ticks
overran 20 ms, 45-69 % of frames late, where discord.py's 64 players had none); `SpeakerPool` gives each
`CALLS_PER_SPEAKER` calls a Speaker of their own (64 calls: 4 threads, 0.1 % late).

`SendPacing` is the per-call decision (plain, tested with no thread): send every tick while Cap speaks and
through the trailing silence, then nothing but one keepalive every `keepalive_ticks`.

A thread whose calls are all asleep does not wake 50 times a second for nothing (idle calls, bench_idle.py:
+0.016 % of a core per call when it did): it waits up to IDLE_WAIT_TICKS, or until `wake()` (the event loop's
tick calls it when a sleeping call gets speech; a new call wakes it too), then lets the asleep calls count
the ticks that passed, so their keepalives fall due as before (up to IDLE_WAIT_TICKS late).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

from bot.voice.dave import is_survivable
from bot.voice.grid import MAX_CATCH_UP_TICKS, TICK_SECONDS, Grid
from bot.voice.receiver import RateLimitedLog

log = logging.getLogger(__name__)

# A call's send step; it returns False while the call is asleep (sending at most keepalives), else True or None.
Step = Callable[[], "bool | None"]
CALLS_PER_SPEAKER = 16
IDLE_WAIT_TICKS = 25  # 0.5 s: how long a thread with only asleep calls waits before counting their ticks
_serving = threading.local()  # the Speaker whose tick the current thread is running


def current_deadline() -> float | None:
    """When the tick the calling thread serves was due (None off a speaker thread): how late a packet leaves."""
    serving = getattr(_serving, "speaker", None)
    return None if serving is None else serving.deadline


class Send(enum.Enum):
    """What a call sends this tick."""

    FRAME = "frame"  # the source's next packet (speech, or one of the trailing silence frames)
    KEEPALIVE = "keepalive"  # one Opus silence packet, so Discord keeps relaying the callers
    NOTHING = "nothing"


class SendPacing:
    """When one call sends: every tick while speech is queued and until the source is quiet, then it sleeps.

    A new call starts awake: its first ticks send the trailing silence frames, which opens the UDP route at
    once. Asleep, every `keepalive_ticks`-th tick sends one keepalive (Discord stops relaying callers' voice to
    a client that sends nothing).
    """

    def __init__(self, keepalive_ticks: int) -> None:
        self.keepalive_ticks = keepalive_ticks
        self.awake = True
        self._asleep_ticks = 0

    def next(self, *, speech_queued: bool, quiet: bool) -> Send:
        """This tick's send. `speech_queued`: audible and not held back; `quiet`: the trailing silence is sent."""
        if speech_queued:
            self.awake = True
        elif self.awake and quiet:
            self.awake = False
            self._asleep_ticks = 0
        if self.awake:
            return Send.FRAME
        self._asleep_ticks += 1
        return Send.KEEPALIVE if self._asleep_ticks % self.keepalive_ticks == 0 else Send.NOTHING


class Speaker:
    """One daemon thread that calls every registered step once per tick of a shared 20 ms grid.

    `add`/`discard` may be called from any thread. A discarded step is not called again once `discard`
    returns, except by a tick already calling it at that moment. `deadline` is when the tick being served
    was due (on `clock`), so a step can tell how late its packet leaves.
    """

    def __init__(
        self,
        *,
        interval: float = TICK_SECONDS,
        max_catch_up: int = MAX_CATCH_UP_TICKS,
        clock: Callable[[], float] = time.perf_counter,
        name: str = "voice-speaker",
    ) -> None:
        self._interval = interval
        self._max_catch_up = max_catch_up
        self._clock = clock
        self._name = name
        self._steps: dict[Step, None] = {}  # an ordered set
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self._wake = threading.Event()
        self._log = RateLimitedLog(log)
        self.deadline = 0.0
        self.ticks = 0

    def add(self, step: Step) -> None:
        """Call `step` every tick from now on (idempotent); starts the thread for the first step."""
        with self._lock:
            self._steps[step] = None
            self._wake.set()  # a new call starts awake (its trailing silence opens the UDP route)
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._stop,), name=self._name, daemon=True)
                self._thread.start()

    def discard(self, step: Step) -> None:
        """Stop calling `step`; the thread ends with the last step."""
        with self._lock:
            self._steps.pop(step, None)
            if not self._steps and self._stop is not None:
                self._stop.set()
                self._wake.set()
                self._thread = self._stop = None

    def wake(self) -> None:
        """A call that was asleep has something to send: tick now (any thread)."""
        self._wake.set()

    def __contains__(self, step: object) -> bool:
        return step in self._steps

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def tick(self, stop: threading.Event | None = None) -> bool:
        """Every registered step once, in the order they were added (the thread's work, callable in tests).

        True when some call is awake (or a step failed: it is given the next tick too)."""
        with self._lock:
            steps = list(self._steps)
        awake = False
        for step in steps:
            if (stop is not None and stop.is_set()) or step not in self._steps:
                continue
            try:
                awake = step() is not False or awake
            except BaseException as exc:  # a davey panic is a BaseException: it would end the thread
                if not is_survivable(exc):
                    raise
                awake = True
                self._log(logging.ERROR, f"step-{id(step)}", "voice send step %r failed; it keeps being called",
                          step, exc_info=True)
        self.ticks += 1
        return awake

    def _run(self, stop: threading.Event) -> None:
        _serving.speaker = self
        grid = Grid(self._clock(), self._interval, self._max_catch_up)
        while not stop.is_set():
            self.deadline = grid.deadline
            self._wake.clear()  # before the tick: a wake() during it is not lost
            if self.tick(stop):
                delay = grid.advance(self._clock())
                if delay > 0:
                    stop.wait(delay)
                continue
            slept_from = self._clock()
            if not self._wake.wait(IDLE_WAIT_TICKS * self._interval) and self._count_idle_ticks(slept_from, stop):
                stop.wait(self._interval)  # a call woke while counting and sent its frame: the next is one tick on
            grid = Grid(self._clock(), self._interval, self._max_catch_up)

    def _count_idle_ticks(self, slept_from: float, stop: threading.Event) -> bool:
        """Nobody woke the thread: the asleep calls count the ticks that passed, so their keepalives fall due.
        Each such tick is due now (a packet it sends is not late); True when a call woke up in one of them."""
        missed = min(IDLE_WAIT_TICKS, int((self._clock() - slept_from) / self._interval))
        for _ in range(missed - 1):  # the grid's next tick, run at once, is the last of them
            if stop.is_set():
                return False
            self.deadline = self._clock()
            if self.tick(stop):
                return True
        return False


class SpeakerPool:
    """Speakers of up to `per_speaker` steps each: a new step joins the least busy one with room, or a new one.

    Steps stay on their Speaker until discarded (their packets keep one grid); an emptied Speaker's thread ends.
    """

    def __init__(self, per_speaker: int = CALLS_PER_SPEAKER, **speaker_options: object) -> None:
        self._per_speaker = per_speaker
        self._options = speaker_options
        self._speakers: list[Speaker] = []
        self._lock = threading.Lock()

    def add(self, step: Step) -> None:
        """Call `step` every tick from now on (idempotent)."""
        with self._lock:
            if any(step in lane for lane in self._speakers):
                return
            roomy = [lane for lane in self._speakers if len(lane) < self._per_speaker]
            if roomy:
                lane = min(roomy, key=len)
            else:
                lane = Speaker(name=f"voice-speaker-{len(self._speakers)}", **self._options)  # type: ignore[arg-type]
                self._speakers.append(lane)
            lane.add(step)

    def wake(self, step: Step) -> None:
        """`step`'s call has something to send: its Speaker ticks now rather than after its idle wait."""
        for lane in list(self._speakers):
            if step in lane:
                lane.wake()
                return

    def discard(self, step: Step) -> None:
        """Stop calling `step`; a Speaker left without steps stops its thread and leaves the pool."""
        with self._lock:
            for lane in self._speakers:
                if step in lane:
                    lane.discard(step)
                    if not len(lane):
                        self._speakers.remove(lane)
                    return

    def __contains__(self, step: object) -> bool:
        return any(step in lane for lane in list(self._speakers))

    @property
    def speakers(self) -> list[Speaker]:
        return list(self._speakers)

    @property
    def running(self) -> bool:
        return any(lane.running for lane in list(self._speakers))


_shared = SpeakerPool()


def speaker() -> SpeakerPool:
    """The process's pool of Speakers."""
    return _shared
