"""The emulator's DAVE group against real davey sessions: signatures, epochs, leaves and media keys are real."""

from __future__ import annotations

import davey
import pytest

from tests.discord_emulator.dave_caller import DaveCaller, deliver, join, leave, run_until_quiet
from tests.discord_emulator.dave_group import OP_PROPOSALS, OP_WELCOME, BinaryFrame, DaveGroupServer
from tests.discord_emulator.mls import ExternalSender, vector

CHANNEL = 4242
ALICE, BOB, CAROL = 1001, 1002, 1003
OPUS = b"\xfc\xff\xfe" + bytes(range(60))  # any non-silence bytes: DAVE does not parse Opus


def _call(*users: int) -> tuple[DaveGroupServer, dict[int, DaveCaller]]:
    server = DaveGroupServer(CHANNEL)
    callers: dict[int, DaveCaller] = {}
    for user in users:
        join(server, callers, DaveCaller(user, CHANNEL))
    return server, callers


def _assert_agree(server: DaveGroupServer, callers: dict[int, DaveCaller]) -> None:
    """Every session is ready at the server's epoch, with the server's roster and leaf for it."""
    assert server.transition is None
    for user, caller in callers.items():
        session = caller.session
        assert session.ready, user
        assert session.epoch == server.epoch, user
        assert session.own_leaf_index == server.leaf_of(user), user
        assert sorted(map(int, session.get_user_ids())) == sorted(server.members), user


def _hears(callers: dict[int, DaveCaller], speaker: int, listener: int) -> bool:
    frame = callers[speaker].encrypt(OPUS)
    assert frame.endswith(b"\xfa\xfa") and OPUS not in frame  # really end-to-end encrypted
    return callers[listener].decrypt(speaker, frame) == OPUS


def test_two_callers_form_a_group_and_hear_each_other() -> None:
    server, callers = _call(ALICE, BOB)

    _assert_agree(server, callers)
    assert server.epoch == 1
    assert _hears(callers, ALICE, BOB)
    assert _hears(callers, BOB, ALICE)


def test_a_third_caller_joins_then_one_leaves_and_media_follows_each_epoch() -> None:
    server, callers = _call(ALICE, BOB)
    in_flight = callers[ALICE].encrypt(OPUS)  # sent at epoch 1, arrives after the epoch changes

    join(server, callers, DaveCaller(CAROL, CHANNEL))
    _assert_agree(server, callers)
    assert server.epoch == 2
    assert _hears(callers, CAROL, ALICE) and _hears(callers, ALICE, CAROL) and _hears(callers, BOB, CAROL)
    assert callers[BOB].decrypt(ALICE, in_flight) == OPUS  # the old key is kept for a while: nothing lost

    leave(server, callers, ALICE)
    _assert_agree(server, callers)
    assert server.epoch == 3
    assert server.members == [BOB, CAROL]
    assert _hears(callers, BOB, CAROL) and _hears(callers, CAROL, BOB)


def test_a_newcomer_takes_the_leftmost_free_leaf() -> None:
    server, callers = _call(ALICE, BOB, CAROL)
    leave(server, callers, server.members[0])
    assert None in server.leaves

    join(server, callers, DaveCaller(2001, CHANNEL))

    _assert_agree(server, callers)  # own_leaf_index of every session matches the server's bookkeeping
    assert None not in server.leaves


def test_a_caller_who_leaves_before_being_added_has_its_proposal_revoked() -> None:
    server, callers = _call(ALICE, BOB)
    carol = DaveCaller(CAROL, CHANNEL)
    run_until_quiet(server, {}, server.session_started(CAROL))
    proposals = server.key_package(CAROL, carol.start()[0].payload)
    commits = [reply for frame in proposals for reply in callers[frame.user_id].receive(frame)]
    assert len(commits) == 2  # both members committed the Add; neither commit reached the server yet

    revoke = server.left(CAROL)

    assert [(frame.op, frame.payload[0]) for frame in revoke if isinstance(frame, BinaryFrame)] == [
        (OP_PROPOSALS, 1),
        (OP_PROPOSALS, 1),
    ]
    for frame in revoke:  # davey finds the proposal by its ref and drops its pending commit
        assert callers[frame.user_id].receive(frame) == []
    assert server.commit_welcome(commits[0].user_id, commits[0].payload) == []  # commits a revoked proposal
    _assert_agree(server, callers)
    assert server.epoch == 1
    assert _hears(callers, ALICE, BOB)


def test_davey_refuses_a_proposal_signed_by_another_key() -> None:
    server, callers = _call(ALICE, BOB)
    impostor = ExternalSender()  # a P-256 key of its own, not the group's
    carol = DaveCaller(CAROL, CHANNEL)
    forged = impostor.proposal_message(server.group_id, server.epoch, b"\x00\x01" + carol.start()[0].payload)

    with pytest.raises(ValueError, match="InvalidSignature"):
        callers[ALICE].session.process_proposals(davey.ProposalsOperationType.append, vector(forged))


def test_davey_refuses_a_proposal_for_another_epoch() -> None:
    server, callers = _call(ALICE, BOB)
    carol = DaveCaller(CAROL, CHANNEL)
    stale = server.sender.proposal_message(server.group_id, server.epoch - 1, b"\x00\x01" + carol.start()[0].payload)

    with pytest.raises(ValueError, match="WrongEpoch"):
        callers[ALICE].session.process_proposals(davey.ProposalsOperationType.append, vector(stale))


def test_a_late_commit_for_a_finished_epoch_is_dropped() -> None:
    server = DaveGroupServer(CHANNEL)
    callers = {user: DaveCaller(user, CHANNEL) for user in (ALICE, BOB)}
    for user in callers:
        run_until_quiet(server, callers, server.session_started(user))
    proposals = []
    for caller in callers.values():
        proposals += server.key_package(caller.user_id, caller.start()[0].payload)
    commits = [reply for frame in proposals for reply in callers[frame.user_id].receive(frame)]
    assert len(commits) == 2  # both made their own group and committed the other's Add

    announced = server.commit_welcome(commits[0].user_id, commits[0].payload)
    assert server.commit_welcome(commits[1].user_id, commits[1].payload) == []
    assert server.commits_refused == 1

    run_until_quiet(server, callers, announced)
    _assert_agree(server, callers)
    assert _hears(callers, commits[1].user_id, commits[0].user_id)


def test_a_downgrade_then_an_upgrade_forms_a_new_group() -> None:
    server, callers = _call(ALICE, BOB)

    run_until_quiet(server, callers, server.downgrade())
    assert server.epoch is None
    assert not callers[ALICE].can_encrypt
    assert callers[ALICE].encrypt(OPUS) == OPUS  # plain Opus now
    assert callers[BOB].decrypt(ALICE, OPUS) == OPUS  # accepted: passthrough during the downgrade

    run_until_quiet(server, callers, server.upgrade([ALICE, BOB]))

    _assert_agree(server, callers)
    assert server.epoch == 1
    assert _hears(callers, ALICE, BOB) and _hears(callers, BOB, ALICE)


def test_the_malformed_helpers_make_davey_raise_value_error() -> None:
    server, callers = _call(ALICE, BOB)
    newcomer = DaveCaller(CAROL, CHANNEL).start()[0].payload

    with pytest.raises(ValueError, match="Failed to process proposals"):
        callers[ALICE].receive(server.malformed_proposals(ALICE))
    with pytest.raises(ValueError, match="InvalidSignature"):
        callers[BOB].receive(server.forged_proposals(BOB, newcomer))
    _assert_agree(server, callers)  # nothing changed for either of them



def test_a_caller_whose_welcome_fails_recovers_with_a_new_key_package() -> None:
    """Op 31: the client could not use its welcome; it resets, sends a new key package and is added again."""
    server, callers = _call(ALICE, BOB)
    carol = callers[CAROL] = DaveCaller(CAROL, CHANNEL)
    run_until_quiet(server, callers, server.session_started(CAROL))
    outgoing = []
    for frame in server.key_package(CAROL, carol.start()[0].payload):
        for reply in callers[frame.user_id].receive(frame):
            outgoing += deliver(reply, server)
    broken = [
        BinaryFrame(m.user_id, m.op, m.payload[:-20] + bytes(20)) if m.op == OP_WELCOME else m for m in outgoing
    ]
    assert broken != outgoing  # the welcome to Carol is corrupted

    run_until_quiet(server, callers, broken)

    assert carol.errors and "welcome" in carol.errors[0].lower()
    _assert_agree(server, callers)
    assert CAROL in server.members
    assert _hears(callers, CAROL, ALICE) and _hears(callers, ALICE, CAROL)


def test_a_member_who_leaves_with_a_commit_in_flight_is_neither_followed_nor_waited_for() -> None:
    server, callers = _call(ALICE, BOB, CAROL)
    newcomer = DaveCaller(2001, CHANNEL)
    callers[2001] = newcomer
    run_until_quiet(server, callers, server.session_started(2001))
    proposals = server.key_package(2001, newcomer.start()[0].payload)
    commits = {frame.user_id: callers[frame.user_id].receive(frame)[0] for frame in proposals}

    run_until_quiet(server, callers, server.left(CAROL))  # Carol leaves; her commit is still on its way
    del callers[CAROL]
    assert server.commit_welcome(CAROL, commits[CAROL].payload) == []
    run_until_quiet(server, callers, server.commit_welcome(BOB, commits[BOB].payload))
    run_until_quiet(server, callers, [])

    _assert_agree(server, callers)  # the newcomer is in, Carol is out (the next epoch), nobody waits on her
    assert sorted(server.members) == sorted([ALICE, BOB, 2001])


def test_a_client_leaving_while_the_group_forms_restarts_the_round_without_them() -> None:
    server = DaveGroupServer(CHANNEL)
    callers = {user: DaveCaller(user, CHANNEL) for user in (ALICE, BOB, CAROL)}
    for user in callers:
        run_until_quiet(server, callers, server.session_started(user))
    first_round = server.key_package(ALICE, callers[ALICE].start()[0].payload)
    first_round += server.key_package(BOB, callers[BOB].start()[0].payload)
    assert server.key_package(CAROL, callers[CAROL].start()[0].payload) == []  # waits for the next round
    (stale_commit,) = callers[ALICE].receive(next(f for f in first_round if f.user_id == ALICE))

    restart = server.left(BOB)  # before anyone's commit reached the server
    del callers[BOB]
    run_until_quiet(server, callers, restart)
    assert server.commit_welcome(ALICE, stale_commit.payload) == []  # it adds Bob: revoked

    _assert_agree(server, callers)
    assert sorted(server.members) == sorted([ALICE, CAROL])
    assert _hears(callers, ALICE, CAROL)
