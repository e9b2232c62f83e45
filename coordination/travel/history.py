"""A travel request's history: every change with who made it and when, on the request's
own page (its events) and in the audit log."""

from __future__ import annotations

from sqlalchemy.orm import Session

from coordination.travel.models import TravelEvent, TravelRequest
from core.audit.service import Actor, record_event
from core.clock import Clock


def record_travel_event(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    request: TravelRequest,
    action: str,
    detail: dict[str, object] | None = None,
) -> None:
    """Add the change to the request's history and to the audit log."""
    session.add(
        TravelEvent(
            request_id=request.id,
            at=clock.now(),
            actor_user_id=actor.user_id,
            actor_label=actor.label[:254],
            action=action,
            detail=detail,
        )
    )
    record_event(
        session,
        clock=clock,
        actor=actor,
        action=f"travel.{action}",
        patient_id=request.patient_id,
        target=f"travel_request:{request.id}",
        detail=detail,
    )
