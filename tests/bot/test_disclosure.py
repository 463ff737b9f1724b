"""The consent answer and who has been told: plain decisions."""

from __future__ import annotations

import pytest

from bot.disclosure import ConsentBook, classify_answer


@pytest.mark.parametrize(
    ("said", "answer"),
    [("Yes.", "yes"), ("yeah sure", "yes"), ("No problem!", "yes"), ("Okay, go ahead", "yes"),
     ("no thanks", "no"), ("Nope.", "no"), ("I'd rather not", "no"), ("that's not okay", "no"),
     ("uh, what was that?", None), ("my name is Ann", None)],
)
def test_answers(said: str, answer: str | None) -> None:
    assert classify_answer(said) == answer


def test_the_book_tells_each_participant_once_and_keeps_their_answer() -> None:
    book = ConsentBook(required=True)
    assert book.newcomers([1, 2]) == [1, 2] and book.newcomers([2, 1, 3]) == [3]
    assert not book.may_record(1) and not book.may_record(None)
    assert book.answer({1}, "yes please") == {1: "yes"} and book.answer({1}, "no") == {}  # answered once
    assert book.answer({2}, "hmm?") == {} and book.answer({2}, "no thanks") == {2: "no"}
    assert book.may_record(1) and not book.may_record(2) and book.declined(2)
    relaxed = ConsentBook(required=False)
    assert relaxed.newcomers([5]) == [5] and relaxed.may_record(5) and relaxed.may_record(None)
    assert relaxed.answer({5}, "no") == {}  # nobody was asked
