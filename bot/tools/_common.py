"""What the storage-backed tools share: a transaction off the event loop, and finding the caller's lead."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session

from bot.storage.conversations import get_conversation
from bot.storage.database import Database
from bot.storage.errors import db_error_line
from bot.storage.leads import find_lead, get_lead
from bot.storage.models import Conversation, DealAnalysis, Lead
from bot.tools.context import is_identified_user, is_operator
from realtime.tools import ToolContext, ToolFailure, tool_time_left

log = logging.getLogger(__name__)

T = TypeVar("T")


async def in_transaction(
    database: Database,
    work: Callable[[Session], T],
    *,
    what: str,
    lock: AbstractContextManager[Any] | None = None,
) -> T:
    """Run `work` in one transaction in a worker thread (the voice loop must never wait on the database).

    A ToolFailure raised by `work` rolls back and reaches the model as is; a database error rolls back
    and becomes a `storage_failed` ToolFailure, so nothing half-written is ever left behind. A unique
    constraint race (two calls at once) is retried once. `lock`, when given, is held until the commit.
    Work that ends after the tool call's deadline (e.g. it waited for another writer's lock, which may take
    longer than TOOL_TIMEOUT_SECONDS) is rolled back: the model, told the tool timed out, hears the truth.
    """

    def run() -> T:
        with lock or nullcontext(), database.session() as session:
            result = work(session)
            left = tool_time_left()
            if left is not None and left <= 0:
                raise ToolFailure("timeout", f"Could not {what} in time; nothing was changed. Try once more.")
            return result

    for attempt in (1, 2):
        try:
            return await asyncio.to_thread(run)
        except IntegrityError as exc:
            if attempt == 2:
                log.error("%s: integrity error twice: %s", what, db_error_line(exc))
                break
        except SQLAlchemyError as exc:
            log.error("%s: database error: %s", what, db_error_line(exc))
            break
    raise ToolFailure(
        "storage_failed",
        f"Could not {what} right now; nothing was changed. "
        "Tell the caller it will be noted and try once more in a moment.",
    )


def current_conversation(session: Session, context: ToolContext) -> Conversation | None:
    if context.conversation_id is None:
        return None
    return get_conversation(session, context.guild_id, context.conversation_id)


def caller_lead(session: Session, context: ToolContext, lead_id: int | None = None) -> Lead | None:
    """The lead this call is about: the one asked for (if the caller may see it), else the Discord
    caller's own, else the one saved earlier in this conversation (unless it is another caller's)."""
    conversation = current_conversation(session, context)
    conversation_lead = None
    if conversation is not None and conversation.lead_id is not None:
        conversation_lead = get_lead(session, context.guild_id, conversation.lead_id)
        if conversation_lead is not None and not _may_share(conversation_lead, context):
            conversation_lead = None  # a second caller in the same call: never the first caller's lead
    if lead_id is not None:
        lead = get_lead(session, context.guild_id, lead_id)
        allowed = lead is not None and (
            is_operator(context)
            or (is_identified_user(context.user_id) and lead.discord_user_id == context.user_id)
            or (conversation_lead is not None and conversation_lead.id == lead.id)
        )
        if not allowed:
            raise ToolFailure(
                "lead_not_found",
                f"There is no lead {lead_id} for this caller. Omit lead_id to use the caller's own lead.",
            )
        return lead
    if is_identified_user(context.user_id):
        lead = find_lead(session, context.guild_id, discord_user_id=context.user_id)
        if lead is not None:
            return lead
    return conversation_lead


def _may_share(lead: Lead, context: ToolContext) -> bool:
    """Whether this caller may use a lead saved earlier in their conversation: an unidentified caller may
    (they are in the call), an identified one only when the lead is theirs or nobody's yet."""
    return not is_identified_user(context.user_id) or lead.discord_user_id in (None, context.user_id)


# Lead field <- analyze_deal input, copied when the lead does not have it yet.
_DEAL_FIELDS = (
    ("purchase_price", "purchase_price"),
    ("loan_amount", "loan_amount"),
    ("rehab_budget", "rehab_budget"),
    ("arv", "after_repair_value"),
)


def fill_from_analysis(lead: Lead, analysis: DealAnalysis | None) -> None:
    """Fill the lead's empty deal fields from an analysis, so Cap does not ask for figures twice."""
    if analysis is None:
        return
    for lead_field, input_name in _DEAL_FIELDS:
        value = analysis.inputs.get(input_name)
        if getattr(lead, lead_field) is None and value is not None:
            setattr(lead, lead_field, float(value))
    if lead.loan_program is None and analysis.program is not None and analysis.inputs.get("program"):
        lead.loan_program = analysis.program
