"""The demo's Medicaid claims: for each demo state, a fictional claims extract in the
documented layout (README "Medicaid claims"), made from the demo patients' Medicaid IDs and
infusion dates, and loaded by `cgt-access demo seed` through the same `load_claims` as an
upload, so that the outcome dashboards have living figures from the first minute.

What the file holds (all fictional, fixed by each patient's place in the list):
- before the infusion, the crises that led to gene therapy: two or three hospital stays for
  a vaso-occlusive crisis (inpatient claims, ICD-10-CM D57.00 and its siblings);
- after it, for one patient in four, a crisis again between months 6 and 18 (a hospital
  stay, or an emergency visit for one in eight); for the others, routine office visits
  (sickle-cell disease without crisis, D57.1) and, now and then, an emergency visit for
  something else (a fever);
- one row for a Medicaid ID nobody holds (the load lists it as unmatched).
A second file, loaded a few weeks later, adjusts one post-infusion crisis stay (the coder
corrected the diagnosis to "without crisis") and voids one emergency visit: the first
file's figures stay visible as of before.

`cgt-access claims sample --state MD` writes the first file, to try the upload page."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.service import Actor
from core.clock import Clock, FrozenClock
from core.models import Patient, State
from reporting.claims import COLUMNS, LoadOutcome, load_claims

DEMO_ACTOR = Actor.system("demo-claims")
# When the demo's two files were loaded, before the seed's moment.
FIRST_LOAD_DAYS_AGO = 45
ADJUSTMENT_DAYS_AGO = 6
# Diagnoses of a crisis (a different one for each patient, all in the code list).
_CRISES = ("D57.00", "D57.01", "D57.219", "D57.419", "D57.00", "D57.819")


@dataclass(frozen=True)
class _Line:
    file_type: str
    medicaid_id: str
    claim: str
    line: int
    begin: date
    end: date
    diagnoses: tuple[str, ...]
    place: str = ""
    revenue: str = ""
    admitted: bool = False
    adjusts: str = ""
    indicator: str = "0"

    def csv(self, state: str) -> str:
        admission = self.begin.isoformat() if self.admitted else ""
        discharge = self.end.isoformat() if self.admitted else ""
        codes = [*self.diagnoses, *[""] * (12 - len(self.diagnoses))]
        values = [
            self.file_type,
            state,
            self.medicaid_id,
            self.claim if not self.adjusts else self.adjusts,
            self.claim if self.adjusts else "",
            self.indicator,
            str(self.line),
            self.begin.isoformat(),
            self.end.isoformat(),
            admission,
            discharge,
            *codes,
            self.place,
            self.revenue,
        ]
        return ",".join(values) + "\n"


def _header() -> str:
    return ",".join(column.name for column in COLUMNS) + "\n"


def _stay(patient: Patient, claim: str, begin: date, days: int, diagnosis: str) -> list[_Line]:
    """An inpatient stay: a room-and-board line and an emergency-room line (admitted
    through the ED)."""
    end = begin + timedelta(days=days)
    return [
        _Line("IP", patient.medicaid_id, claim, 1, begin, end, (diagnosis, "D57.1"), revenue="0120",
              admitted=True),
        _Line("IP", patient.medicaid_id, claim, 2, begin, end, (diagnosis,), revenue="0450",
              admitted=True),
    ]  # fmt: skip


def _patient_lines(patient: Patient, index: int, today: date) -> Iterable[_Line]:
    infusion = patient.infusion_date
    if infusion is None or infusion > today:
        return []
    lines: list[_Line] = []
    prefix = f"{patient.state.code}D{index:03d}"
    crisis = _CRISES[index % len(_CRISES)]
    for number, months_before in enumerate((11, 7, 3)[: 2 + index % 2], start=1):
        begin = infusion - timedelta(days=30 * months_before + index % 9)
        lines += _stay(patient, f"{prefix}P{number}", begin, 3 + index % 3, crisis)
    for number, months_after in enumerate((2, 5, 9, 14, 20, 26), start=1):
        day = infusion + timedelta(days=30 * months_after + index % 11)
        if day > today:
            break
        lines.append(
            _Line("OT", patient.medicaid_id, f"{prefix}V{number}", 1, day, day, ("D57.1",),
                  place="11")
        )  # fmt: skip
    relapse = infusion + timedelta(days=30 * (7 + index % 10))
    if index % 4 == 1 and relapse <= today:
        if index % 8 == 1:
            lines.append(
                _Line("OT", patient.medicaid_id, f"{prefix}E1", 1, relapse, relapse, (crisis,),
                      place="23")
            )  # fmt: skip
        else:
            lines += _stay(patient, f"{prefix}R1", relapse, 2 + index % 4, crisis)
    fever = infusion + timedelta(days=30 * (4 + index % 6) + 3)
    if index % 3 == 0 and fever <= today:
        lines.append(
            _Line("OT", patient.medicaid_id, f"{prefix}F1", 1, fever, fever, ("R50.9", "D57.1"),
                  revenue="0450")
        )  # fmt: skip
    return lines


def demo_claim_files(session: Session, *, state: State, today: date) -> tuple[str, str]:
    """The state's first claims file and the later one with an adjustment and a void."""
    patients = list(
        session.scalars(select(Patient).where(Patient.state_id == state.id).order_by(Patient.id))
    )
    first: list[_Line] = []
    for index, patient in enumerate(patients):
        first += _patient_lines(patient, index, today)
    unknown = f"{state.code}99999999"
    first.append(
        _Line("OT", unknown, f"{state.code}DX1", 1, today - timedelta(days=60),
              today - timedelta(days=60), ("D57.00",), place="23")
    )  # fmt: skip
    later: list[_Line] = []
    relapse = next((line for line in first if line.claim.endswith("R1") and line.line == 1), None)
    if relapse is not None:  # the crisis stay, adjusted: the coder's corrected diagnosis
        later.append(
            _Line("IP", relapse.medicaid_id, relapse.claim + "A", 1, relapse.begin, relapse.end,
                  ("D57.1", "R52"), revenue="0120", admitted=True, adjusts=relapse.claim,
                  indicator="4")
        )  # fmt: skip
    fever = next((line for line in first if line.claim.endswith("F1")), None)
    if fever is not None:  # the emergency visit, voided (billed by mistake)
        later.append(
            _Line("OT", fever.medicaid_id, fever.claim + "X", 1, fever.begin, fever.end,
                  fever.diagnoses, revenue=fever.revenue, adjusts=fever.claim, indicator="1")
        )  # fmt: skip
    header = _header()
    return (
        header + "".join(line.csv(state.code) for line in first),
        header + "".join(line.csv(state.code) for line in later),
    )


def seed_demo_claims(session: Session, *, clock: Clock) -> None:
    """Load each demo state's two claims files, the first some weeks ago, the adjustments
    days ago (as if the state had uploaded them then)."""
    now = clock.now()
    today = now.date()
    for state in session.scalars(select(State).order_by(State.code)):
        first, later = demo_claim_files(session, state=state, today=today)
        for text, days_ago, name in (
            (first, FIRST_LOAD_DAYS_AGO, f"{state.code.lower()}-claims-demo.csv"),
            (later, ADJUSTMENT_DAYS_AGO, f"{state.code.lower()}-claims-demo-adjustments.csv"),
        ):
            if text.count("\n") < 2:
                continue  # nothing to adjust in this state
            result = load_claims(
                session,
                clock=FrozenClock(now - timedelta(days=days_ago)),
                actor=DEMO_ACTOR,
                state=state,
                filename=name,
                data=text.encode(),
            )
            assert result.outcome is not LoadOutcome.REFUSED, result.problems[:3]
