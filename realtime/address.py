"""When Cap answers a caller turn in a channel of several people: the address gate, sans I/O.

With one human in the channel every turn is for Cap. With two or more, people mostly talk to each other, so
Cap answers only a turn that is addressed to it: its name at the start or the end of the utterance, a direct
answer to a question Cap just asked that speaker, or a turn of someone who asked for an answer with
`/cap ask`. Unaddressed turns stay in the conversation (Cap knows what was said) but get no reply.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

ReplyMode = Literal["always", "adaptive", "name"]
REPLY_MODES: tuple[ReplyMode, ...] = ("always", "adaptive", "name")

# What speech-to-text makes of "Cap" (measured on espeak-ng and seen in gpt-transcribe output: the name is
# short, so it comes back in several spellings). A fuzzy ratio on a three-letter word would also take "cat",
# "car" and "cab", everyday words at the end of a sentence: an explicit list keeps false wake-ups rare.
DEFAULT_NAMES: tuple[str, ...] = ("cap", "capp", "kap", "kapp", "cap's", "kap's")
# Words that may stand before the name at the start of a turn ("hey Cap", "okay so Cap", "um, Cap").
_LEAD_INS = frozenset({"hey", "hi", "hello", "ok", "okay", "so", "um", "uh", "yo", "and", "well", "oh", "right",
                       "alright", "excuse", "me", "sorry", "thanks", "thank", "you", "question", "for"})
# How many words may follow the name at the end of a turn ("..., right Cap?", "what do you think, Cap, huh").
_TRAILERS = frozenset({"please", "thanks", "huh", "right", "yeah", "ok", "okay", "now"})
# A question Cap asked is answered by the person it asked within this long after Cap finished saying it.
FOLLOW_UP_SECONDS = 30.0
# `/cap ask` opens the gate for the asker's next turn if it starts within this long.
ASK_SECONDS = 60.0
# "Cap" is also a word of the trade, a noun ("cap rate is seven", "what's the cap", "we're at cap") and a verb
# ("cap it at seventy-five", "cap the rehab at fifty"). Without punctuation to say otherwise, a name at the start
# followed by one of these, or at the end after one of those, is the word, not Cap. The transcription punctuates:
# "Cap, the rate you quoted..." and "what do you think, Cap?" are Cap's name whatever the words around it.
_WORD_AFTER = frozenset({"rate", "rates", "table", "tables", "stack", "gain", "gains", "ex", "x", "limit",
                         "limits", "space", "amount", "it", "the", "that", "this", "them", "those", "these",
                         "at", "off", "out", "of", "on", "my", "our", "your", "his", "her", "their"})
_WORD_BEFORE = frozenset({"the", "a", "an", "rate", "that", "this", "no", "any", "interest", "payment", "its",
                          "their", "hard", "soft", "lifetime", "annual", "periodic", "my", "your", "at", "over",
                          "under", "above", "below", "to", "past"})
_TOKEN = re.compile(r"([a-z0-9']+)([^a-z0-9']*)")
_VOCATIVE = re.compile(r"[,.!?;:]")


def _tokens(text: str) -> list[tuple[str, str]]:
    """(word, what follows it up to the next word) for each word, lower case."""
    return _TOKEN.findall(text.lower().replace("’", "'"))


def names_cap(text: str, names: Iterable[str] = DEFAULT_NAMES) -> bool:
    """True when the utterance calls Cap by name at its start or its end (after greetings/before tags)."""
    tokens = _tokens(text)
    words = [word for word, _ in tokens]
    if not words:
        return False
    for name in (name.split() for name in names):
        size = len(name)
        # Start: skip lead-ins ("hey", "okay so"), then the name.
        start = 0
        while start < len(words) and words[start] in _LEAD_INS and words[start:start + size] != name:
            start += 1
        last = start + size - 1
        if words[start:start + size] == name and (last == len(words) - 1 or _VOCATIVE.search(tokens[last][1])
                                                  or words[last + 1] not in _WORD_AFTER):
            return True
        # End: skip tags ("please", "right"), then the name.
        end = len(words)
        while end > 0 and words[end - 1] in _TRAILERS and words[end - size:end] != name:
            end -= 1
        before = end - size - 1
        if end >= size and words[end - size:end] == name and (before < 0 or "," in tokens[before][1]
                                                              or words[before] not in _WORD_BEFORE):
            return True
    return False


def is_question(text: str) -> bool:
    return text.rstrip().rstrip("\"')").endswith("?")


@dataclass
class AddressGate:
    """Decides, per caller turn, whether Cap answers; it is told who is present and what Cap asked whom."""

    mode: ReplyMode = "adaptive"
    names: tuple[str, ...] = DEFAULT_NAMES
    clock: Callable[[], float] = field(default=lambda: 0.0)
    humans: int = 1
    _asked: frozenset[int] = field(default=frozenset(), init=False)  # whom Cap's last question was for
    _asked_at: float | None = field(default=None, init=False)
    _asks: dict[int, float] = field(default_factory=dict, init=False)  # /cap ask: user id -> when

    def __post_init__(self) -> None:
        if self.mode not in REPLY_MODES:
            raise ValueError(f"reply mode must be one of {', '.join(REPLY_MODES)}, not {self.mode!r}")

    @property
    def gated(self) -> bool:
        """True when a turn needs to be addressed to Cap to be answered."""
        if self.mode == "always":
            return False
        return self.mode == "name" or self.humans >= 2

    def ask(self, user_id: int) -> None:
        """`/cap ask`: the next turn of this user is for Cap, whatever it says."""
        self._asks[user_id] = self.clock()

    def cap_said(self, text: str, to: frozenset[int]) -> None:
        """Cap finished saying `text` in answer to a turn of `to`; a question opens the gate for them."""
        if is_question(text) and to:
            self._asked, self._asked_at = to, self.clock()
        else:
            self._asked, self._asked_at = frozenset(), None

    def reason(self, text: str, speakers: frozenset[int]) -> str | None:
        """Why this turn is for Cap ('open', 'name', 'follow_up', 'ask'), or None when Cap only listens."""
        now = self.clock()
        for user_id, at in list(self._asks.items()):
            if now - at > ASK_SECONDS:
                del self._asks[user_id]
        if not self.gated:
            return "open"
        reason: str | None = None
        if names_cap(text, self.names):
            reason = "name"
        elif speakers & self._asks.keys():
            reason = "ask"
        elif (self._asked_at is not None and now - self._asked_at <= FOLLOW_UP_SECONDS and speakers
                and speakers <= self._asked):
            reason = "follow_up"
        if reason is not None:
            for user_id in speakers:  # a /cap ask is used up by the asker's next turn for Cap, whatever opened it
                self._asks.pop(user_id, None)
        return reason
