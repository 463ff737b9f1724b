"""Who a tool call is for outside Discord: console-mode conversations belong to one fixed guild and caller."""

from __future__ import annotations

from realtime.tools import ToolContext

# Not a real snowflake (Discord ids are never 0), so console rows can never mix with a real guild's.
CONSOLE_GUILD_ID = 0
CONSOLE_USER_ID = 0
CONSOLE_USER_NAME = "Console caller"


def console_context(conversation_id: int | None = None, user_name: str = CONSOLE_USER_NAME) -> ToolContext:
    """The ToolContext for the console transport and for `cap-bot tools call` without --guild/--user."""
    return ToolContext(
        guild_id=CONSOLE_GUILD_ID,
        channel_id=None,
        user_id=CONSOLE_USER_ID,
        user_name=user_name,
        conversation_id=conversation_id,
    )


def is_identified_user(user_id: int | None) -> bool:
    """A real Discord user (the console caller is everyone at the keyboard, so it identifies nobody)."""
    return user_id is not None and user_id != CONSOLE_USER_ID


def is_operator(context: ToolContext) -> bool:
    """The console, or the operator's `cap-bot tools call` (user 0, which Discord never sends): may reach
    any lead of the guild by id. A voice caller Cap could not identify (user_id None) is not an operator."""
    return context.guild_id == CONSOLE_GUILD_ID or context.user_id == CONSOLE_USER_ID
