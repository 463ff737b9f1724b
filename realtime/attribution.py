"""Who said a caller turn, and whom each of Cap's replies answers: plain objects, no I/O.

The receive path knows who was heard in each 20 ms frame; the server's VAD knows where each turn starts and ends
on its own clock (the session's input audio, from 0 per socket). `SpeakerTimeline` puts both on one clock, so a
turn is credited to the person heard most inside it. `Addressee` is what a reply carries from the turn it answers
to its tool calls and its questions: a borrower's "my number is ..." is saved for the borrower, even when
somebody else spoke before the reply came.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

# Runs of frames with the same speakers kept for attribution: a run is one person talking (or the same few at
# once), so this covers many minutes in a few kilobytes per call (a frame each would be ~1 MB per hour of talk).
ACTIVITY_RUNS = 500
OPEN_SPANS_LIMIT = 50  # turns whose end or commit never came are forgotten past this


@dataclass(frozen=True)
class Addressee:
    """The people of one caller turn; `caller` is the one heard most (None when unknown)."""

    speakers: frozenset[int] = frozenset()
    caller: int | None = None
    note: bool = False  # a reply to a system note (a disclosure), not to anyone's turn

    @property
    def people(self) -> frozenset[int]:
        """Whom a reply is for: the main speaker when known, else everyone heard."""
        return frozenset({self.caller}) if self.caller is not None else self.speakers


class SpeakerTimeline:
    """Per uplinked frame, who spoke; per turn, who spoke most between the server's audio_start_ms/audio_end_ms."""

    def __init__(self, frame_ms: int) -> None:
        self._frame_ms = frame_ms
        self._now_ms = 0  # all caller audio sent to (or kept for) a session, in ms
        self._session_origin_ms = 0  # where the current session's audio clock starts on ours
        # [start_ms, end_ms, speakers]: consecutive uplinked frames in which the same people were heard.
        self._activity: deque[list] = deque(maxlen=ACTIVITY_RUNS)
        self._spans: dict[str, list[int]] = {}
        self._since_last_turn: set[int] = set()

    @property
    def now_ms(self) -> int:
        """Caller audio that went up (or was kept for a new session) so far, in ms."""
        return self._now_ms

    def frame(self, speakers: Iterable[int]) -> None:
        """One frame went up (or was kept for a new session)."""
        speakers = frozenset(speakers)
        if speakers:
            last = self._activity[-1] if self._activity else None
            if last is not None and last[1] == self._now_ms and last[2] == speakers:
                last[1] += self._frame_ms
            else:
                self._activity.append([self._now_ms, self._now_ms + self._frame_ms, speakers])
            self._since_last_turn |= speakers
        self._now_ms += self._frame_ms

    def heard(self, speakers: Iterable[int]) -> None:
        """Someone was heard in a frame that did not go up (long silence is skipped; speakers still count)."""
        self._since_last_turn.update(speakers)

    def new_session(self, resent_ms: int) -> None:
        """A new socket: its clock starts with the `resent_ms` of audio it is sent first, then live frames."""
        self._session_origin_ms = self._now_ms - resent_ms
        self._spans.clear()

    def dropped(self, ms: int) -> None:
        """Audio that was counted but never reached the session (a stalled socket shed it): the session's clock
        is that much behind ours from now on."""
        self._session_origin_ms += ms

    def turn_started(self, item_id: str, audio_start_ms: int) -> None:
        self._spans[item_id] = [self._session_origin_ms + audio_start_ms, -1]
        while len(self._spans) > OPEN_SPANS_LIMIT:
            del self._spans[next(iter(self._spans))]

    def turn_stopped(self, item_id: str, audio_end_ms: int) -> None:
        span = self._spans.get(item_id)
        if span is not None:
            span[1] = self._session_origin_ms + audio_end_ms

    def turn_committed(self, item_id: str) -> Addressee:
        """Who said this turn: most frames in its span wins (a tie: who was heard first). Without a span (a manual
        commit), everyone heard since the last turn, the caller only when that is one person."""
        span = self._spans.pop(item_id, None)
        heard: Counter[int] = Counter()
        if span is not None and span[1] >= span[0]:
            for run_start, run_end, speakers in self._activity:
                frames = (min(run_end, span[1]) - max(run_start, span[0])) // self._frame_ms
                if frames > 0:
                    for user_id in speakers:
                        heard[user_id] += frames
        since, self._since_last_turn = frozenset(self._since_last_turn), set()
        if heard:
            return Addressee(frozenset(heard), max(heard, key=lambda user_id: heard[user_id]))
        return Addressee(since, next(iter(since)) if len(since) == 1 else None)

    def speakers_since(self, audio_start_ms: int) -> frozenset[int]:
        """Everyone heard from this point of the session's clock on (who is talking in a turn still open)."""
        start = self._session_origin_ms + audio_start_ms
        return frozenset().union(*(speakers for _, run_end, speakers in self._activity if run_end > start))
