"""The demo's travel support: each demo state's policy with a version in its history, and a
few requests in different states of their life (asked, arranged), for booked visits.

Policies are seeded with the test world (tests rely on them); requests only by `make demo`
(the test world has no schedules)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import Visit
from coordination.travel.models import TravelKind, TravelPolicy
from coordination.travel.requests import TravelAsk, appointment_day, ask_for_travel, is_booked_ahead
from coordination.travel.service import (
    ArrangementInput,
    add_arrangement,
    approve_request,
    mark_arranged,
)
from core.audit.service import Actor
from core.clock import Clock
from core.identity.models import Role, User
from core.models import Patient, State

ALL_KINDS = [kind.value for kind in TravelKind]
# (state, days from today the version starts, kinds, mileage rate, nights, night cap,
# meal per-diem, travellers); amounts in cents. Maryland raises its mileage rate next month;
# Colorado started with transport and meals and added lodging and an escort two months ago.
DEMO_POLICIES: list[tuple[str, int, list[str], int, int, int, int, int]] = [
    ("MD", -365, ALL_KINDS, 67, 3, 15_000, 6_000, 2),
    ("MD", 30, ALL_KINDS, 70, 3, 15_000, 6_000, 2),
    ("CO", -400, ["mileage", "ride", "meals"], 60, 0, 0, 4_500, 1),
    ("CO", -60, ["mileage", "ride", "lodging", "meals", "escort"], 65, 2, 12_000, 5_000, 2),
]


def seed_demo_travel_policies(
    session: Session, *, clock: Clock, states: dict[str, State], admin: User
) -> None:
    """The demo states' travel policies (DEMO_POLICIES), as an admin would have added them."""
    now = clock.now()
    today = now.date()
    session.add_all(
        TravelPolicy(
            state_id=states[code].id,
            effective_from=today + timedelta(days=start),
            funded_kinds=kinds,
            mileage_rate_cents=rate,
            max_lodging_nights=nights,
            lodging_night_cap_cents=night_cap,
            meal_per_diem_cents=per_diem,
            max_travellers=travellers,
            created_at=now + timedelta(days=min(start, 0)),
            created_by_user_id=admin.id,
        )
        for code, start, kinds, rate, nights, night_cap, per_diem, travellers in DEMO_POLICIES
    )
    session.flush()


def seed_demo_travel_requests(session: Session, *, clock: Clock, users: dict[str, User]) -> None:
    """A request arranged for Maya (a flight and lodging, with costs; another Maryland
    patient if she has no booked visit), one waiting for a coordinator in Colorado: through
    the same services the pages call."""
    now = clock.now()
    patients = {patient.given_name: patient for patient in session.scalars(select(Patient))}
    coordinators = {
        state_id: user
        for user in users.values()
        if user.role is Role.COORDINATOR
        for state_id in user.state_ids
    }

    def of_state(code: str) -> list[Patient]:
        # Maya first (her login shows the arranged trip), then by id.
        return sorted(
            (patient for patient in patients.values() if patient.state.code == code),
            key=lambda patient: (patient.given_name != "Maya", patient.id),
        )

    done: set[str] = set()
    for patient in [*of_state("MD"), *of_state("CO")]:
        if patient.state.code in done:
            continue
        visit = session.scalar(
            select(Visit)
            .where(Visit.patient_id == patient.id, Visit.appointment_at > now)
            .order_by(Visit.appointment_at)
            .limit(1)
        )
        if visit is None or not is_booked_ahead(visit, now=now):
            continue
        day = appointment_day(visit, patient_zone=patient.time_zone)
        assert day is not None
        login = next(
            (user for user in users.values() if user.patient_id == patient.id),
            coordinators[patient.state_id],
        )
        asker = Actor(user_id=login.id, label=login.login or "", role=login.role.value)
        maya = patient.state.code == "MD"  # the arranged one
        kinds = ["flight", "lodging", "meals"] if maya else ["mileage", "meals"]
        request = ask_for_travel(
            session,
            clock=clock,
            actor=asker,
            patient=patient,
            visit=visit,
            ask=TravelAsk(
                kinds=kinds,
                depart_on=(day - timedelta(days=1 if maya else 0)).isoformat(),
                return_on=day.isoformat(),
                travellers="2" if maya else "1",
                needs="I need a quiet room near the hospital." if maya else "",
            ),
        )
        done.add(patient.state.code)
        if maya:
            coordinator = coordinators[patient.state_id]
            staff = Actor(user_id=coordinator.id, label=coordinator.login or "", role="coordinator")
            approve_request(session, clock=clock, actor=staff, request=request)
            for kind, summary, start, cost in (
                (
                    "flight",
                    "Southwest, round trip for two, ref. DEMO42",
                    day - timedelta(days=1),
                    "318.40",
                ),
                ("lodging", "Hope Lodge near the hospital, 1 night", day - timedelta(days=1), "0"),
            ):
                add_arrangement(
                    session,
                    clock=clock,
                    actor=staff,
                    request=request,
                    data=ArrangementInput(
                        kind=kind,
                        summary=summary,
                        starts_on=start.isoformat(),
                        ends_on=day.isoformat(),
                        cost=cost,
                    ),
                )
            mark_arranged(session, clock=clock, actor=staff, request=request)
