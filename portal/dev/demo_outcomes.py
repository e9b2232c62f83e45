"""The demo's infused cohorts for the outcome reports: enough patients of each therapy in
each demo state, infused since the agreements began (2025), that the outcome dashboards,
rebate statements and snapshots show living figures from the first minute instead of
small counts hidden as "<11".

Everything is fictional and fixed by each patient's place in the list (no randomness):
- 100 patients per state and therapy, infused from 2025-01-10 on, one a week
  (those infused lately are still in their windows: "not yet");
- a month-12 result for most (fetal hemoglobin for Casgevy, total hemoglobin for
  Lyfgenia), recorded two days after it was taken; one in thirteen has none ("missing
  data"); a few fall below the agreements' thresholds;
- Medicaid claims loaded through the same `load_claims` as an upload, one file per state
  and quarter, each loaded three weeks after its quarter (or yesterday, for the current
  one): a crisis stay before the infusion for everyone, a crisis stay after it (months 7
  to 16) for one in four, a crisis in the emergency department for one in ten;
- one in 29 lost to follow-up and one in 37 deceased, some months after the infusion;
- the nightly snapshots (outcomes of each agreement, the program figures) taken as of
  the seed, and one kept as of the end of the last quarter.

These patients have no phone (no texts) and no visits: the program's adherence figures
come from the demo's own follow-up (`seed_demo_follow_up`)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.clock import Clock, FrozenClock
from core.models import (
    Language,
    Observation,
    ObservationSource,
    ObservationStatus,
    Patient,
    PatientStatus,
    State,
    Therapy,
    TreatmentCenter,
)
from core.service import record_history
from portal.dev.demo_claims import DEMO_ACTOR, _header, _Line, _stay
from reporting.agreements import shipped_agreements
from reporting.claims import LoadOutcome, load_claims
from reporting.outcomes import AsOf
from reporting.program_snapshots import take_nightly_program_snapshot
from reporting.rebates import Quarter
from reporting.snapshots import take_nightly_snapshots, take_snapshots

PER_STATE_AND_THERAPY = 100
FIRST_INFUSION = date(2025, 1, 10)
DAYS_BETWEEN_INFUSIONS = 7
LOINC = "http://loinc.org"
# (code, display, unit) of the month-12 result each therapy's agreement reads.
RESULTS = {
    "casgevy": ("4576-5", "Hemoglobin F/Hemoglobin.total in Blood", "%"),
    "lyfgenia": ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL"),
}
CLAIMS_LOADED_AFTER_QUARTER = timedelta(days=21)
_GIVEN = (
    "Amara", "Brianna", "Caleb", "Dominique", "Elijah", "Fatima", "Gabriel", "Hana",
    "Isaiah", "Jada", "Kofi", "Layla", "Malik", "Nia", "Omar", "Precious",
)  # fmt: skip
_FAMILY = (
    "Adeyemi", "Baptiste", "Coleman", "Diallo", "Ellison", "Fofana", "Grant", "Holloway",
    "Ibekwe", "Jenkins", "Kamara", "Lawson", "Mensah", "Nwosu", "Okafor", "Pierre", "Reyes",
)  # fmt: skip


def _noon(day: date) -> datetime:
    return datetime.combine(day, time(12), tzinfo=UTC)


def seed_demo_outcome_cohorts(session: Session, *, clock: Clock) -> int:
    """Add the infused cohorts, their results and claims, and the snapshots; returns how
    many patients were added."""
    now = clock.now()
    today = now.astimezone(UTC).date()
    therapies = {therapy.code: therapy for therapy in session.scalars(select(Therapy))}
    lines: dict[tuple[int, Quarter], list[_Line]] = defaultdict(list)
    states = list(session.scalars(select(State).order_by(State.code)))
    added = 0
    for state_number, state in enumerate(states):
        center = session.scalar(
            select(TreatmentCenter)
            .where(TreatmentCenter.state_id == state.id)
            .order_by(TreatmentCenter.id)
        )
        if center is None:
            continue
        for therapy_number, code in enumerate(("casgevy", "lyfgenia")):
            therapy = therapies.get(code)
            if therapy is None:
                continue
            for index in range(PER_STATE_AND_THERAPY):
                infusion = FIRST_INFUSION + timedelta(days=DAYS_BETWEEN_INFUSIONS * index)
                if infusion >= today:
                    break
                number = (state_number * 2 + therapy_number) * 1000 + index
                patient = _patient(session, state, center, therapy, number, infusion, now)
                added += 1
                _leaves(session, patient, index, infusion, today)
                _result(session, patient, code, index, infusion, today)
                for line in _claims(patient, number, index, infusion, today):
                    lines[state.id, Quarter.containing(line.begin)].append(line)
    _load(session, states, lines, now=now)
    session.flush()
    library = shipped_agreements()
    last_quarter_end = Quarter.containing(today).start - timedelta(days=1)
    take_snapshots(
        session,
        clock=clock,
        library=library,
        as_of=AsOf.end_of(last_quarter_end),
        computed_by="demo",
    )
    take_nightly_snapshots(session, clock=clock, library=library)
    take_nightly_program_snapshot(session, clock=clock)
    return added


def _patient(
    session: Session,
    state: State,
    center: TreatmentCenter,
    therapy: Therapy,
    number: int,
    infusion: date,
    now: datetime,
) -> Patient:
    enrolled = _noon(infusion - timedelta(days=60))
    patient = Patient(
        state_id=state.id,
        center_id=center.id,
        therapy_id=therapy.id,
        medicaid_id=f"{state.code}7{number:07d}",
        center_mrn=f"MRN-7{number:05d}",
        given_name=_GIVEN[number % len(_GIVEN)],
        family_name=_FAMILY[(number // len(_GIVEN) + number) % len(_FAMILY)],
        birth_date=date(infusion.year - 12 - number % 24, 1 + number % 12, 1 + number % 28),
        preferred_language=Language.ES if number % 5 == 0 else Language.EN,
        time_zone=state.time_zone,
        mobile_phone=None,
        infusion_date=infusion,
        status=PatientStatus.ACTIVE,
        created_at=enrolled,
        updated_at=now,
    )
    session.add(patient)
    session.flush()
    record_history(session, patient=patient, at=enrolled)
    return patient


def _leaves(session: Session, patient: Patient, index: int, infusion: date, today: date) -> None:
    """Lost to follow-up or deceased some months after the infusion (a new version of the
    record from that day)."""
    if index % 29 == 7:
        status, day = PatientStatus.LOST_TO_FOLLOW_UP, infusion + timedelta(days=200)
    elif index % 37 == 11:
        status, day = PatientStatus.DECEASED, infusion + timedelta(days=300)
    else:
        return
    if day >= today:
        return
    patient.status = status
    patient.version_id += 1
    session.flush()
    record_history(session, patient=patient, at=_noon(day))


def _result(
    session: Session, patient: Patient, therapy: str, index: int, infusion: date, today: date
) -> None:
    """The month-12 result (taken about a year after the infusion), when it has been."""
    taken = infusion + timedelta(days=365 - 10 + index % 21)
    recorded = taken + timedelta(days=2)
    if recorded >= today or index % 13 == 5:
        return
    code, display, unit = RESULTS[therapy]
    if therapy == "casgevy":
        value = Decimal(17 + (index * 7) % 25)  # 17-41 %: below 20 now and then
    else:
        value = Decimal(106 + (index * 7) % 25) / 10  # 10.6-13.0 g/dL: below 11 now and then
    session.add(
        Observation(
            patient_id=patient.id,
            code_system=LOINC,
            code=code,
            display=display,
            value_quantity=value,
            value_unit=unit,
            effective_at=_noon(taken),
            source=ObservationSource.CENTER,
            status=ObservationStatus.FINAL,
            version_id=1,
            created_at=_noon(recorded),
            updated_at=_noon(recorded),
        )
    )


def _claims(patient: Patient, number: int, index: int, infusion: date, today: date) -> list[_Line]:
    prefix = f"{patient.state.code}K{number:05d}"
    lines = _stay(patient, f"{prefix}P1", infusion - timedelta(days=120), 3, "D57.00")
    stay = infusion + timedelta(days=30 * (7 + (index // 4) % 10))
    if index % 4 == 2 and stay < today - timedelta(days=5):
        lines += _stay(patient, f"{prefix}R1", stay, 2 + index % 3, "D57.01")
    emergency = infusion + timedelta(days=30 * (8 + (index // 10) % 5))
    if index % 10 == 3 and emergency < today - timedelta(days=5):
        lines.append(
            _Line("OT", patient.medicaid_id, f"{prefix}E1", 1, emergency, emergency,
                  ("D57.00",), place="23")
        )  # fmt: skip
    return lines


def _load(
    session: Session,
    states: list[State],
    lines: dict[tuple[int, Quarter], list[_Line]],
    *,
    now: datetime,
) -> None:
    """One file per state and quarter of service, loaded three weeks after the quarter
    (or yesterday, for a quarter not that long over)."""
    header = _header()
    for state in states:
        quarters = sorted(quarter for state_id, quarter in lines if state_id == state.id)
        for quarter in quarters:
            loaded = min(_noon(quarter.end) + CLAIMS_LOADED_AFTER_QUARTER, now - timedelta(days=1))
            text = header + "".join(line.csv(state.code) for line in lines[state.id, quarter])
            result = load_claims(
                session,
                clock=FrozenClock(loaded),
                actor=DEMO_ACTOR,
                state=state,
                filename=f"{state.code.lower()}-cohort-claims-{quarter}.csv",
                data=text.encode(),
            )
            assert result.outcome is not LoadOutcome.REFUSED, result.problems[:3]
