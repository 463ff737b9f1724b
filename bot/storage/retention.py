"""Transcript retention: turns older than TRANSCRIPT_RETENTION_DAYS are deleted by a periodic job.

The conversation rows stay (when, who, usage and cost feed the spending reports); only what was said goes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from bot.storage.database import Database
from bot.storage.errors import db_error_line
from bot.storage.models import Turn, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

PURGE_INTERVAL_SECONDS = 3600.0


def purge_transcripts(session: Session, before: datetime) -> int:
    """Delete every guild's transcript lines spoken before `before`, and the settled webhook deliveries (they
    carry the lead's data) made before it; returns how many transcript lines."""
    result = session.exec(delete(Turn).where(col(Turn.spoken_at) < before))  # type: ignore[call-overload]
    session.exec(
        delete(WebhookDelivery).where(  # type: ignore[call-overload]
            col(WebhookDelivery.status).in_(("delivered", "failed")), col(WebhookDelivery.created_at) < before
        )
    )
    return int(result.rowcount or 0)


async def purge_periodically(
    database: Database,
    retention_days: int,
    *,
    interval: float = PURGE_INTERVAL_SECONDS,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Purge now, then every `interval` seconds, until cancelled; a database outage waits for the next round."""
    if retention_days <= 0:
        return

    def job(cutoff: datetime) -> int:
        with database.session() as session:
            return purge_transcripts(session, cutoff)

    while True:
        try:
            purged = await asyncio.to_thread(job, clock() - timedelta(days=retention_days))
        except SQLAlchemyError as exc:
            log.warning("transcript retention: purge failed (%s); retrying in %.0f s", db_error_line(exc), interval)
        else:
            if purged:
                log.info("transcript retention: deleted %d line(s) older than %d day(s)", purged, retention_days)
        await asyncio.sleep(interval)
