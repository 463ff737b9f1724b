"""The MLS (RFC 9420) messages a Discord voice server exchanges as DAVE's *external sender*, byte for byte.

No server MLS library exists for Python, and the voice server needs only a sliver of MLS: it never joins the
group, it signs Add/Remove proposals with its own P-256 key and reads enough of the clients' commits to know
who sits at which leaf. Everything here is cipher suite 2 (MLS_128_DHKEMP256_AES128GCM_SHA256_P256), the
only one DAVE protocol version 1 uses: ECDSA-SHA256 signatures DER-encoded, public keys as 65-byte
uncompressed points, vector lengths as RFC 9420 variable-size integers (§2.1.2).
Layouts checked against davey 0.1.7 (openmls underneath); see ARCHITECTURE.md §3b.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

MLS10: Final = 1
CIPHER_SUITE_P256: Final = 2
CREDENTIAL_BASIC: Final = 1
WIRE_PUBLIC_MESSAGE: Final = 1
SENDER_MEMBER: Final = 1
SENDER_EXTERNAL: Final = 2
CONTENT_PROPOSAL: Final = 2
CONTENT_COMMIT: Final = 3
PROPOSAL_ADD: Final = 1
PROPOSAL_REMOVE: Final = 3
PROPOSAL_OR_REF_PROPOSAL: Final = 1
PROPOSAL_OR_REF_REFERENCE: Final = 2
LEAF_SOURCE_KEY_PACKAGE: Final = 1
LEAF_SOURCE_COMMIT: Final = 3


class MlsDecodeError(ValueError):
    """Bytes that are not the MLS structure the caller expected."""


# ---- TLS presentation language with MLS varint vectors --------------------------------------------------------


def varint(value: int) -> bytes:
    """RFC 9420 §2.1.2: 1, 2 or 4 bytes, the top two bits saying which."""
    if value < 1 << 6:
        return bytes([value])
    if value < 1 << 14:
        return struct.pack(">H", 0x4000 | value)
    if value < 1 << 30:
        return struct.pack(">I", 0x8000_0000 | value)
    raise ValueError(f"vector too long for MLS: {value} bytes")


def vector(data: bytes) -> bytes:
    """`opaque data<V>`: the varint length, then the bytes."""
    return varint(len(data)) + data


class Reader:
    """Reads TLS-encoded MLS structures from a buffer; raises MlsDecodeError when it runs out."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise MlsDecodeError(f"MLS structure ends early: wanted {size} bytes at {self.offset} of {len(self.data)}")
        chunk, self.offset = self.data[self.offset : end], end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def varint(self) -> int:
        first = self.u8()
        prefix = first >> 6
        if prefix == 0:
            return first
        if prefix == 1:
            return ((first & 0x3F) << 8) | self.u8()
        if prefix == 2:
            return ((first & 0x3F) << 24) | int.from_bytes(self.take(3), "big")
        raise MlsDecodeError("invalid MLS varint prefix 0b11")

    def vector(self) -> bytes:
        return self.take(self.varint())

    @property
    def done(self) -> bool:
        return self.offset == len(self.data)


# ---- the structures a voice server reads ----------------------------------------------------------------------


def _skip_credential(reader: Reader) -> bytes:
    """Credential; returns the basic credential's identity (DAVE: the user id, 8 bytes big-endian)."""
    credential_type = reader.u16()
    if credential_type != CREDENTIAL_BASIC:
        raise MlsDecodeError(f"credential type {credential_type} is not basic (DAVE uses basic credentials)")
    return reader.vector()


def _read_leaf_node(reader: Reader) -> tuple[int, bytes]:
    """LeafNode (RFC 9420 §7.2); returns (user id from the credential, signature key)."""
    reader.vector()  # encryption_key
    signature_key = reader.vector()
    identity = _skip_credential(reader)
    for _ in range(5):  # capabilities: versions, cipher_suites, extensions, proposals, credentials
        reader.vector()
    source = reader.u8()
    if source == LEAF_SOURCE_KEY_PACKAGE:
        reader.take(16)  # lifetime: not_before, not_after
    elif source == LEAF_SOURCE_COMMIT:
        reader.vector()  # parent_hash
    reader.vector()  # extensions
    reader.vector()  # signature
    if len(identity) != 8:
        raise MlsDecodeError(f"credential identity is {len(identity)} bytes; DAVE uses an 8-byte user id")
    return int.from_bytes(identity, "big"), signature_key


@dataclass(frozen=True)
class KeyPackageInfo:
    """What the voice server checks in a client's key package (op 26)."""

    user_id: int
    signature_key: bytes
    raw: bytes


def read_key_package(reader: Reader) -> KeyPackageInfo:
    """KeyPackage (RFC 9420 §10) at the reader's position."""
    start = reader.offset
    version, suite = reader.u16(), reader.u16()
    if (version, suite) != (MLS10, CIPHER_SUITE_P256):
        raise MlsDecodeError(f"key package for MLS version {version}, cipher suite {suite}: DAVE v1 wants 1, 2")
    reader.vector()  # init_key
    user_id, signature_key = _read_leaf_node(reader)
    reader.vector()  # extensions
    reader.vector()  # signature
    return KeyPackageInfo(user_id, signature_key, reader.data[start : reader.offset])


def parse_key_package(data: bytes) -> KeyPackageInfo:
    """A whole op 26 payload: davey sends a bare KeyPackage (it starts 00 01 00 02), nothing after it."""
    reader = Reader(data)
    info = read_key_package(reader)
    if not reader.done:
        raise MlsDecodeError(f"{len(data) - reader.offset} stray bytes after the key package")
    return info


@dataclass(frozen=True)
class CommitInfo:
    """The parts of a client's commit (op 28) the voice server acts on."""

    message: bytes  # the whole MLSMessage, relayed as op 29
    epoch: int  # the epoch the commit was made in (the group moves to epoch + 1)
    committer_leaf: int
    proposal_refs: tuple[bytes, ...]  # external proposals committed by reference, in the commit's order
    inline_adds: tuple[KeyPackageInfo, ...]
    inline_removes: tuple[int, ...]


def _read_proposal(reader: Reader, adds: list[KeyPackageInfo], removes: list[int]) -> None:
    proposal_type = reader.u16()
    if proposal_type == PROPOSAL_ADD:
        adds.append(read_key_package(reader))
    elif proposal_type == PROPOSAL_REMOVE:
        removes.append(reader.u32())
    else:  # an Update, PSK, ... inline: nothing DAVE's clients send, and we cannot know its length
        raise MlsDecodeError(f"inline proposal type {proposal_type} is not understood by the emulator")


def read_commit_message(reader: Reader) -> CommitInfo:
    """An MLSMessage holding a PublicMessage commit from a member, ending exactly where the message ends."""
    start = reader.offset
    version, wire_format = reader.u16(), reader.u16()
    if version != MLS10 or wire_format != WIRE_PUBLIC_MESSAGE:
        raise MlsDecodeError(f"commit is MLS version {version}, wire format {wire_format}: want 1, public message")
    reader.vector()  # group_id
    epoch = reader.u64()
    sender_type = reader.u8()
    if sender_type != SENDER_MEMBER:
        raise MlsDecodeError(f"commit sender type {sender_type}: a DAVE commit comes from a member")
    committer_leaf = reader.u32()
    reader.vector()  # authenticated_data
    content_type = reader.u8()
    if content_type != CONTENT_COMMIT:
        raise MlsDecodeError(f"content type {content_type} is not a commit")
    proposals = Reader(reader.vector())
    refs: list[bytes] = []
    adds: list[KeyPackageInfo] = []
    removes: list[int] = []
    while not proposals.done:
        kind = proposals.u8()
        if kind == PROPOSAL_OR_REF_REFERENCE:
            refs.append(proposals.vector())
        elif kind == PROPOSAL_OR_REF_PROPOSAL:
            _read_proposal(proposals, adds, removes)
        else:
            raise MlsDecodeError(f"ProposalOrRef type {kind}")
    if reader.u8():  # optional<UpdatePath>
        _read_leaf_node(reader)
        reader.vector()  # UpdatePathNode nodes<V>
    reader.vector()  # signature
    reader.vector()  # confirmation_tag (commits only)
    reader.vector()  # membership_tag (member senders only)
    return CommitInfo(
        reader.data[start : reader.offset], epoch, committer_leaf, tuple(refs), tuple(adds), tuple(removes)
    )


def split_commit_welcome(payload: bytes) -> tuple[CommitInfo, bytes | None]:
    """Op 28: the commit message, then directly a bare Welcome when the commit adds members (no marker byte)."""
    reader = Reader(payload)
    commit = read_commit_message(reader)
    welcome = payload[reader.offset :] or None
    return commit, welcome


# ---- what the voice server writes -----------------------------------------------------------------------------


def sign_with_label(key: ec.EllipticCurvePrivateKey, label: str, content: bytes) -> bytes:
    """SignWithLabel (RFC 9420 §5.1.2): ECDSA-SHA256 over `<V>"MLS 1.0 " + label | <V>content`, DER."""
    signed = vector(b"MLS 1.0 " + label.encode()) + vector(content)
    return key.sign(signed, ec.ECDSA(hashes.SHA256()))


def add_proposal(key_package: bytes) -> bytes:
    """Proposal: Add (type 1) carrying the client's KeyPackage unchanged."""
    return struct.pack(">H", PROPOSAL_ADD) + key_package


def remove_proposal(leaf_index: int) -> bytes:
    """Proposal: Remove (type 3) of the member at `leaf_index`."""
    return struct.pack(">HI", PROPOSAL_REMOVE, leaf_index)


def proposal_ref(message: bytes) -> bytes:
    """ProposalRef (RFC 9420 §5.2) of an external proposal message: the hash of its AuthenticatedContent.

    For a PublicMessage from an external sender (no membership tag) that is the message without its first
    two bytes (the protocol version): wire_format | FramedContent | signature.
    """
    value = message[2:]
    return hashlib.sha256(vector(b"MLS 1.0 Proposal Reference") + vector(value)).digest()


class ExternalSender:
    """The voice server's MLS identity: a P-256 signing key and a basic credential."""

    def __init__(self, identity: bytes = b"\x00" * 8, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.identity = identity
        self.key = key or ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def package(self) -> bytes:
        """Op 25 payload (ExternalSender, RFC 9420 §12.1.8.1): `sig_key<V> | u16 basic | identity<V>`."""
        return vector(self.public_key) + struct.pack(">H", CREDENTIAL_BASIC) + vector(self.identity)

    def proposal_message(self, group_id: bytes, epoch: int, proposal: bytes) -> bytes:
        """A signed PublicMessage carrying one external proposal for the recipient's current `epoch`.

        No membership tag and no confirmation tag (external sender, proposal content); the signature covers
        FramedContentTBS without a group context (the sender is not a member).
        """
        framed_content = (
            vector(group_id)
            + struct.pack(">QBI", epoch, SENDER_EXTERNAL, 0)  # sender index 0: the group's only external sender
            + vector(b"")  # authenticated_data
            + bytes([CONTENT_PROPOSAL])
            + proposal
        )
        header = struct.pack(">HH", MLS10, WIRE_PUBLIC_MESSAGE)
        signature = sign_with_label(self.key, "FramedContentTBS", header + framed_content)
        return header + framed_content + vector(signature)


def group_id(channel_id: int) -> bytes:
    """DAVE's MLS group id: the voice channel id as 8 big-endian bytes."""
    return channel_id.to_bytes(8, "big")
