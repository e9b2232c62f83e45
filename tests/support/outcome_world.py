"""Small worlds for the outcome, rebate and snapshot tests: patients enrolled through the
real use case at a given moment, their record changed later (death, loss to follow-up, an
infusion date set right, a move to another state), observations and claim lines inserted
with the moment they arrived, and corrections through the real service.

Each test writes its cohort as a small table and the expected results by hand; these
helpers only spare it the rows' boilerplate."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from coordination.followup.corrections import correct_outcome
from coordination.followup.outcomes import LTFU_SYSTEM
from coordination.followup.protocol import shipped_protocols
from coordination.records import change_record
from core.audit.service import Actor
from core.clock import FrozenClock
from core.models import Observation, ObservationSource, ObservationStatus, Patient, PatientStatus
from core.service import PatientData
from reporting.agreements import Agreement, parse_agreement
from reporting.models import ClaimFile, ClaimLine, ClaimType
from tests.factories import Factory

LOINC = "http://loinc.org"
HBF = "4576-5"
HB = "718-7"
SYSTEM = Actor(user_id=None, label="test", role=None)
_claims = itertools.count(1)

# A test agreement with one measure of every kind: the shipped ones are illustrative and may
# change; these terms are the tests' own. Infused in 2025, windows months 6-18 (events) and
# 9-15 (values). Rebates: 10% of 1,000,000 for a hospital stay for a crisis, fixed amounts
# for the rest.
TEST_AGREEMENT = """
key: test-2025
version: 1
illustrative: true
title: {en: "Test agreement", es: "Acuerdo de prueba"}
manufacturer: Test Pharma
therapy: casgevy
states: all
infusions: {from: 2025-01-01, until: 2025-12-31}
price_basis: {kind: wholesale_acquisition_cost, amount: 1000000, currency: USD}
measures:
  - key: no-voc-stay
    title: {en: "No hospital stay for a crisis", es: "Sin hospitalizacion por crisis"}
    description: {en: "No VOC stay, months 6-18.", es: "Sin hospitalizacion, meses 6-18."}
    window: {from_month: 6, to_month: 18}
    rule: {kind: no_event, event: voc_inpatient_stay}
    rebate: {percent_of_price: 10}
  - key: no-voc-any
    title: {en: "No crisis at all", es: "Ninguna crisis"}
    description: {en: "No VOC, months 6-18.", es: "Ninguna crisis, meses 6-18."}
    window: {from_month: 6, to_month: 18}
    rule: {kind: no_event, event: voc_any}
    rebate: {amount: 50000}
  - key: no-stay
    title: {en: "No hospital stay", es: "Sin hospitalizacion"}
    description: {en: "No stay, months 6-18.", es: "Sin hospitalizacion, meses 6-18."}
    window: {from_month: 6, to_month: 18}
    rule: {kind: no_event, event: inpatient_stay}
    rebate: {amount: 20000}
  - key: no-ed
    title: {en: "No emergency visit", es: "Sin urgencias"}
    description: {en: "No ED visit, months 6-18.", es: "Sin urgencias, meses 6-18."}
    window: {from_month: 6, to_month: 18}
    rule: {kind: no_event, event: ed_visit}
    rebate: {amount: 10000}
  - key: hbf-last
    title: {en: "HbF at least 20%", es: "HbF de al menos 20 %"}
    description: {en: "Last HbF, months 9-15.", es: "Ultima HbF, meses 9-15."}
    window: {from_month: 9, to_month: 15}
    rule: {kind: observation, code: "http://loinc.org|4576-5", unit: "%",
           comparator: ">=", value: 20, pick: last}
    rebate: {amount: 30000}
  - key: hbf-min
    title: {en: "HbF never under 20%", es: "HbF nunca bajo 20 %"}
    description: {en: "Lowest HbF, months 9-15.", es: "HbF mas baja, meses 9-15."}
    window: {from_month: 9, to_month: 15}
    rule: {kind: observation, code: "http://loinc.org|4576-5", unit: "%",
           comparator: ">=", value: 20, pick: min}
    rebate: {amount: 30000}
  - key: hb-first
    title: {en: "First Hb above 11", es: "Primera Hb sobre 11"}
    description: {en: "First Hb, months 9-15.", es: "Primera Hb, meses 9-15."}
    window: {from_month: 9, to_month: 15}
    rule: {kind: observation, code: "http://loinc.org|718-7", unit: "g/dL",
           comparator: ">", value: 11, pick: first}
    rebate: {amount: 5000}
"""


def agreement_for_tests() -> Agreement:
    return parse_agreement(TEST_AGREEMENT, source="test-2025.yaml")


def at(day: str, hour: int = 12) -> datetime:
    """Noon UTC (or `hour`) of a day written 2026-01-31."""
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def day(text: str) -> date:
    return date.fromisoformat(text)


def enrol(make: Factory, clock: FrozenClock, *, when: str, infused: str, **fields: Any) -> Patient:
    """A patient enrolled on `when` (their record's first version holds from then)."""
    clock.set(at(when, 9))
    return make.patient(infusion_date=day(infused), schedule=True, **fields)


def change(
    session: Session, clock: FrozenClock, patient: Patient, *, when: str, **fields: Any
) -> None:
    """Change the record on `when` through the coordinator's use case (a new version of
    its history holds from then)."""
    clock.set(at(when, 10))
    change_record(
        session,
        clock=clock,
        actor=SYSTEM,
        library=shipped_protocols(),
        patient=patient,
        data=replace(PatientData.of(patient), **fields),
        allowed_state_ids=None,
    )
    session.flush()


def die(session: Session, clock: FrozenClock, patient: Patient, *, when: str) -> None:
    change(session, clock, patient, when=when, status=PatientStatus.DECEASED)


def lose(session: Session, clock: FrozenClock, patient: Patient, *, when: str) -> None:
    change(session, clock, patient, when=when, status=PatientStatus.LOST_TO_FOLLOW_UP)


def observe(
    session: Session,
    patient: Patient,
    *,
    code: str,
    value: str | None,
    taken: str,
    recorded: str,
    unit: str | None = None,
    system: str = LOINC,
    status: ObservationStatus = ObservationStatus.FINAL,
    source: ObservationSource = ObservationSource.CENTER,
) -> Observation:
    """A value taken on `taken` (noon UTC) that arrived on `recorded`."""
    units = {HBF: "%", HB: "g/dL"}
    observation = Observation(
        patient_id=patient.id,
        code_system=system,
        code=code,
        display={HBF: "Hemoglobin F", HB: "Hemoglobin"}.get(code, code),
        value_quantity=Decimal(value) if value is not None else None,
        value_unit=unit or units.get(code),
        value_text=None if value is not None else "reported",
        effective_at=at(taken),
        source=source,
        status=status,
        version_id=1,
        created_at=at(recorded, 15),
        updated_at=at(recorded, 15),
    )
    session.add(observation)
    session.flush()
    return observation


def report_crisis(
    session: Session,
    patient: Patient,
    *,
    happened: str,
    confirmed: str,
    status: ObservationStatus = ObservationStatus.FINAL,
) -> Observation:
    """A pain crisis the patient reported and a coordinator confirmed (its Observation)."""
    return observe(
        session,
        patient,
        code="pain-crisis",
        value=None,
        taken=happened,
        recorded=confirmed,
        system=LTFU_SYSTEM,
        status=status,
        source=ObservationSource.PATIENT,
    )


def correct(
    session: Session, clock: FrozenClock, observation: Observation, *, value: str, when: str
) -> None:
    """Correct a value on `when` through the real service (the old version is kept)."""
    clock.set(at(when, 16))
    correct_outcome(
        session,
        clock=clock,
        actor=SYSTEM,
        observation=observation,
        value=Decimal(value),
        reason="typing error",
    )
    session.flush()


def claim(
    session: Session,
    patient: Patient,
    *,
    service: str,
    loaded: str,
    crisis: bool = False,
    stay: bool = False,
    emergency: bool = False,
    superseded: str | None = None,
    claim_id: str | None = None,
) -> ClaimLine:
    """A claim line of `patient`'s state, loaded on `loaded` (in a file of its own)."""
    number = next(_claims)
    loaded_at = at(loaded, 8)
    file = ClaimFile(
        state_id=patient.state_id,
        filename=f"claims-{number}.csv",
        sha256=hashlib.sha256(f"file-{number}".encode()).hexdigest(),
        loaded_at=loaded_at,
        loaded_by_label="test",
        rows_total=1,
        rows_loaded=1,
        rows_replacing=0,
        rows_unchanged=0,
        rows_unmatched=0,
    )
    session.add(file)
    session.flush()
    line = ClaimLine(
        file_id=file.id,
        state_id=patient.state_id,
        patient_id=patient.id,
        medicaid_id=patient.medicaid_id,
        claim_id=claim_id or f"CLM{number:06d}",
        line_number=1,
        claim_type=ClaimType.INPATIENT if stay else ClaimType.OTHER_SERVICES,
        service_begin=day(service),
        service_end=day(service),
        diagnoses=["D57.00"] if crisis else ["Z09"],
        is_vaso_occlusive=crisis,
        is_inpatient_stay=stay,
        is_ed_visit=emergency,
        content_hash=hashlib.sha256(f"line-{number}".encode()).hexdigest(),
        loaded_at=loaded_at,
        superseded_at=at(superseded, 8) if superseded else None,
    )
    session.add(line)
    session.flush()
    return line


def adjust(
    session: Session,
    original: ClaimLine,
    *,
    loaded: str,
    crisis: bool = False,
    stay: bool = False,
    emergency: bool = False,
) -> ClaimLine:
    """An adjusted claim replacing `original` (loaded on `loaded`, which supersedes it)."""
    patient = session.get(Patient, original.patient_id)
    assert patient is not None
    original.superseded_at = at(loaded, 8)
    replacement = claim(
        session,
        patient,
        service=original.service_begin.isoformat(),
        loaded=loaded,
        claim_id=f"{original.claim_id}-A",
        crisis=crisis,
        stay=stay,
        emergency=emergency,
    )
    original.superseded_by_file_id = replacement.file_id
    session.flush()
    return replacement
