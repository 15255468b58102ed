"""The audit log: every published event, stored once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.listing import AuditEntry, AuditPage, AuditQuery
from storage.tables import audit_log


class SqlAlchemyAuditLog:
    """AuditLog over one connection; `store` is idempotent on the event id."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def store(self, cloudevent: dict[str, Any]) -> bool:
        """Store one CloudEvent; False when it was stored before (a redelivery)."""
        subject = cloudevent.get("subject")
        stmt = (
            insert(audit_log)
            .values(
                event_id=cloudevent["id"],
                type=cloudevent["type"],
                user_id=int(subject) if subject is not None else None,
                time=datetime.fromisoformat(cloudevent["time"]),
                data=cloudevent.get("data") or {},
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
        )
        result = await self._conn.execute(stmt)
        return bool(result.rowcount)

    async def list(self, query: AuditQuery) -> AuditPage:
        stmt = select(audit_log).order_by(audit_log.c.id.desc()).limit(query.limit + 1)
        if query.user_id is not None:
            stmt = stmt.where(audit_log.c.user_id == query.user_id)
        if query.type is not None:
            stmt = stmt.where(audit_log.c.type == query.type)
        if query.after is not None:
            stmt = stmt.where(audit_log.c.id < query.after)
        rows = (await self._conn.execute(stmt)).mappings().all()
        items = [
            AuditEntry(
                id=r["id"],
                event_id=str(r["event_id"]),
                type=r["type"],
                user_id=r["user_id"],
                time=r["time"],
                data=r["data"],
            )
            for r in rows[: query.limit]
        ]
        next_after = items[-1].id if len(rows) > query.limit else None
        return AuditPage(items, next_after)
