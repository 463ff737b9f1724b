"""The DAVE step: passthrough of plain Opus, decryption with the current session, failures concealed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import davey
import pytest

from bot.voice.dave import DAVE_MAGIC, DaveDecryptor, DaveFailure, is_rust_panic
from tests.bot.voice.rust_panic import raise_rust_panic, rust_panic

OPUS = b"\x78opus-frame"


class StandInSession:
    """Stands in for a ready davey.DaveSession: 'encryption' is a XOR with a per-epoch byte + the marker."""

    def __init__(self, epoch: int, members: tuple[int, ...] = (), passthrough: bool = False) -> None:
        self.epoch = epoch
        self.calls: list[tuple[int, davey.MediaType]] = []
        self.ready = True
        self.members = members
        self.passthrough = passthrough  # discord.py turns it on for a protocol transition

    def get_user_ids(self) -> list[str]:
        return [str(member) for member in self.members]

    def can_passthrough(self, user_id: int) -> bool:
        return self.passthrough and user_id in self.members

    def seal(self, opus: bytes) -> bytes:
        return bytes(b ^ self.epoch for b in opus) + DAVE_MAGIC

    def decrypt(self, user_id: int, media_type: davey.MediaType, packet: bytes) -> bytes:
        self.calls.append((user_id, media_type))
        return bytes(b ^ self.epoch for b in packet[: -len(DAVE_MAGIC)])


def test_plain_opus_passes_through_without_touching_the_session() -> None:
    connection = SimpleNamespace(dave_session=StandInSession(1))
    dave = DaveDecryptor(lambda: connection.dave_session)
    assert dave.decrypt(5, OPUS) == OPUS
    assert dave.decrypt(5, b"\xf8\xff\xfe") == b"\xf8\xff\xfe"  # Opus silence is never encrypted
    assert connection.dave_session.calls == []
    assert dave.passthrough == 2


def test_decrypts_with_the_speakers_user_id() -> None:
    session = StandInSession(0x21)
    dave = DaveDecryptor(lambda: session)
    assert dave.decrypt(1234567890123, session.seal(OPUS)) == OPUS
    assert session.calls == [(1234567890123, davey.MediaType.audio)]


def test_a_session_replaced_mid_stream_is_picked_up() -> None:
    connection = SimpleNamespace(dave_session=StandInSession(1))
    dave = DaveDecryptor(lambda: connection.dave_session)
    assert dave.decrypt(7, connection.dave_session.seal(OPUS)) == OPUS
    connection.dave_session = StandInSession(2)  # discord.py re-initialised DAVE (new epoch)
    assert dave.decrypt(7, connection.dave_session.seal(OPUS)) == OPUS
    assert connection.dave_session.calls == [(7, davey.MediaType.audio)]


def test_real_davey_session_without_a_key_for_the_user_is_reported_not_raised() -> None:
    session = davey.DaveSession(1, 111, 222)  # no MLS group yet: no decryptor for anyone
    dave = DaveDecryptor(lambda: session)
    assert dave.decrypt(333, b"ciphertext" + DAVE_MAGIC) is DaveFailure.NO_KEY
    assert "NoDecryptorForUser" in (dave.last_error or "")
    assert dave.decrypt(333, OPUS) == OPUS  # plain frames still pass during the transition


def test_no_session_and_unexpected_errors() -> None:
    assert DaveDecryptor(lambda: None).decrypt(1, OPUS + DAVE_MAGIC) is DaveFailure.NO_SESSION

    class Broken:
        def decrypt(self, user_id: int, media_type: davey.MediaType, packet: bytes) -> bytes:
            raise RuntimeError("Already mutably borrowed")

    class Rejecting:
        def decrypt(self, user_id: int, media_type: davey.MediaType, packet: bytes) -> bytes:
            raise ValueError("Failed to decrypt: DecryptionFailed")

    assert DaveDecryptor(lambda: Broken()).decrypt(1, OPUS + DAVE_MAGIC) is DaveFailure.ERROR
    assert DaveDecryptor(lambda: Rejecting()).decrypt(1, OPUS + DAVE_MAGIC) is DaveFailure.FAILED


def test_plain_opus_from_a_group_member_is_refused_outside_a_transition() -> None:
    """Otherwise the voice server could speak as any caller: what end-to-end encryption rules out."""
    session = StandInSession(1, members=(7, 8))
    dave = DaveDecryptor(lambda: session)
    assert dave.decrypt(7, OPUS) is DaveFailure.PLAINTEXT
    assert dave.decrypt(7, b"\xf8\xff\xfe") == b"\xf8\xff\xfe"  # Opus silence is never encrypted
    assert dave.decrypt(9, OPUS) == OPUS  # not in the group (yet): nothing to hold them to
    session.passthrough = True  # a transition: plain frames are legitimate for its duration
    assert dave.decrypt(7, OPUS) == OPUS
    session.passthrough, session.ready = False, False  # the call went back to DAVE protocol 0
    assert dave.decrypt(7, OPUS) == OPUS


def test_the_stand_in_panic_is_the_real_pyo3_panic_exception() -> None:
    """davey's panics are BaseExceptions, which `except Exception` does not catch (the bug)."""
    panic = rust_panic()
    assert type(panic).__module__ == "pyo3_runtime" and type(panic).__name__ == "PanicException"
    assert not isinstance(panic, Exception)
    assert is_rust_panic(panic)
    assert not is_rust_panic(KeyboardInterrupt()) and not is_rust_panic(asyncio.CancelledError())


def test_a_rust_panic_in_davey_costs_the_frame_not_the_caller() -> None:
    class Panicking(StandInSession):
        def decrypt(self, user_id: int, media_type: davey.MediaType, packet: bytes) -> bytes:
            raise_rust_panic()

        def get_user_ids(self) -> list[str]:
            raise_rust_panic()

    session = Panicking(1, members=(7,))
    dave = DaveDecryptor(lambda: session)
    assert dave.decrypt(7, OPUS + DAVE_MAGIC) is DaveFailure.ERROR
    assert "PanicException" in (dave.last_error or "")
    assert dave.decrypt(7, OPUS) == OPUS  # the membership check panicked: the frame is not lost for it


def test_interrupts_and_cancellation_still_pass_through_the_dave_step() -> None:
    for stop in (KeyboardInterrupt(), SystemExit(), asyncio.CancelledError()):

        class Stopping(StandInSession):
            def decrypt(self, user_id: int, media_type: davey.MediaType, packet: bytes, stop=stop) -> bytes:
                raise stop

        dave = DaveDecryptor(lambda: Stopping(1))
        with pytest.raises(type(stop)):
            dave.decrypt(7, OPUS + DAVE_MAGIC)
