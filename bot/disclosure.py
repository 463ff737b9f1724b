"""What Cap tells every participant (it is an AI assistant for the lender; the call is transcribed), and the
consent decisions when REQUIRE_SPOKEN_CONSENT asks for a spoken yes first.

Plain objects: `ConsentBook` knows who was told and who agreed; `bot.voice.call` says, posts and stores.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

# Bump when the words change: each stored disclosure names the version its participant heard.
DISCLOSURE_VERSION = "2026-12-v1"


def disclosure_text(lender: str) -> str:
    """What every participant is told; `lender` is the lender policy's name."""
    return (f"I'm Cap, an AI assistant for {lender}, not a person. This call is transcribed, and the transcript "
            f"is kept for {lender}'s loan team.")


CONSENT_QUESTION = "Is that OK with you? Please say yes to go on."
DECLINED_TEXT = (
    "Understood: I won't transcribe or save anything you say on this call. The loan team can be reached "
    "another way if you'd like help."
)
# Tools that store something about the caller: refused until they have agreed, when a yes is required.
CONSENT_GATED_TOOLS = frozenset({"save_lead", "score_lead", "schedule_call", "analyze_deal"})

Consent = Literal["not_asked", "pending", "yes", "no"]
Answer = Literal["yes", "no"]

# Phrases first: "no problem" is a yes, "not okay" a no.
_YES_PHRASES = ("no problem", "no worries", "that's fine", "that is fine", "go ahead", "of course", "i agree",
                "sounds good", "i consent")
_NO_PHRASES = ("not ok", "not okay", "not fine", "don't", "do not", "rather not", "no thanks", "no thank you",
               "i decline", "i don't agree", "not comfortable")
_YES_WORDS = frozenset({"yes", "yeah", "yep", "yup", "sure", "ok", "okay", "fine", "agreed", "absolutely",
                        "certainly", "alright", "right"})
_NO_WORDS = frozenset({"no", "nope", "nah", "decline", "stop"})


def classify_answer(text: str) -> Answer | None:
    """A caller's reply to the consent question: 'yes', 'no', or None when it is neither (ask again)."""
    lowered = " ".join(re.findall(r"[a-z']+", text.lower().replace("’", "'")))
    padded = f" {lowered} "
    if any(f" {phrase} " in padded for phrase in _YES_PHRASES):
        return "yes"
    if any(f" {phrase} " in padded for phrase in _NO_PHRASES):
        return "no"
    words = set(lowered.split())
    if words & _NO_WORDS:
        return "no"
    if words & _YES_WORDS:
        return "yes"
    return None


def announcement(consent_required: bool, newcomer: bool, lender: str) -> str:
    """The note that makes the model say the disclosure (and ask for a yes) in its own voice, now."""
    who = "Someone new has joined the call. " if newcomer else "The call has just started. "
    ask = (
        f" Then ask: \"{CONSENT_QUESTION}\" Do not go on with their questions until they say yes; if they "
        "decline, tell them you will not transcribe or save anything they say, and help no further."
        if consent_required
        else ""
    )
    return (f"{who}Before anything else, say this to the callers, word for word: "
            f"\"{disclosure_text(lender)}\"{ask}")


def posted_text(consent_required: bool, mentions: str, lender: str) -> str:
    """The same disclosure in the voice channel's chat, naming (without pinging) who it is for."""
    ask = f" {CONSENT_QUESTION}" if consent_required else ""
    return f"ℹ️ {mentions + ': ' if mentions else ''}{disclosure_text(lender)}{ask}"


@dataclass
class ConsentBook:
    """Who in this call has been told, and (when a spoken yes is required) who agreed or declined."""

    required: bool
    states: dict[int, Consent] = field(default_factory=dict)

    def newcomers(self, present: Iterable[int]) -> list[int]:
        """Participants not yet told; marks them told (pending when a yes is required)."""
        new = sorted(user for user in set(present) if user not in self.states)
        for user in new:
            self.states[user] = "pending" if self.required else "not_asked"
        return new

    def answer(self, speakers: Iterable[int], text: str) -> dict[int, Answer]:
        """Fold a caller turn in: the pending speakers whose answer it is."""
        answer = classify_answer(text) if self.required else None
        if answer is None:
            return {}
        answered = {user: answer for user in speakers if self.states.get(user) == "pending"}
        self.states.update(answered)
        return answered

    def may_record(self, user: int | None) -> bool:
        """May what this participant says (and what is saved for them) be kept?"""
        if not self.required:
            return True
        return user is not None and self.states.get(user) == "yes"

    def declined(self, user: int) -> bool:
        return self.states.get(user) == "no"
