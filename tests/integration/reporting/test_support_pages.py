"""The questionnaires and travel support report as its readers use it: an analyst sees only
their states, an admin every state; the page answers htmx with its block alone; each table's
CSV carries the page's suppressed figures (no count from 1 to 10) and the spend where its
count is shown; months that cannot be read get a clear message, not an error page."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from coordination.followup.models import Visit
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
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.identity.models import Role
from core.models import Language
from tests.conftest import T0, Browser, Database, log_in, plain
from tests.factories import PASSWORD, building

SMALL = {str(n) for n in range(1, 11)}
SPAN = "from=2024-12&to=2025-04"


@pytest.fixture
def world(empty_db: Database, clock: FrozenClock) -> dict[str, object]:
    """Maryland: 12 patients enrolled 2024-12-01 and infused 2025-01-01; 11 completed their
    day-100 questionnaire (due April 2025), one did not; none answered the one before
    infusion (due December 2024); each asked for travel in March 2025 and had it arranged
    for $100.00. Colorado: 15 patients the same way, with no answers and no travel."""
    clock.set(datetime(2024, 12, 1, 12, tzinfo=UTC))
    with building(empty_db.factory, clock) as make:
        maryland, colorado = make.state("MD"), make.state("CO")
        md_center, co_center = make.center(maryland), make.center(colorado)
        load_shipped_questionnaires(
            make.session, clock=clock, actor=Actor(user_id=None, label="test", role="system")
        )
        questionnaire = make.session.scalars(select(Questionnaire)).first()
        assert questionnaire is not None
        md = [make.patient(center=md_center, infusion_date=date(2025, 1, 1)) for _ in range(12)]
        for _ in range(15):
            make.patient(center=co_center, infusion_date=date(2025, 1, 1))
        analyst = make.staff(Role.STATE_ANALYST, states=[maryland])
        spanish = make.staff(Role.STATE_ANALYST, states=[maryland])
        spanish.preferred_language = Language.ES
        admin = make.staff(Role.ADMIN)
        policy = TravelPolicy(
            state_id=maryland.id,
            effective_from=date(2024, 1, 1),
            funded_kinds=["ride"],
            mileage_rate_cents=67,
            max_lodging_nights=3,
            lodging_night_cap_cents=20000,
            meal_per_diem_cents=5000,
            max_travellers=2,
            created_at=clock.now(),
        )
        make.session.add(policy)
        make.session.flush()
        march = datetime(2025, 3, 20, 12, tzinfo=UTC)
        for number, patient in enumerate(md):
            visit = make.session.scalars(
                select(Visit).where(Visit.patient_id == patient.id, Visit.visit_key == "day-100")
            ).one()
            if number < 11:
                make.session.add(
                    QuestionnaireResponse(
                        patient_id=patient.id,
                        questionnaire_id=questionnaire.id,
                        visit_id=visit.id,
                        status=ResponseStatus.COMPLETED,
                        answers={},
                        saved_pages=[],
                        started_at=march,
                        updated_at=march,
                        authored_at=march,
                    )
                )
            request = TravelRequest(
                patient_id=patient.id,
                visit_id=visit.id,
                state_id=maryland.id,
                policy_id=policy.id,
                requested_by_user_id=admin.id,
                kinds=["ride"],
                depart_on=visit.target_date,
                return_on=visit.target_date,
                travellers=1,
                status=TravelStatus.ARRANGED,
                created_at=march,
                updated_at=march,
            )
            make.session.add(request)
            make.session.flush()
            make.session.add(
                TravelArrangement(
                    request_id=request.id,
                    kind=TravelKind.RIDE,
                    summary="Ride",
                    starts_on=visit.target_date,
                    ends_on=visit.target_date,
                    cost_cents=10000,
                    created_at=march,
                )
            )
        world: dict[str, object] = {
            "md": maryland.id,
            "co": colorado.id,
            "analyst": analyst.login,
            "spanish": spanish.login,
            "admin": admin.login,
        }
    clock.set(T0)
    return world


@pytest.fixture
def open_as(empty_app: FastAPI, clock: FrozenClock) -> Iterator[Callable[[str], Browser]]:
    clients: list[TestClient] = []

    def open_browser(login: str) -> Browser:
        client = TestClient(empty_app, raise_server_exceptions=False, follow_redirects=False)
        client.__enter__()
        clients.append(client)
        return Browser(client, log_in(client, login, clock, password=PASSWORD))

    yield open_browser
    for client in clients:
        client.__exit__(None, None, None)


def _csv(browser: Browser, query: str) -> list[dict[str, str]]:
    response = browser.get(f"/reports/support.csv?{query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def _total(rows: list[dict[str, str]], column: str = "total") -> str:
    return next(r["value"] for r in rows if r["state"] == "total" and r["column"] == column)


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_an_analyst_sees_their_states_figures_suppressed(
    world: dict[str, object], open_as: Callable[[str], Browser], htmx: bool
) -> None:
    analyst = open_as(str(world["analyst"]))
    index = plain(analyst.get("/reports").text)
    assert "Questionnaires and travel support" in index
    page = analyst.get(f"/reports/support?{SPAN}", htmx=htmx)
    assert page.status_code == 200
    assert ("<html" in page.text) is not htmx
    assert 'id="support"' in page.text
    text = plain(page.text)
    assert "Maryland" in text and "Colorado" not in text and "CO 2025" not in text
    # April's one questionnaire not completed (with its row's 11 completed) could be worked
    # out from the totals whatever is hidden: only the totals are shown.
    assert "Only the totals are shown" in text
    assert "Total 11 13 24" in text and "MD 2025-04 11" not in text
    # 12 arranged requests: shown, and so is their spend.
    assert "MD 2025-03 0 0 12 0 12 $1,200.00" in text
    assert "<svg" in page.text and 'role="img"' in page.text
    assert "<script" not in page.text.split('id="support"')[1]
    # Another state's figures do not exist for them.
    assert analyst.get(f"/reports/support?state={world['co']}", htmx=htmx).status_code == 404
    assert analyst.get(f"/reports/support.csv?table=visits&state={world['co']}").status_code == 404


def test_every_csv_is_suppressed_and_an_admin_sees_every_state(
    world: dict[str, object], open_as: Callable[[str], Browser]
) -> None:
    analyst = open_as(str(world["analyst"]))
    for table in ("questionnaires", "requests", "visits"):
        for row in _csv(analyst, f"table={table}&{SPAN}"):
            assert row["value"] not in SMALL, (table, row)
            assert row["state"] in ("MD", "total"), row
    requests = _csv(analyst, f"table=requests&{SPAN}")
    assert _total(requests, "spend_dollars") == "1200.00"
    # Due: 12 before infusion (December) and 12 at day 100 (April) in Maryland.
    assert _total(_csv(analyst, f"table=questionnaires&{SPAN}")) == "24"
    admin = open_as(str(world["admin"]))
    assert _total(_csv(admin, f"table=questionnaires&{SPAN}")) == "54"
    assert _total(_csv(admin, f"table=questionnaires&{SPAN}&state={world['co']}")) == "30"
    with_csv = admin.get(f"/reports/support.csv?table=nope&{SPAN}")
    assert with_csv.status_code == 404


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_months_that_cannot_be_read_are_explained(
    world: dict[str, object], open_as: Callable[[str], Browser], htmx: bool
) -> None:
    analyst = open_as(str(world["analyst"]))
    for query, message in (
        ("from=2025-13", "Give months as year and month, for example 2026-03."),
        ("from=2025-05&to=2025-01", "The first month comes after the last one."),
        ("from=2020-01&to=2025-01", "Choose at most 36 months."),
    ):
        page = analyst.get(f"/reports/support?{query}", htmx=htmx)
        assert page.status_code == 400
        assert message in plain(page.text)


def test_the_report_speaks_spanish(
    world: dict[str, object], open_as: Callable[[str], Browser]
) -> None:
    spanish = open_as(str(world["spanish"]))
    assert "Cuestionarios y ayuda para el viaje" in plain(spanish.get("/reports").text)
    text = plain(spanish.get(f"/reports/support?{SPAN}").text)
    assert "Solicitudes de ayuda para el viaje" in text
    assert "Gasto" in text and "Organizada" in text
    wrong = spanish.get("/reports/support?from=2025-05&to=2025-01")
    assert "El primer mes es posterior al último." in plain(wrong.text)


def test_viewing_and_exporting_are_audited(
    world: dict[str, object], open_as: Callable[[str], Browser], empty_db: Database
) -> None:
    analyst = open_as(str(world["analyst"]))
    analyst.get(f"/reports/support?{SPAN}")
    _csv(analyst, f"table=visits&{SPAN}")
    with empty_db.factory() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.target == "reports:support")
        ).all()
    assert sorted(actions) == ["reports.support", "reports.support_export"]
