"""The DAVE step of receiving: end-to-end decrypt a caller's frame with the connection's current session.

A DAVE-encrypted frame ends with the 2-byte magic marker 0xFAFA. Anything else is plain Opus, which is
legitimate during protocol transitions (discord.py turns the session's passthrough mode on for them), when
the call runs with `dave_protocol_version` 0 (no ready session), and for Opus silence (never encrypted). A
plain frame from a member of a ready group outside a transition is refused, as Discord's own clients do:
otherwise the voice server could speak as any caller, which is what end-to-end encryption rules out.
The session is read fresh for every frame through a callable, because discord.py replaces it (or
re-initialises it) on every MLS epoch change. `decrypt` raises ValueError (e.g. NoDecryptorForUser)
while the group has no key for that user yet: the frame is lost, the caller is not. A Rust panic inside davey
arrives as `pyo3_runtime.PanicException`, a BaseException that `except Exception` lets through (and with it
out of the socket reader thread): `is_survivable` lets it cost one frame, while interrupts still propagate.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Final, Protocol

import davey

DAVE_MAGIC: Final = b"\xfa\xfa"
# How long members' plain audio stays acceptable after a DAVE transition executes (discord.py's own figure).
PASSTHROUGH_AFTER_TRANSITION_SECONDS: Final = 10
OPUS_SILENCE: Final = b"\xf8\xff\xfe"
_AUDIO: Final = davey.MediaType.audio


def is_rust_panic(exc: BaseException) -> bool:
    """Whether `exc` is a Rust panic inside davey: pyo3 raises `pyo3_runtime.PanicException`, a BaseException.

    pyo3 creates that class at run time (there is no module to import it from), hence the name check.
    """
    return any(cls.__name__ == "PanicException" and cls.__module__ == "pyo3_runtime" for cls in type(exc).__mro__)


def is_survivable(exc: BaseException) -> bool:
    """An error one packet may cost: any Exception, or a davey panic; never an interrupt, exit or cancellation."""
    return isinstance(exc, Exception) or is_rust_panic(exc)


class DaveSessionLike(Protocol):
    """What the receiver needs of `davey.DaveSession`."""

    ready: bool

    def decrypt(self, user_id: int, media_type: davey.MediaType, packet: bytes) -> bytes: ...

    def get_user_ids(self) -> list[str]: ...

    def can_passthrough(self, user_id: int) -> bool: ...

    def set_passthrough_mode(self, passthrough_mode: bool, transition_expiry: int | None = None) -> None: ...


class DaveFailure(Enum):
    """Why a DAVE frame could not be opened; each has a counter in the receiver's stats."""

    NO_SESSION = "dave_no_session"
    PLAINTEXT = "dave_plaintext_refused"
    NO_KEY = "dave_no_key"
    FAILED = "dave_failed"
    ERROR = "dave_error"


class DaveDecryptor:
    """Opens DAVE frames with whatever session `session_source()` returns right now."""

    def __init__(self, session_source: Callable[[], DaveSessionLike | None]) -> None:
        self._session_source = session_source
        self.passthrough = 0
        self.decrypted = 0
        self.last_error: str | None = None

    def decrypt(self, user_id: int, frame: bytes) -> bytes | DaveFailure:
        """The Opus frame inside `frame` (unchanged when it is not DAVE-encrypted)."""
        if not frame.endswith(DAVE_MAGIC):
            if frame != OPUS_SILENCE and self._refuses_plaintext(user_id):
                return DaveFailure.PLAINTEXT
            self.passthrough += 1
            return frame
        session = self._session_source()
        if session is None:
            return DaveFailure.NO_SESSION
        try:
            opus = session.decrypt(user_id, _AUDIO, frame)
        except ValueError as exc:  # no key for this user yet (NoDecryptorForUser), or a failed tag
            self.last_error = str(exc)
            return DaveFailure.NO_KEY if "NoDecryptor" in self.last_error else DaveFailure.FAILED
        except BaseException as exc:  # a borrow error or a Rust panic (not an Exception) from davey
            if not is_survivable(exc):
                raise
            self.last_error = f"{type(exc).__name__}: {exc}"
            return DaveFailure.ERROR  # lose the frame only
        self.decrypted += 1
        return opus

    def transition_executed(self, protocol_version: int) -> None:
        """A DAVE transition just executed (op 22, after discord.py handled it): plain audio ends 10 s from now.

        discord.py 2.7.1's `_execute_transition` calls `set_passthrough_mode(True, 10)` when the call comes back
        to DAVE after a downgrade; in davey `True` means *unlimited* (the expiry applies only when turning
        passthrough off), so members' plain audio would be accepted for good. Turning it off with the same
        expiry ends it 10 s from now. davey only ever shortens an expiry this way, so after any other
        transition it changes nothing. After a downgrade (protocol 0) plain audio is the norm: left alone.
        """
        session = self._session_source()
        if protocol_version == 0 or session is None or not getattr(session, "ready", False):
            return
        try:
            session.set_passthrough_mode(False, PASSTHROUGH_AFTER_TRANSITION_SECONDS)
        except BaseException as exc:
            if not is_survivable(exc):
                raise
            self.last_error = f"{type(exc).__name__}: {exc}"

    def _refuses_plaintext(self, user_id: int) -> bool:
        """A ready group, this user in it, and their decryptor not in passthrough (no transition running)."""
        session = self._session_source()
        if session is None or not getattr(session, "ready", False):
            return False
        try:
            return str(user_id) in session.get_user_ids() and not session.can_passthrough(user_id)
        except BaseException as exc:  # a davey error or panic must not cost the frame
            if not is_survivable(exc):
                raise
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
