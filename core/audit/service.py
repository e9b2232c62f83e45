"""Writing and reading the audit log."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, insert, select
from sqlalchemy.orm import Session

from core.audit.models import AuditEvent, AuditOutcome
from core.clock import Clock
from core.db import table_of

# The role label of a treatment center's system acting through the FHIR API.
FHIR_CLIENT_ROLE = "fhir_client"


@dataclass(frozen=True)
class Actor:
    """Who is acting and from where; built by the route layer, passed to services.

    A person has a `user_id`; a treatment center's system (a registered FHIR client) has a
    `client_id` instead."""

    user_id: int | None
    label: str
    role: str | None
    ip: str | None = None
    user_agent: str | None = None
    client_id: str | None = None

    @classmethod
    def system(cls, job: str) -> Actor:
        return cls(user_id=None, label=f"system:{job}", role=None)

    @classmethod
    def fhir_client(
        cls, client_id: str, ip: str | None = None, user_agent: str | None = None
    ) -> Actor:
        """A registered FHIR client (a treatment center's system), by its OAuth client id."""
        return cls(
            user_id=None,
            label=client_id,
            role=FHIR_CLIENT_ROLE,
            ip=ip,
            user_agent=user_agent,
            client_id=client_id,
        )


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
    client_id: str | None = None,
) -> AuditEvent:
    """Append one event. `detail` names fields that changed, never their values. The row
    goes to the database with the session's next flush (or the commit): a use case that
    writes many records does not pay one round trip per event.

    `client_id` names the FHIR client an event is about when it is not the actor (an admin
    registering or disabling it), so that filtering by client shows both what the client
    did and what was done to it."""
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
        client_id=client_id or actor.client_id,
    )
    session.add(event)
    return event


@dataclass(frozen=True)
class EventData:
    """One event of `record_events`: what `record_event` takes besides the actor."""

    action: str
    patient_id: int | None = None
    target: str | None = None
    detail: dict[str, Any] | None = None
    outcome: AuditOutcome = AuditOutcome.SUCCESS


def listed_targets(targets: Sequence[str], limit: int = 120) -> str:
    """The target of an event about several records (`Patient/1, Observation/7, …`): as
    many as the column's `limit` characters hold; the event's detail lists them all."""
    text = ", ".join(targets)
    if len(text) <= limit:
        return text
    cut = text.rfind(", ", 0, limit - 3)
    return text[:cut] + ", …" if cut > 0 else text[: limit - 1] + "…"


def record_events(
    session: Session, *, clock: Clock, actor: Actor, events: Iterable[EventData]
) -> int:
    """Append many events by one actor at once, each the row `record_event` would append
    (one INSERT for all: a center's transaction writes thousands). Returns how many."""
    at = clock.now()
    rows = [
        {
            "at": at,
            "actor_user_id": actor.user_id,
            "actor_label": actor.label[:254],
            "actor_role": actor.role,
            "action": event.action,
            "outcome": event.outcome,
            "patient_id": event.patient_id,
            "target": event.target,
            "ip": actor.ip,
            "user_agent": (actor.user_agent or "")[:200] or None,
            "detail": event.detail,
            "client_id": actor.client_id,
        }
        for event in events
    ]
    if rows:
        session.execute(insert(table_of(AuditEvent)), rows)
    return len(rows)


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    patient_id: int | None = None
    outcome: AuditOutcome | None = None
    since: datetime | None = None
    until: datetime | None = None
    client_id: str | None = None  # a FHIR client: what it did and what was done to it


def _filtered(query: Select[Any], criteria: AuditFilter) -> Select[Any]:
    if criteria.actor:
        query = query.where(AuditEvent.actor_label.ilike(f"%{criteria.actor.strip()}%"))
    if criteria.action:
        query = query.where(AuditEvent.action.startswith(criteria.action.strip()))
    if criteria.patient_id is not None:
        query = query.where(AuditEvent.patient_id == criteria.patient_id)
    if criteria.outcome is not None:
        query = query.where(AuditEvent.outcome == criteria.outcome)
    if criteria.client_id:
        query = query.where(AuditEvent.client_id == criteria.client_id)
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
