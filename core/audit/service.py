"""Writing and reading the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from core.audit.models import AuditEvent, AuditOutcome
from core.clock import Clock


@dataclass(frozen=True)
class Actor:
    """Who is acting and from where; built by the route layer, passed to services."""

    user_id: int | None
    label: str
    role: str | None
    ip: str | None = None
    user_agent: str | None = None

    @classmethod
    def system(cls, job: str) -> Actor:
        return cls(user_id=None, label=f"system:{job}", role=None)


def record_event(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    action: str,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    patient_id: int | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event. `detail` names fields that changed, never their values."""
    event = AuditEvent(
        at=clock.now(),
        actor_user_id=actor.user_id,
        actor_label=actor.label[:254],
        actor_role=actor.role,
        action=action,
        outcome=outcome,
        patient_id=patient_id,
        target=target,
        ip=actor.ip,
        user_agent=(actor.user_agent or "")[:200] or None,
        detail=detail,
    )
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    patient_id: int | None = None
    outcome: AuditOutcome | None = None
    since: datetime | None = None
    until: datetime | None = None


def _filtered(query: Select[Any], criteria: AuditFilter) -> Select[Any]:
    if criteria.actor:
        query = query.where(AuditEvent.actor_label.ilike(f"%{criteria.actor.strip()}%"))
    if criteria.action:
        query = query.where(AuditEvent.action.startswith(criteria.action.strip()))
    if criteria.patient_id is not None:
        query = query.where(AuditEvent.patient_id == criteria.patient_id)
    if criteria.outcome is not None:
        query = query.where(AuditEvent.outcome == criteria.outcome)
    if criteria.since is not None:
        query = query.where(AuditEvent.at >= criteria.since)
    if criteria.until is not None:
        query = query.where(AuditEvent.at < criteria.until)
    return query


def search_events(
    session: Session, *, criteria: AuditFilter, page: int, per_page: int = 50
) -> tuple[list[AuditEvent], int]:
    """Events matching `criteria`, newest first, with the total count for pagination."""
    total = session.scalar(_filtered(select(func.count(AuditEvent.id)), criteria)) or 0
    rows = session.scalars(
        _filtered(select(AuditEvent), criteria)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(per_page)
        .offset(max(page - 1, 0) * per_page)
    ).all()
    return list(rows), total
