"""The audit log: every published event, stored once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.listing import AuditEntry, AuditPage, AuditQuery
from storage.lone import LoneStatements
from storage.tables import audit_log


class PostgresAuditWriter:
    """Where the audit consumer stores events: one lone statement each, idempotent on the id."""

    def __init__(self, lone: LoneStatements) -> None:
        self._lone = lone

    async def store(self, cloudevent: dict[str, Any]) -> bool:
        """Store one CloudEvent; False when it was stored before (a redelivery)."""
        subject = cloudevent.get("subject")
        status = await self._lone.execute(
            _STORE,
            cloudevent["id"],
            cloudevent["type"],
            int(subject) if subject is not None else None,
            datetime.fromisoformat(cloudevent["time"]),
            orjson.dumps(cloudevent.get("data") or {}).decode(),
        )
        return status == "INSERT 0 1"


_STORE = """
INSERT INTO audit_log (event_id, type, user_id, time, data)
VALUES ($1::uuid, $2, $3, $4, $5::jsonb)
ON CONFLICT (event_id) DO NOTHING
"""


class SqlAlchemyAuditLog:
    """AuditLog over one connection: the pages GET /audit reads."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

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
