"""The voice server's side of one channel's DAVE group, as a sans-I/O state machine.

Feed it what the clients send (key packages, commits, transition-ready, departures) and it returns the
messages to send, each addressed to one user: binary MLS frames (ops 25, 27, 29, 30; the emulator adds the
`u16 seq | u8 op` header) and JSON DAVE ops (21, 22, 24). It never joins the group: it is the group's MLS
external sender and reads the commits only to know the epoch and who sits at which leaf.

Discord behaviours assumed here (from the DAVE protocol whitepaper and davey/discord.py 2.7.1's handling):
- Op 25 goes to each DAVE client once its session exists (after op 4 SESSION_DESCRIPTION); discord.py drops
  binary frames that arrive before it has a session.
- A joining client's key package (op 26) becomes an Add proposal sent (op 27 append) to every member; when no
  group exists yet every waiting client gets Adds for all the others at epoch 0 (each made its own one-member
  group on op 25) and the first commit received wins; the losers join through the Welcome.
- A departure becomes a Remove proposal (by leaf index) to the remaining members; a client that leaves before
  its Add was committed gets its proposal revoked (op 27 revoke, by proposal ref).
- The first commit (op 28) for the current epoch wins; later ones for that epoch are dropped. The winning
  commit is announced (op 29) to the old members, its Welcome (op 30) to the added ones, both under a
  transition id; once every member of the new epoch sent op 23 transition_ready the server sends op 22.
  Proposals the winning commit left out are proposed again in the new epoch.
- Membership changes that arrive while a transition is running, or while proposals of the current epoch are
  out, wait until the epoch's commit has executed (one proposal batch per epoch).
- Downgrade: op 21 {transition_id, protocol_version: 0}, op 22 after every member's op 23. Upgrade: op 24
  {epoch: 1, protocol_version: 1}; clients make new sessions and send key packages, and the group forms again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from .mls import (
    CommitInfo,
    ExternalSender,
    add_proposal,
    group_id,
    parse_key_package,
    proposal_ref,
    remove_proposal,
    split_commit_welcome,
    vector,
)

OP_PREPARE_TRANSITION: Final = 21
OP_EXECUTE_TRANSITION: Final = 22
OP_PREPARE_EPOCH: Final = 24
OP_EXTERNAL_SENDER: Final = 25
OP_PROPOSALS: Final = 27
OP_ANNOUNCE_COMMIT: Final = 29
OP_WELCOME: Final = 30
PROPOSALS_APPEND: Final = 0
PROPOSALS_REVOKE: Final = 1
DAVE_PROTOCOL_VERSION: Final = 1


@dataclass(frozen=True)
class BinaryFrame:
    """A server -> client binary frame; `payload` excludes the `u16 seq | u8 op` header."""

    user_id: int
    op: int
    payload: bytes


@dataclass(frozen=True)
class JsonOp:
    """A server -> client JSON message `{"op": op, "d": data}`."""

    user_id: int
    op: int
    data: dict[str, Any]


Outgoing = BinaryFrame | JsonOp


@dataclass
class _Proposal:
    message: bytes
    ref: bytes
    add_user: int | None = None  # the user an Add brings in
    remove_user: int | None = None  # the user a Remove takes out
    sent_to: frozenset[int] = frozenset()  # who holds it (a revoke goes to them)


@dataclass
class _Transition:
    transition_id: int
    waiting: set[int]  # users whose op 23 has not arrived
    protocol_version: int


@dataclass
class DaveGroupServer:
    """One voice channel's DAVE group from the voice server's side."""

    channel_id: int
    sender: ExternalSender = field(default_factory=ExternalSender)
    protocol_version: int = DAVE_PROTOCOL_VERSION
    leaves: list[int | None] = field(default_factory=list)  # leaf index -> user id (None: blank leaf)
    epoch: int | None = None  # None: no group yet
    key_packages: dict[int, bytes] = field(default_factory=dict)  # users waiting to be added
    leaving: set[int] = field(default_factory=set)  # members waiting to be removed
    proposals: list[_Proposal] = field(default_factory=list)  # sent for the current epoch, not committed
    transition: _Transition | None = None
    next_transition_id: int = 1
    commits_refused: int = 0

    # ---- who is where ---------------------------------------------------------------------------------------

    @property
    def members(self) -> list[int]:
        """Users in the group at the current epoch."""
        return [user for user in self.leaves if user is not None]

    def leaf_of(self, user_id: int) -> int:
        return self.leaves.index(user_id)

    @property
    def group_id(self) -> bytes:
        return group_id(self.channel_id)

    # ---- client -> server -----------------------------------------------------------------------------------

    def session_started(self, user_id: int) -> list[Outgoing]:
        """A client got its DAVE session (after op 4): send it the external sender package (op 25)."""
        return [BinaryFrame(user_id, OP_EXTERNAL_SENDER, self.sender.package())]

    def key_package(self, user_id: int, payload: bytes) -> list[Outgoing]:
        """Op 26 from `user_id`: it wants to join (again)."""
        info = parse_key_package(payload)
        if info.user_id != user_id:
            raise ValueError(f"user {user_id} sent a key package for user {info.user_id}")
        if user_id in self.members:  # a member that reset its session (op 31 recovery): out, then in again
            self.leaving.add(user_id)
        self.key_packages[user_id] = payload
        return self._propose()

    def left(self, user_id: int) -> list[Outgoing]:
        """`user_id` left the channel (or its voice connection closed)."""
        self.key_packages.pop(user_id, None)
        out: list[Outgoing] = []
        if self.epoch is None and any(p.add_user == user_id for p in self.proposals):
            # A client forming the group left: every waiting client drops its round, and a new round starts.
            out += self._revoke(self.proposals, gone=user_id)
            self.proposals = []
        else:
            stale = [p for p in self.proposals if p.add_user == user_id]
            if stale:
                out += self._revoke(stale, gone=user_id)
                self.proposals = [p for p in self.proposals if p.add_user != user_id]
        if user_id in self.members:
            self.leaving.add(user_id)
        if self.transition is not None:
            self.transition.waiting.discard(user_id)
            out += self._maybe_execute()
        if self.epoch is not None and set(self.members) <= self.leaving:
            # Nobody is left to commit: the group ends, and those still waiting form a new one.
            self.leaves, self.epoch, self.proposals, self.leaving, self.transition = [], None, [], set(), None
        return out + self._propose()

    def commit_welcome(self, user_id: int, payload: bytes) -> list[Outgoing]:
        """Op 28: the first commit for the current epoch wins and is announced; the rest are dropped."""
        commit, welcome = split_commit_welcome(payload)
        if not self._is_current(user_id, commit):
            self.commits_refused += 1
            return []
        by_ref = {p.ref: p for p in self.proposals}
        committed = [by_ref[ref] for ref in commit.proposal_refs if ref in by_ref]
        old_members = self.members if self.epoch is not None else [user_id]
        if self.epoch is None:  # the committer's own one-member group becomes the channel's group
            self.leaves, self.epoch = [user_id], 0
        removed = {p.remove_user for p in committed if p.remove_user is not None}
        added = [p.add_user for p in committed if p.add_user is not None]
        self._apply(removed, added)
        self.epoch = commit.epoch + 1
        self.leaving -= removed
        for user in added:
            self.key_packages.pop(user, None)
        self.proposals = []  # the rest are re-proposed for the new epoch once the transition executes
        transition_id = self._new_transition_id()
        # Members still to be removed (they left, or reset their session) will not answer this transition.
        self.transition = _Transition(transition_id, set(self.members) - self.leaving, self.protocol_version)
        header = transition_id.to_bytes(2, "big")
        out = self._to([u for u in old_members if u not in removed], OP_ANNOUNCE_COMMIT, header + commit.message)
        if welcome is not None:
            out += self._to(added, OP_WELCOME, header + welcome)
        return out

    def transition_ready(self, user_id: int, transition_id: int) -> list[Outgoing]:
        """Op 23: once every member is ready, execute (op 22) and propose what waited meanwhile."""
        if self.transition is None or self.transition.transition_id != transition_id:
            return []
        self.transition.waiting.discard(user_id)
        return self._maybe_execute()

    def invalid_commit_welcome(self, user_id: int, _transition_id: int) -> list[Outgoing]:
        """Op 31: the client could not process our op 29/30; it resets and sends a new key package."""
        out: list[Outgoing] = []
        if self.transition is not None:
            self.transition.waiting.discard(user_id)
            out += self._maybe_execute()
        if user_id in self.members:
            self.leaving.add(user_id)
        return out + self._propose()

    # ---- protocol transitions -------------------------------------------------------------------------------

    def downgrade(self) -> list[Outgoing]:
        """Start a transition to protocol version 0 (plain Opus): op 21 to every member."""
        transition_id = self._new_transition_id()
        self.transition = _Transition(transition_id, set(self.members), 0)
        data = {"transition_id": transition_id, "protocol_version": 0}
        return [JsonOp(user, OP_PREPARE_TRANSITION, data) for user in self.members]

    def upgrade(self, users: Iterable[int]) -> list[Outgoing]:
        """Back to DAVE: op 24 epoch 1 tells `users` to make new sessions; their key packages form a new group."""
        self._forget_group()
        self.protocol_version = DAVE_PROTOCOL_VERSION
        data = {"epoch": 1, "protocol_version": DAVE_PROTOCOL_VERSION}
        out: list[Outgoing] = [JsonOp(user, OP_PREPARE_EPOCH, data) for user in users]
        # discord.py sends op 26 straight away on op 24, but sets the external sender only on op 25.
        return out + [frame for user in users for frame in self.session_started(user)]

    # ---- deliberately broken messages (the "one bad DAVE message" scenario) -------------------------------

    def malformed_proposals(self, user_id: int) -> BinaryFrame:
        """An op 27 append whose vector holds a truncated MLS message: davey raises ValueError on it."""
        broken = self.sender.proposal_message(self.group_id, self.epoch or 0, remove_proposal(0))[:-7]
        return BinaryFrame(user_id, OP_PROPOSALS, bytes([PROPOSALS_APPEND]) + vector(broken))

    def forged_proposals(self, user_id: int, key_package: bytes) -> BinaryFrame:
        """An op 27 append signed by a key that is not the group's external sender (davey: InvalidSignature)."""
        forged = ExternalSender().proposal_message(self.group_id, self.epoch or 0, add_proposal(key_package))
        return BinaryFrame(user_id, OP_PROPOSALS, bytes([PROPOSALS_APPEND]) + vector(forged))

    # ---- internals ------------------------------------------------------------------------------------------

    def _is_current(self, user_id: int, commit: CommitInfo) -> bool:
        if self.transition is not None:
            return False
        known = {p.ref for p in self.proposals}
        if not set(commit.proposal_refs) <= known:  # it commits a revoked or superseded proposal
            return False
        if self.epoch is None:
            return commit.epoch == 0 and user_id in self._waiting_group_builders()
        if user_id in self.leaving or user_id not in self.members:  # a departed client's commit is not waited for
            return False
        leaf = commit.committer_leaf
        return commit.epoch == self.epoch and leaf < len(self.leaves) and self.leaves[leaf] == user_id

    def _apply(self, removed: set[int | None], added: list[int | None]) -> None:
        """RFC 9420 §12.3: removes blank their leaves, then each add takes the leftmost blank leaf (or a new one).

        Trailing blank leaves are trimmed (§12.1.3 truncation); that never changes where the next add lands.
        """
        self.leaves = [None if user in removed else user for user in self.leaves]
        while self.leaves and self.leaves[-1] is None:
            self.leaves.pop()
        for user in added:
            if None in self.leaves:
                self.leaves[self.leaves.index(None)] = user
            else:
                self.leaves.append(user)

    def _maybe_execute(self) -> list[Outgoing]:
        transition = self.transition
        if transition is None or transition.waiting:
            return []
        self.transition = None
        recipients = self.members
        if transition.protocol_version == 0:  # downgraded: no group until an upgrade
            self._forget_group()
            self.protocol_version = 0
        out = self._to_json(recipients, OP_EXECUTE_TRANSITION, {"transition_id": transition.transition_id})
        return out + self._propose()

    def _forget_group(self) -> None:
        self.leaves, self.epoch, self.proposals, self.leaving = [], None, [], set()
        self.key_packages.clear()
        self.transition = None

    def _waiting_group_builders(self) -> list[int]:
        return list(self.key_packages)

    def _revoke(self, proposals: list[_Proposal], gone: int) -> list[Outgoing]:
        """Op 27 revoke of `proposals` to everyone still here who holds them."""
        refs: dict[int, list[bytes]] = {}
        for proposal in proposals:
            for holder in proposal.sent_to - {gone}:
                refs.setdefault(holder, []).append(vector(proposal.ref))
        revoke = bytes([PROPOSALS_REVOKE])
        return [BinaryFrame(user, OP_PROPOSALS, revoke + vector(b"".join(held))) for user, held in refs.items()]

    def _propose(self) -> list[Outgoing]:
        """Send proposals for every change not yet proposed in the current epoch (none while transitioning)."""
        if self.transition is not None or self.protocol_version == 0:
            return []
        if self.epoch is None:
            return self._propose_new_group()
        if self.proposals:
            # One batch per epoch: a member commits each batch it gets, and davey, shown its first commit of
            # the epoch in op 29, merges its *latest* pending commit instead (OwnCommit -> merge_pending_commit),
            # so a second batch would split the group. Later changes wait for the next epoch.
            return []
        new: list[_Proposal] = []
        for user in sorted(self.leaving):
            if user in self.members:
                new.append(self._proposal(remove_proposal(self.leaf_of(user)), self.epoch, remove_user=user))
        for user, key_package in self.key_packages.items():
            if user not in self.members or user in self.leaving:
                new.append(self._proposal(add_proposal(key_package), self.epoch, add_user=user))
        if not new:
            return []
        recipients = [u for u in self.members if u not in self.leaving]
        for proposal in new:
            proposal.sent_to = frozenset(recipients)
        self.proposals += new
        batch = b"".join(p.message for p in new)
        return self._to(recipients, OP_PROPOSALS, bytes([PROPOSALS_APPEND]) + vector(batch))

    def _propose_new_group(self) -> list[Outgoing]:
        """No group yet: once two clients wait, each gets Adds for all the others at epoch 0 (first commit wins)."""
        waiting = self._waiting_group_builders()
        if len(waiting) < 2 or self.proposals:
            return []
        self.proposals = [
            self._proposal(add_proposal(self.key_packages[user]), 0, add_user=user) for user in waiting
        ]
        for proposal in self.proposals:
            proposal.sent_to = frozenset(waiting) - {proposal.add_user}
        out: list[Outgoing] = []
        for recipient in waiting:
            batch = b"".join(p.message for p in self.proposals if p.add_user != recipient)
            out.append(BinaryFrame(recipient, OP_PROPOSALS, bytes([PROPOSALS_APPEND]) + vector(batch)))
        return out

    def _proposal(self, proposal: bytes, epoch: int, **who: int) -> _Proposal:
        message = self.sender.proposal_message(self.group_id, epoch, proposal)
        return _Proposal(message, proposal_ref(message), **who)

    def _new_transition_id(self) -> int:
        transition_id = self.next_transition_id
        self.next_transition_id = transition_id % 0xFFFF + 1  # a u16; 0 means "no transition" to clients
        return transition_id

    @staticmethod
    def _to(users: Iterable[int], op: int, payload: bytes) -> list[Outgoing]:
        return [BinaryFrame(user, op, payload) for user in users]

    @staticmethod
    def _to_json(users: Iterable[int], op: int, data: dict[str, Any]) -> list[Outgoing]:
        return [JsonOp(user, op, data) for user in users]
