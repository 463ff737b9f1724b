"""The address gate: with several people in the channel, which turns are for Cap."""

from __future__ import annotations

import pytest

from realtime.address import ASK_SECONDS, FOLLOW_UP_SECONDS, AddressGate, names_cap

ALICE, BOB = 1, 2


@pytest.mark.parametrize("text", [
    "Cap, what's the max LTV on a flip?",
    "Hey Cap what rate would I get",
    "hey, cap. can you check Austin rents",
    "Okay so Cap, book me a call",
    "What do you think, Cap?",
    "Can you run those numbers, Kap?",
    "what rate would I get cap please",
    "Capp, are you there?",
    "Cap, is there a minimum loan amount?",
])
def test_the_name_at_the_start_or_end_addresses_cap(text: str) -> None:
    assert names_cap(text)


@pytest.mark.parametrize("text", [
    "I think the cap rate on that one is too low",  # the word inside a sentence is not a call to Cap
    "Cap rate is about seven percent",  # the trade's word, at the start
    "so what's the cap",
    "is there a rate cap",
    "We should park the car by the cab",
    "My cat knocked over the capital stack spreadsheet",
    "Let's talk about the capex budget",
    "",
    "...",
])
def test_ordinary_talk_does_not_address_cap(text: str) -> None:
    assert not names_cap(text)


def test_one_person_gets_every_turn_answered_in_adaptive_mode() -> None:
    gate = AddressGate("adaptive")
    assert not gate.gated
    assert gate.reason("what's the rate on a DSCR loan", frozenset({ALICE})) == "open"


def test_two_people_are_answered_only_when_they_address_cap() -> None:
    gate = AddressGate("adaptive", humans=2)
    assert gate.gated
    assert gate.reason("so what do you think about the house", frozenset({ALICE})) is None
    assert gate.reason("Cap, what's the rate on a DSCR loan?", frozenset({ALICE})) == "name"


def test_name_mode_needs_the_name_even_alone_and_always_mode_never_does() -> None:
    assert AddressGate("name").reason("what's the rate", frozenset({ALICE})) is None
    assert AddressGate("always", humans=5).reason("what's the rate", frozenset({ALICE})) == "open"


def test_a_question_cap_asked_is_answered_by_that_person_without_the_name() -> None:
    now = [0.0]
    gate = AddressGate("adaptive", humans=2, clock=lambda: now[0])
    gate.cap_said("Sure. What's the purchase price?", to=frozenset({ALICE}))
    now[0] += 5
    assert gate.reason("about three fifty", frozenset({BOB})) is None  # Bob was not asked
    assert gate.reason("about three fifty", frozenset({ALICE})) == "follow_up"
    gate.cap_said("Got it, three hundred fifty thousand.", to=frozenset({ALICE}))  # no question: closed
    assert gate.reason("and the rehab is forty", frozenset({ALICE})) is None


def test_a_follow_up_window_closes() -> None:
    now = [0.0]
    gate = AddressGate("adaptive", humans=2, clock=lambda: now[0])
    gate.cap_said("What's the purchase price?", to=frozenset({ALICE}))
    now[0] += FOLLOW_UP_SECONDS + 1
    assert gate.reason("three fifty", frozenset({ALICE})) is None


def test_cap_ask_opens_the_gate_for_the_askers_next_turn_only() -> None:
    now = [0.0]
    gate = AddressGate("adaptive", humans=2, clock=lambda: now[0])
    gate.ask(BOB)
    assert gate.reason("what's the rate", frozenset({ALICE})) is None
    assert gate.reason("what's the rate", frozenset({BOB})) == "ask"
    assert gate.reason("and the points", frozenset({BOB})) is None
    gate.ask(BOB)
    now[0] += ASK_SECONDS + 1
    assert gate.reason("what's the rate", frozenset({BOB})) is None


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="always, adaptive, name"):
        AddressGate("sometimes")  # type: ignore[arg-type]


def test_cap_ask_is_used_up_by_the_askers_next_turn_even_when_it_named_cap() -> None:
    """/cap ask opens the gate for the asker's *next* turn only, also when that turn names Cap anyway: a later
    turn of theirs that was not meant for Cap ("ok, Bob, what do you think?") is not answered."""
    now = [0.0]
    gate = AddressGate("adaptive", humans=2, clock=lambda: now[0])
    gate.ask(ALICE)
    assert gate.reason("Cap, what's the rate on a rental?", frozenset({ALICE})) == "name"
    now[0] += 10
    assert gate.reason("okay Bob, what do you think about that", frozenset({ALICE})) is None


@pytest.mark.parametrize("text", [
    "Cap it at seventy five percent and see if the numbers work",  # "cap" the verb, as lenders use it
    "so cap the rehab at fifty thousand",
    "and cap the loan at three hundred",
    "we're already at cap",
    "the rehab budget is over cap",
])
def test_cap_the_verb_and_at_cap_do_not_wake_cap(text: str) -> None:
    """Between a loan officer and a borrower "cap" is a verb and a noun of the trade; these name nobody."""
    assert not names_cap(text)
