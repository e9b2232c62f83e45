"""Generating many schedules at once: a state bringing its existing cohort on board, or a
bulk import from treatment centers. Same rules as `sync_schedule` for new patients, written
with set-based inserts instead of one ORM object per visit."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Integer, Table, insert, literal, select
from sqlalchemy.orm import Session

from coordination.followup.models import FollowUpPlan, Visit, VisitEvent, VisitStatus
from coordination.followup.protocol import ProtocolLibrary
from core.audit.service import Actor
from core.clock import Clock, local_today
from core.db import UTCDateTime
from core.models import Patient, PatientStatus, Therapy
from core.text import N_

CHUNK = 5_000
BULK_ACTOR = Actor.system("bulk-schedules")


def generate_schedules(
    session: Session,
    *,
    clock: Clock,
    library: ProtocolLibrary,
    patient_ids: list[int] | None,
    actor: Actor = BULK_ACTOR,
) -> int:
    """Create the follow-up plan and visits of every listed patient (all patients when
    `patient_ids` is None) that has an infusion date, is followed (not withdrawn or
    deceased) and has no plan yet. Returns the number of visits created. The history rows
    of the visits recorded missed name `actor` (whoever enrolled the patients): the
    schedules are then exactly those `sync_schedule` makes for the same patients."""
    now = clock.now()
    planned = select(FollowUpPlan.patient_id)
    query = (
        select(Patient.id, Therapy.code, Patient.infusion_date, Patient.time_zone)
        .join(Therapy, Therapy.id == Patient.therapy_id)
        .where(
            Patient.infusion_date.is_not(None),
            Patient.status.not_in([PatientStatus.WITHDRAWN, PatientStatus.DECEASED]),
            Patient.id.not_in(planned),
        )
        .order_by(Patient.id)
    )
    if patient_ids is not None:
        query = query.where(Patient.id.in_(patient_ids))
    plans_table, visits_table = FollowUpPlan.__table__, Visit.__table__
    assert isinstance(plans_table, Table) and isinstance(visits_table, Table)
    plans: list[dict[str, Any]] = []
    visits: list[dict[str, Any]] = []
    created = 0

    def flush_rows() -> None:
        if plans:
            session.execute(insert(plans_table), plans)
        if visits:
            session.execute(insert(visits_table), visits)
            _record_closed_before(
                session,
                now=now,
                actor=actor,
                patient_ids=[plan["patient_id"] for plan in plans],
            )
        plans.clear()
        visits.clear()

    today_in: dict[str, date] = {}
    for patient_id, therapy_code, anchor, zone in session.execute(query):
        if zone not in today_in:
            today_in[zone] = local_today(clock, zone)
        today = today_in[zone]
        protocol = library.current(therapy_code)
        assert anchor is not None  # filtered in the query
        if protocol is None:
            raise ValueError(f"no follow-up protocol for therapy {therapy_code!r}")
        plans.append(
            {
                "patient_id": patient_id,
                "therapy_code": protocol.therapy,
                "protocol_version": protocol.version,
                "anchor_date": anchor,
                "created_at": now,
                "updated_at": now,
            }
        )
        for sequence, protocol_visit in enumerate(protocol.visits, start=1):
            opens, target, closes = protocol_visit.window(anchor)
            visits.append(
                {
                    "patient_id": patient_id,
                    "visit_key": protocol_visit.key,
                    "protocol_version": protocol.version,
                    "sequence": sequence,
                    "target_date": target,
                    "window_start": opens,
                    "window_end": closes,
                    # As in sync_schedule: a window that closed before follow-up began here
                    # is recorded missed and already followed up.
                    "status": VisitStatus.DUE if closes >= today else VisitStatus.MISSED,
                    "missed_acknowledged_at": None if closes >= today else now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        created += len(protocol.visits)
        if len(visits) >= CHUNK:
            flush_rows()
    flush_rows()
    session.flush()
    return created


def _record_closed_before(
    session: Session, *, now: datetime, actor: Actor, patient_ids: list[int]
) -> None:
    """The history row of each visit just recorded missed (one set-based insert), for the
    patients whose schedules were just created (they had none before)."""
    events_table = VisitEvent.__table__
    assert isinstance(events_table, Table)
    session.execute(
        insert(events_table).from_select(
            [
                "visit_id",
                "at",
                "actor_user_id",
                "actor_label",
                "action",
                "from_status",
                "to_status",
                "reason",
            ],
            select(
                Visit.id,
                literal(now, UTCDateTime()),
                literal(actor.user_id, Integer()),
                literal(actor.label[:254]),
                literal("miss"),
                literal(VisitStatus.DUE.value),
                literal(VisitStatus.MISSED.value),
                literal(N_("the window had closed before follow-up began here")),
            ).where(
                Visit.patient_id.in_(patient_ids),
                Visit.status == VisitStatus.MISSED,
                Visit.missed_acknowledged_at == now,
            ),
        )
    )
