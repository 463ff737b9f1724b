"""What was said in a conversation: the engine's record, shared with storage and the Discord chat."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

Role = Literal["caller", "cap"]


@dataclass(frozen=True)
class TranscriptEntry:
    """One finished utterance. `speakers` holds the Discord user ids heard in a caller turn; `speaker` is the one
    heard most (who said it), None when unknown."""

    role: Role
    text: str
    item_id: str
    speakers: frozenset[int] = frozenset()
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    interrupted: bool = False
    speaker: int | None = None
