"""Questionnaires and travel support by state and month (`reporting.patient_support`) on a
small cohort whose figures are worked out by hand below, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import Visit, VisitStatus
from coordination.followup.protocol import shipped_protocols
from coordination.questionnaires.loading import load_shipped_questionnaires
from coordination.questionnaires.models import (
    Questionnaire,
    QuestionnaireResponse,
    ResponseStatus,
)
from coordination.travel.models import (
    TravelArrangement,
    TravelKind,
    TravelPolicy,
    TravelRequest,
    TravelStatus,
)
from core.audit.service import Actor
from core.clock import FrozenClock
from core.identity.models import Role
from core.models import Patient
from reporting.patient_support import (
    Count,
    Months,
    questionnaire_counts,
    request_counts,
    supported_visit_counts,
)
from reporting.patient_support_report import load_support_report, table_csv
from tests.conftest import Database
from tests.factories import Factory

INFUSED = date(2025, 1, 1)  # Casgevy: day-100 window 03-28..04-25, day-180 06-09..07-21
MONTHS = Months(date(2024, 12, 1), date(2025, 7, 1))
SYSTEM = Actor(user_id=None, label="test", role="system")


def _at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


def _visits(session: Session, patient: Patient) -> dict[str, Visit]:
    return {
        v.visit_key: v for v in session.scalars(select(Visit).where(Visit.patient_id == patient.id))
    }


class _Cohort:
    """Maryland: A, B, C infused 2025-01-01 (enrolled 2024-12-01), D enrolled 2025-02-10 and
    not infused; Colorado: E infused 2025-01-01 (enrolled 2024-12-01).

    Questionnaires (one loaded, asked before infusion, at day 100 and day 180):
    - A: before infusion completed; day 100 completed; day 180 only in progress;
    - B: before infusion completed but started after the infusion (does not count);
      day 100 completed;
    - C: nothing answered; day-180 visit cancelled (asks nothing);
    - D: before infusion completed; E: day 100 completed, day 180 not started.

    Travel requests:
    - MD 2025-03: A day 100 arranged ($250.00 + $125.50, came), B day 100 arranged
      ($100.00, missed), C day 100 declined;
    - MD 2025-06: A day 180 approved (an arrangement of $50.00 recorded, not marked
      arranged: no spend), B day 180 waiting;
    - CO 2025-03: E day 100 arranged ($80.00), appointment 2025-04-12, not held yet."""

    def __init__(self, session: Session, clock: FrozenClock) -> None:
        clock.set(_at(date(2024, 12, 1)))
        make = Factory(session, clock)
        md, co = make.state("MD"), make.state("CO")
        self.md, self.co = md.id, co.id
        center_md, center_co = make.center(md), make.center(co)
        load_shipped_questionnaires(session, clock=clock, actor=SYSTEM)
        questionnaire = session.scalars(select(Questionnaire).order_by(Questionnaire.id)).first()
        assert questionnaire is not None
        a, b, c = (make.patient(center=center_md, infusion_date=INFUSED) for _ in range(3))
        e = make.patient(center=center_co, infusion_date=INFUSED)
        clock.set(_at(date(2025, 2, 10)))
        d = make.patient(center=center_md)
        user = make.staff(Role.COORDINATOR, states=[md, co])
        visits = {p: _visits(session, p) for p in (a, b, c, e)}

        def answered(patient: Patient, visit: Visit | None, started: date, done: bool) -> None:
            status = ResponseStatus.COMPLETED if done else ResponseStatus.IN_PROGRESS
            session.add(
                QuestionnaireResponse(
                    patient_id=patient.id,
                    questionnaire_id=questionnaire.id,
                    visit_id=visit.id if visit else None,
                    status=status,
                    answers={},
                    saved_pages=[],
                    started_at=_at(started),
                    updated_at=_at(started),
                    authored_at=_at(started) if done else None,
                )
            )

        answered(a, None, date(2024, 12, 15), True)
        answered(a, visits[a]["day-100"], date(2025, 4, 1), True)
        answered(a, visits[a]["day-180"], date(2025, 6, 20), False)
        answered(b, None, date(2024, 12, 20), False)
        answered(b, None, date(2025, 1, 5), True)
        answered(b, visits[b]["day-100"], date(2025, 4, 2), True)
        answered(d, None, date(2025, 2, 11), True)
        answered(e, visits[e]["day-100"], date(2025, 4, 3), True)
        visits[c]["day-180"].status = VisitStatus.CANCELLED
        visits[a]["day-100"].status = VisitStatus.COMPLETED
        visits[a]["day-100"].completed_on = date(2025, 4, 10)
        visits[b]["day-100"].status = VisitStatus.MISSED
        visits[b]["day-100"].appointment_at = _at(date(2025, 4, 15))
        visits[e]["day-100"].status = VisitStatus.SCHEDULED
        visits[e]["day-100"].appointment_at = _at(date(2025, 4, 12))

        policies = {}
        for state in (md, co):
            policy = TravelPolicy(
                state_id=state.id,
                effective_from=date(2024, 1, 1),
                funded_kinds=[kind.value for kind in TravelKind],
                mileage_rate_cents=67,
                max_lodging_nights=3,
                lodging_night_cap_cents=20000,
                meal_per_diem_cents=5000,
                max_travellers=2,
                created_at=clock.now(),
            )
            session.add(policy)
            session.flush()
            policies[state.id] = policy.id

        def asked(
            patient: Patient, key: str, made: date, status: TravelStatus, *costs: int
        ) -> None:
            visit = visits[patient][key]
            request = TravelRequest(
                patient_id=patient.id,
                visit_id=visit.id,
                state_id=patient.state_id,
                policy_id=policies[patient.state_id],
                requested_by_user_id=user.id,
                kinds=["flight"],
                depart_on=visit.target_date,
                return_on=visit.target_date,
                travellers=1,
                status=status,
                created_at=_at(made),
                updated_at=_at(made),
            )
            session.add(request)
            session.flush()
            for cents in costs:
                session.add(
                    TravelArrangement(
                        request_id=request.id,
                        kind=TravelKind.FLIGHT,
                        summary="Booked",
                        starts_on=visit.target_date,
                        ends_on=visit.target_date,
                        cost_cents=cents,
                        created_at=_at(made),
                    )
                )

        asked(a, "day-100", date(2025, 3, 20), TravelStatus.ARRANGED, 25000, 12550)
        asked(b, "day-100", date(2025, 3, 25), TravelStatus.ARRANGED, 10000)
        asked(c, "day-100", date(2025, 3, 26), TravelStatus.DECLINED)
        asked(a, "day-180", date(2025, 6, 1), TravelStatus.APPROVED, 5000)
        asked(b, "day-180", date(2025, 6, 2), TravelStatus.REQUESTED)
        asked(e, "day-100", date(2025, 3, 21), TravelStatus.ARRANGED, 8000)
        session.flush()
        clock.set(_at(date(2025, 8, 1)))


def _by(counts: list[Count]) -> dict[tuple[int, str, str], tuple[int, int]]:
    return {(c.state_id, c.month, c.column): (c.count, c.cents) for c in counts}


def test_each_figure_by_state_and_month(empty_db: Database, clock: FrozenClock) -> None:
    with empty_db.factory() as session:
        cohort = _Cohort(session, clock)
        md, co = cohort.md, cohort.co
        due = _by(
            questionnaire_counts(
                session, library=shipped_protocols(), months=MONTHS, state_ids=None
            )
        )
        assert due == {
            (md, "2024-12", "completed"): (1, 0),  # A before infusion (B's came after it)
            (md, "2024-12", "not_completed"): (2, 0),  # B, C
            (md, "2025-02", "completed"): (1, 0),  # D, enrolled, not infused
            (md, "2025-04", "completed"): (2, 0),  # A, B at day 100
            (md, "2025-04", "not_completed"): (1, 0),  # C
            (md, "2025-07", "not_completed"): (2, 0),  # A (in progress), B; C's cancelled
            (co, "2024-12", "not_completed"): (1, 0),
            (co, "2025-04", "completed"): (1, 0),
            (co, "2025-07", "not_completed"): (1, 0),  # E's day 180, never started
        }
        requests = _by(request_counts(session, months=MONTHS, state_ids=None))
        assert requests == {
            (md, "2025-03", "arranged"): (2, 25000 + 12550 + 10000),
            (md, "2025-03", "declined"): (1, 0),
            (md, "2025-06", "approved"): (1, 0),  # its $50 is not spent until arranged
            (md, "2025-06", "requested"): (1, 0),
            (co, "2025-03", "arranged"): (1, 8000),
        }
        visits = _by(supported_visit_counts(session, months=MONTHS, state_ids=None))
        assert visits == {
            (md, "2025-04", "attended"): (1, 0),
            (md, "2025-04", "not_attended"): (1, 0),
            (co, "2025-04", "not_yet"): (1, 0),
        }


def test_an_analyst_counts_only_their_states_and_months(
    empty_db: Database, clock: FrozenClock
) -> None:
    with empty_db.factory() as session:
        cohort = _Cohort(session, clock)
        only_co = frozenset({cohort.co})
        april = Months(date(2025, 4, 1), date(2025, 4, 1))
        library = shipped_protocols()
        assert _by(
            questionnaire_counts(session, library=library, months=april, state_ids=only_co)
        ) == {(cohort.co, "2025-04", "completed"): (1, 0)}
        assert request_counts(session, months=april, state_ids=only_co) == []
        report, codes = load_support_report(
            session, clock=clock, library=library, months=MONTHS, state_ids=only_co
        )
        assert codes == {cohort.co: "CO"}
        for key in ("questionnaires", "requests", "visits"):
            assert {state for state, _month in report.tables[key].rows} == {cohort.co}
            assert ",MD," not in table_csv(report, key, codes)


def test_small_counts_and_their_spend_are_hidden_on_the_report(
    empty_db: Database, clock: FrozenClock
) -> None:
    with empty_db.factory() as session:
        cohort = _Cohort(session, clock)
        report, codes = load_support_report(
            session, clock=clock, library=shipped_protocols(), months=MONTHS, state_ids=None
        )
    requests = report.tables["requests"]
    assert requests.figures is not None
    # Every count is from 1 to 10: each non-zero one reads "<11", no spend is shown.
    march = requests.rows.index((cohort.md, "2025-03"))
    assert [f.text for f in requests.figures.cells[march]] == ["0", "0", "<11", "<11"]
    for cells, spend in zip(requests.figures.cells, requests.row_spend, strict=True):
        assert spend.hidden == cells[2].hidden  # beside "arranged": hidden with it
        assert spend.hidden or spend.cents == 0
    assert requests.total_spend is not None and requests.total_spend.hidden
    exported = table_csv(report, "requests", codes)
    assert "MD,2025-03,arranged,<11" in exported
    assert "MD,2025-03,spend_dollars,*" in exported
    assert "475.50" not in exported and "80.00" not in exported
    # A state's every month is a row, quiet months as zeros.
    assert len(report.tables["questionnaires"].rows) == 2 * len(MONTHS.month_keys())
