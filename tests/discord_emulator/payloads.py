"""Gateway and REST JSON for the emulated guild, shaped as Discord's API v10 sends it (discord.py parses it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import discord

CHANNEL_TYPE_TEXT = 0
CHANNEL_TYPE_VOICE = 2
JOINED_AT = "2026-01-01T00:00:00+00:00"


@dataclass
class EmulatedUser:
    id: int
    name: str
    bot: bool = False
    roles: tuple[int, ...] = ()

    def user(self) -> dict[str, Any]:
        return {"id": str(self.id), "username": self.name, "global_name": self.name, "discriminator": "0",
                "avatar": None, "bot": self.bot}

    def member(self) -> dict[str, Any]:
        return {"user": self.user(), "roles": [str(role) for role in self.roles], "joined_at": JOINED_AT,
                "deaf": False, "mute": False, "flags": 0}


def role(role_id: int, name: str, permissions: discord.Permissions, position: int = 0) -> dict[str, Any]:
    return {"id": str(role_id), "name": name, "permissions": str(permissions.value), "position": position,
            "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}


def channel(guild_id: int, channel_id: int, name: str, kind: int, position: int) -> dict[str, Any]:
    data: dict[str, Any] = {"id": str(channel_id), "guild_id": str(guild_id), "name": name, "type": kind,
                            "position": position, "permission_overwrites": [], "nsfw": False, "parent_id": None}
    if kind == CHANNEL_TYPE_VOICE:
        data.update(bitrate=64000, user_limit=0, rtc_region=None)
    return data


def voice_state(guild_id: int, user: EmulatedUser, channel_id: int | None, session_id: str) -> dict[str, Any]:
    return {"guild_id": str(guild_id), "channel_id": None if channel_id is None else str(channel_id),
            "user_id": str(user.id), "session_id": session_id, "deaf": False, "mute": False, "self_deaf": False,
            "self_mute": False, "self_video": False, "suppress": False, "request_to_speak_timestamp": None,
            "member": user.member()}


def message(message_id: int, channel_id: int, guild_id: int, author: EmulatedUser, content: str,
            attachments: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": str(message_id), "channel_id": str(channel_id), "guild_id": str(guild_id), "author": author.user(),
            "content": content, "timestamp": datetime.now(UTC).isoformat(), "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": attachments,
            "embeds": [], "pinned": False, "type": 0, "flags": 0}
