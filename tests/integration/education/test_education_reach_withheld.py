"""Education reach: a table whose counts cannot be protected by hiding cells is withheld,
on the page and in the CSV (ten months with one completion each, and a total of 10: every
"<11" would be a 1)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy import select

from core.clock import FrozenClock
from core.db import transaction
from core.models import State
from education.content import shipped_modules
from reporting.education_reach import state_reach
from tests.conftest import COORDINATOR_MD, Database, log_in
from tests.integration.education.test_education_staff import _completion, _readers

MODULE = "warning-signs"


def _one_a_month(db: Database, *, months: int) -> int:
    """One patient of Maryland completes MODULE in each of the first `months` months of
    2026; returns Maryland's id."""
    with transaction(db.factory) as session:
        maryland = session.scalars(select(State).where(State.code == "MD")).one()
        for month, user in enumerate(_readers(session, maryland, "patient", months, "wh"), 1):
            session.add(
                _completion(
                    user.id,
                    MODULE,
                    state_id=maryland.id,
                    role="patient",
                    at=datetime(2026, month, 10, 17, 0, tzinfo=UTC),
                    patient_id=user.patient_id,
                )
            )
        return maryland.id


def test_ten_ones_and_a_total_of_ten_are_withheld_on_the_page_and_in_the_csv(
    db: Database, client: TestClient, clock: FrozenClock
) -> None:
    state_id = _one_a_month(db, months=10)
    log_in(client, COORDINATOR_MD, clock)

    page = client.get(f"/education/reach?state={state_id}&year=2026")
    assert page.status_code == 200
    patients, caregivers = page.text.split('id="reach-caregiver-title"')
    assert "Not shown: these counts are so small" in patients
    assert "<td>" not in patients.split('id="reach-patient-title"')[1]
    assert "Not shown" not in caregivers and "<td>" in caregivers  # the other table stays

    rows = list(
        csv.DictReader(
            io.StringIO(client.get(f"/education/reach.csv?state={state_id}&year=2026").text)
        )
    )
    assert rows and {row["readers"] for row in rows} == {"caregiver"}


def test_nine_ones_can_be_protected_and_are_shown(
    db: Database, client: TestClient, clock: FrozenClock
) -> None:
    state_id = _one_a_month(db, months=9)
    with db.factory() as session:
        maryland = session.get(State, state_id)
        assert maryland is not None
        reach = state_reach(
            session,
            clock=clock,
            state=maryland,
            year=2026,
            library=shipped_modules(),
            language="en",
        )
    assert [table.withheld for table in reach.tables] == [False, False]
    log_in(client, COORDINATOR_MD, clock)
    page = client.get(f"/education/reach?state={state_id}&year=2026")
    assert "Not shown" not in page.text
