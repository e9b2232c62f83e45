"""When a visit moves or is cancelled, its travel goes back to a coordinator: the requests
and arrangements are flagged "to review" (and show on the worklist's travel bucket).

Follow-up's schedule calls this on every move and cancellation. It reads only travel's own
tables (no follow-up module), so that follow-up may call it without an import cycle."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from coordination.travel.history import record_travel_event
from coordination.travel.models import TravelArrangement, TravelRequest, TravelStatus
from core.audit.service import Actor
from core.clock import Clock

MOVED = "moved"
CANCELLED = "cancelled"


def flag_travel_for_review(
    session: Session, *, clock: Clock, actor: Actor, visit_id: int, reason: str
) -> int:
    """Flag the visit's travel requests that still stand (not declined) and their
    arrangements to review, because the visit `reason` ("moved" or "cancelled"). Returns
    how many requests were flagged."""
    requests = list(
        session.scalars(
            select(TravelRequest).where(
                TravelRequest.visit_id == visit_id,
                TravelRequest.status != TravelStatus.DECLINED,
            )
        )
    )
    if not requests:
        return 0
    now = clock.now()
    for request in requests:
        request.review_needed_at = now
        request.review_reason = reason
        request.updated_at = now
        record_travel_event(
            session,
            clock=clock,
            actor=actor,
            request=request,
            action="flagged",
            detail={"visit": reason},
        )
    session.execute(
        update(TravelArrangement)
        .where(TravelArrangement.request_id.in_([request.id for request in requests]))
        .values(review_needed_at=now)
    )
    return len(requests)
