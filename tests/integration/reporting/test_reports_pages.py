"""The program dashboard as its readers use it: an analyst sees only their states' figures, an
admin every state's, a coordinator their states' and the patients behind a figure (only
their own, audited), an analyst asking for patients is refused in words (audited too);
every table's CSV and the FHIR MeasureReport carry the same suppressed figures; the page
answers htmx with its block alone."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from datetime import date

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.audit.models import AuditEvent, AuditOutcome
from core.clock import FrozenClock
from core.identity.models import Role
from fhir_adapter.validation import validate_resource
from tests.conftest import Browser, Database, log_in, plain
from tests.factories import PASSWORD, building

SMALL = {str(n) for n in range(1, 11)}


@pytest.fixture
def world(empty_db: Database, clock: FrozenClock) -> dict[str, object]:
    """Maryland: 12 patients infused on 2025-01-01 and 3 not infused yet, one center;
    Colorado: 15 infused. An analyst and a coordinator of Maryland, an admin."""
    with building(empty_db.factory, clock) as make:
        maryland, colorado = make.state("MD"), make.state("CO")
        md_center, co_center = make.center(maryland), make.center(colorado)
        md_infused = [
            make.patient(center=md_center, infusion_date=date(2025, 1, 1)) for _ in range(12)
        ]
        md_waiting = [make.patient(center=md_center) for _ in range(3)]
        for _ in range(15):
            make.patient(center=co_center, infusion_date=date(2025, 1, 1))
        analyst = make.staff(Role.STATE_ANALYST, states=[maryland])
        coordinator = make.staff(Role.COORDINATOR, states=[maryland])
        admin = make.staff(Role.ADMIN)
        return {
            "md": maryland.id,
            "co": colorado.id,
            "analyst": analyst.login,
            "coordinator": coordinator.login,
            "admin": admin.login,
            "waiting": sorted(patient.full_name for patient in md_waiting),
            "infused": len(md_infused),
        }


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
    response = browser.get(f"/reports/program.csv?{query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def _grand_total(rows: list[dict[str, str]]) -> str:
    return next(row["value"] for row in rows if row["row"] == "total" and row["column"] == "total")


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_an_analyst_sees_only_their_states(
    world: dict[str, object], open_as: Callable[[str], Browser], htmx: bool
) -> None:
    analyst = open_as(str(world["analyst"]))
    page = analyst.get("/reports/program", htmx=htmx)
    assert page.status_code == 200
    assert ("<html" in page.text) is not htmx
    assert 'id="program"' in page.text
    text = plain(page.text)
    assert "Maryland" in text and "Colorado" not in text
    # Charts as inline SVG, with a name and description, nothing that runs.
    assert "<svg" in page.text and 'role="img"' in page.text
    assert "<script" not in page.text.split('id="program"')[1]
    # Another state's figures do not exist for them.
    assert analyst.get(f"/reports/program?state={world['co']}", htmx=htmx).status_code == 404
    assert (
        analyst.get(f"/reports/program.csv?table=retention&state={world['co']}").status_code == 404
    )
    # Retention: Maryland's 15 patients, not Colorado's.
    assert _grand_total(_csv(analyst, "table=retention")) == "15"


def test_an_admin_sees_every_state(
    world: dict[str, object], open_as: Callable[[str], Browser]
) -> None:
    admin = open_as(str(world["admin"]))
    assert admin.get("/reports/program").status_code == 200
    assert _grand_total(_csv(admin, "table=retention")) == "30"
    assert _grand_total(_csv(admin, f"table=retention&state={world['co']}")) == "15"


def test_no_csv_shows_a_count_from_one_to_ten(
    world: dict[str, object], open_as: Callable[[str], Browser]
) -> None:
    analyst = open_as(str(world["analyst"]))
    for table in ("adherence_by_visit", "adherence_by_year", "contact", "retention", "texts"):
        for row in _csv(analyst, f"table={table}"):
            assert row["value"] not in SMALL, (table, row)
    # The three patients not infused yet are a small count: shown as "<11".
    retention = _csv(analyst, "table=retention")
    enrolled = next(r for r in retention if r["row"] == "total" and r["column"] == "enrolled")
    assert enrolled["value"] == "<11"
    assert "<11" in plain(analyst.get("/reports/program").text)


def test_drill_down_is_refused_to_an_analyst_in_words_and_audited(
    world: dict[str, object], open_as: Callable[[str], Browser], empty_db: Database
) -> None:
    analyst = open_as(str(world["analyst"]))
    page = analyst.get("/reports/program/patients?table=retention&row=none&column=enrolled")
    assert page.status_code == 403
    assert "gives access to figures, not to patients" in plain(page.text)
    assert not any(name in page.text for name in world["waiting"])  # type: ignore[attr-defined]
    # No link to patients on an analyst's page.
    assert "/reports/program/patients" not in analyst.get("/reports/program").text
    with empty_db.factory() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "reports.program_patients")
        ).one()
        assert event.outcome is AuditOutcome.DENIED


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_a_coordinator_opens_their_patients_behind_a_figure(
    world: dict[str, object], open_as: Callable[[str], Browser], empty_db: Database, htmx: bool
) -> None:
    coordinator = open_as(str(world["coordinator"]))
    dashboard = coordinator.get("/reports/program", htmx=htmx)
    link = "/reports/program/patients?table=retention&amp;row=none&amp;column=enrolled"
    assert link in dashboard.text
    page = coordinator.get(link.replace("&amp;", "&"), htmx=htmx)
    assert page.status_code == 200
    text = plain(page.text)
    for name in world["waiting"]:  # type: ignore[attr-defined]
        assert name in text
    assert "3 patients" in text
    with empty_db.factory() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "reports.program_patients")
        ).one()
        assert event.outcome is AuditOutcome.SUCCESS
        assert event.detail is not None and len(event.detail["patient_ids"]) == 3
    # Colorado's patients are not theirs: filtering on Colorado is refused outright.
    other = coordinator.get(
        f"/reports/program/patients?table=retention&column=active&state={world['co']}"
    )
    assert other.status_code == 404


def test_the_measure_report_is_valid_r4_and_masks_small_counts(
    world: dict[str, object], open_as: Callable[[str], Browser]
) -> None:
    analyst = open_as(str(world["analyst"]))
    response = analyst.get("/reports/program/measure-report.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    resource = response.json()
    assert validate_resource(resource, expected_type="MeasureReport").errors == ()
    groups = {group["code"]["coding"][0]["code"]: group for group in resource["group"]}
    active = groups["patients-active"]
    counts = {p["code"]["coding"][0]["code"]: p.get("count") for p in active["population"]}
    assert counts["initial-population"] == 15
    for group in resource["group"]:
        for population in group["population"]:
            assert population.get("count") not in range(1, 11)


def test_viewing_and_exporting_are_audited(
    world: dict[str, object], open_as: Callable[[str], Browser], empty_db: Database
) -> None:
    analyst = open_as(str(world["analyst"]))
    analyst.get("/reports/program?period=2025")
    _csv(analyst, "table=texts")
    with empty_db.factory() as session:
        actions = list(
            session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.action.startswith("reports.program"))
                .order_by(AuditEvent.id)
            )
        )
    assert actions == ["reports.program", "reports.program_export"]
