"""What patients and caregivers ask between visits: to move a visit."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from coordination.followup.models import MoveRequest, RequestStatus, Visit
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.errors import FieldErrors
from core.text import N_


def request_move(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    visit: Visit,
    preferred_date: date | None,
    note: str,
) -> MoveRequest:
    """Ask the care team to move a visit; it lands on the coordinator's worklist.

    A second request for the same visit replaces the open one (one open request a visit).
    The actor may have no user: a reply "R" from a patient without a portal account."""
    if not visit.status.is_open:
        raise FieldErrors({"": N_("This visit can no longer be moved.")})
    today = clock.now().date()
    if preferred_date is not None and preferred_date < today:
        raise FieldErrors({"preferred_date": N_("Choose a date from today on.")})
    if len(note) > 500:
        raise FieldErrors({"note": N_("Use at most 500 characters.")})
    now = clock.now()
    session.execute(
        update(MoveRequest)
        .where(MoveRequest.visit_id == visit.id, MoveRequest.status == RequestStatus.OPEN)
        .values(status=RequestStatus.DONE, handled_at=now)
    )
    request = MoveRequest(
        visit_id=visit.id,
        patient_id=visit.patient_id,
        requested_by_user_id=actor.user_id,
        preferred_date=preferred_date,
        note=note.strip() or None,
        status=RequestStatus.OPEN,
        created_at=now,
    )
    session.add(request)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="visit.move_request",
        patient_id=visit.patient_id,
        target=f"visit:{visit.id}",
    )
    return request


def open_move_requests(session: Session, *, visit_id: int) -> list[MoveRequest]:
    return list(
        session.scalars(
            select(MoveRequest)
            .where(MoveRequest.visit_id == visit_id, MoveRequest.status == RequestStatus.OPEN)
            .order_by(MoveRequest.created_at)
        )
    )


def close_move_requests(session: Session, *, clock: Clock, actor: Actor, visit: Visit) -> int:
    """Mark the visit's open move requests as handled (after the coordinator rebooked it,
    or decided not to move it). Returns how many were open."""
    return close_visits_move_requests(session, clock=clock, actor=actor, visits=[visit])


def close_visits_move_requests(
    session: Session, *, clock: Clock, actor: Actor, visits: Collection[Visit]
) -> int:
    """`close_move_requests` for several visits at once (one query): the visits a center's
    results completed together."""
    if not visits:
        return 0
    requests = session.scalars(
        select(MoveRequest).where(
            MoveRequest.visit_id.in_({visit.id for visit in visits}),
            MoveRequest.status == RequestStatus.OPEN,
        )
    ).all()
    for request in requests:
        request.status = RequestStatus.DONE
        request.handled_at = clock.now()
        request.handled_by_user_id = actor.user_id
    session.flush()
    return len(requests)
