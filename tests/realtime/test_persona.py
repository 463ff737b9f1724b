"""The voice persona says what a loan companion on a recorded, shared voice channel must (issue 11)."""

from __future__ import annotations

import re

import pytest

from realtime.persona import DEFAULT_INSTRUCTIONS

PROMPT = " ".join(DEFAULT_INSTRUCTIONS.split()).lower()


@pytest.mark.parametrize(
    ("rule", "pattern"),
    [
        ("one question at a time", r"one question at a time"),
        ("ratios said as percentages", r"percent"),
        ("phone numbers read back", r"read (?:it|them|phone numbers?[^.]*) back|read back[^.]*phone"),
        ("emails read back", r"email[^.]*(?:read|spell)[^.]*back|read back[^.]*email"),
        ("never promise approval", r"never (?:promise|say)[^.]*approv"),
        ("never invent a rate", r"never (?:invent|make up|guess)[^.]*rate"),
        ("only tool figures", r"only[^.]*(?:tool returned|tools return)"),
        ("investment properties only", r"investment propert(?:y|ies) only|only[^.]*investment propert"),
        ("several people in the channel", r"several people"),
        ("an AI assistant", r"ai assistant"),
        ("the call is transcribed", r"transcribed"),
    ],
)
def test_the_persona_states_each_rule(rule: str, pattern: str) -> None:
    assert re.search(pattern, PROMPT), rule


def test_the_disclosure_comes_first() -> None:
    assert re.search(r"(?:first|start)[^.]*ai assistant[^.]*transcribed", PROMPT)
