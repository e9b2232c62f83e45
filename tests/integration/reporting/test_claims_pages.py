"""The claims upload page (`/reports/claims`), plain and with htmx, and the command
`cgt-access claims import`: an analyst loads a file of their state and sees what came of it;
a refused file shows every problem by line and loads nothing; a file for a state the
analyst does not hold is refused; the size limit; the past loads."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from core.clock import FrozenClock
from core.identity.models import Role
from core.models import Language
from core.settings import get_settings
from portal.cli import app as cli
from reporting.models import ClaimFile, ClaimLine
from tests.conftest import HTMX, Database, log_in, plain
from tests.factories import PASSWORD, building

HEADER = (
    "FILE_TYPE,SUBMTG_STATE_CD,MSIS_IDENT_NUM,ORGNL_CLM_NUM,ADJSTMT_CLM_NUM,ADJSTMT_IND,"
    "LINE_NUM,SRVC_BGN_DT,SRVC_END_DT,ADMSN_DT,DSCHRG_DT,DGNS_CD_1,DGNS_CD_2,POS_CD,REV_CD\n"
)
GOOD = (
    HEADER
    + "IP,MD,MD1000001,C100,,0,1,2025-09-01,2025-09-04,2025-09-01,2025-09-04,D57.00,,,0120\n"
    + "OT,MD,MD1000001,C200,,0,1,2025-10-02,2025-10-02,,,D57.1,,23,\n"
    + "OT,MD,MD7777777,C300,,0,1,2025-10-03,2025-10-03,,,D57.00,,,\n"
)
BAD = GOOD + "OT,MD,MD1000001,C400,,0,1,2025-10-09,2025-10-03,,,D57.00,,,\n"
_LOAD = re.compile(r"/reports/claims\?load=(\d+)&done=(\w+)")


@dataclass
class World:
    analyst: str  # Maryland only
    spanish_analyst: str  # Maryland only, reads Spanish
    admin: str
    maryland_id: int
    colorado_id: int


@pytest.fixture
def world(empty_db: Database, clock: FrozenClock) -> World:
    with building(empty_db.factory, clock) as make:
        maryland, colorado = make.state("MD"), make.state("CO")
        make.patient(center=make.center(maryland), medicaid_id="MD1000001", schedule=False)
        make.patient(center=make.center(colorado), medicaid_id="CO2000002", schedule=False)
        analyst = make.staff(Role.STATE_ANALYST, states=[maryland])
        spanish = make.staff(Role.STATE_ANALYST, states=[maryland])
        spanish.preferred_language = Language.ES
        admin = make.staff(Role.ADMIN)
        return World(
            analyst=analyst.login or "",
            spanish_analyst=spanish.login or "",
            admin=admin.login or "",
            maryland_id=maryland.id,
            colorado_id=colorado.id,
        )


def _upload(
    client: TestClient,
    token: str,
    *,
    state_id: int,
    text: str,
    name: str = "md-claims.csv",
    htmx: bool = False,
) -> httpx.Response:
    response: httpx.Response = client.post(
        "/reports/claims",
        data={"csrf_token": token, "state": str(state_id)},
        files={"file": (name, text.encode(), "text/csv")},
        headers=HTMX if htmx else {},
    )
    return response


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_an_analyst_loads_a_file_and_sees_what_came_of_it(
    empty_client: TestClient,
    empty_db: Database,
    world: World,
    clock: FrozenClock,
    htmx: bool,
) -> None:
    token = log_in(empty_client, world.analyst, clock, password=PASSWORD)
    page = empty_client.get("/reports/claims", headers=HTMX if htmx else {})
    assert page.status_code == 200
    assert ("<html" in page.text) is not htmx
    # Only the analyst's own state to choose.
    assert re.findall(r'<option value="(\d+)"', page.text) == [str(world.maryland_id)]

    response = _upload(empty_client, token, state_id=world.maryland_id, text=GOOD, htmx=htmx)
    target = response.headers.get("HX-Redirect" if htmx else "location", "")
    assert response.status_code == (204 if htmx else 303)
    found = _LOAD.fullmatch(target)
    assert found and found.group(2) == "loaded"
    result = plain(empty_client.get(target).text)
    assert "The file is loaded." in result
    assert "Rows in the file 3 Claim lines loaded 2" in result
    assert "Unmatched rows 1" in result
    assert "Line 4: No patient of this state has this Medicaid ID." in result
    # The past loads: when, which state, which file, who, and the counts.
    assert f"MD md-claims.csv {world.analyst} 3 2 0 0 0 1" in result

    again = _upload(empty_client, token, state_id=world.maryland_id, text=GOOD, htmx=htmx)
    target = again.headers.get("HX-Redirect" if htmx else "location", "")
    assert target.endswith("&done=already_loaded")
    assert "This file was loaded before: nothing changed." in plain(empty_client.get(target).text)
    with empty_db.factory() as session:
        assert len(session.scalars(select(ClaimLine)).all()) == 2
        assert len(session.scalars(select(ClaimFile)).all()) == 1


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_a_malformed_file_is_refused_whole_with_its_problems_by_line(
    empty_client: TestClient,
    empty_db: Database,
    world: World,
    clock: FrozenClock,
    htmx: bool,
) -> None:
    token = log_in(empty_client, world.analyst, clock, password=PASSWORD)
    response = _upload(empty_client, token, state_id=world.maryland_id, text=BAD, htmx=htmx)
    assert response.status_code == 422
    text = response.text
    assert ("<html" in text) is not htmx
    shown = plain(text)
    assert "The file md-claims.csv was not loaded" in shown
    assert (
        "Line 5: The service begins (SRVC_BGN_DT 2025-10-09) after it ends "
        "(SRVC_END_DT 2025-10-03)." in shown
    )
    with empty_db.factory() as session:
        assert session.scalars(select(ClaimLine)).all() == []


def test_a_file_for_a_state_the_analyst_does_not_hold_is_refused(
    empty_client: TestClient, empty_db: Database, world: World, clock: FrozenClock
) -> None:
    token = log_in(empty_client, world.analyst, clock, password=PASSWORD)
    colorado = HEADER + "OT,CO,CO2000002,K1,,0,1,2025-10-02,2025-10-02,,,D57.00,,,\n"
    # The form offers Maryland only; a forged Colorado is refused all the same.
    forged = _upload(empty_client, token, state_id=world.colorado_id, text=colorado)
    assert forged.status_code == 422
    assert "You may load claims only for your own states; CO is not one of them." in plain(
        forged.text
    )
    as_maryland = _upload(empty_client, token, state_id=world.maryland_id, text=colorado)
    assert "This file is for CO, not MD." in plain(as_maryland.text)
    with empty_db.factory() as session:
        assert session.scalars(select(ClaimLine)).all() == []
    # The admin may load it for Colorado; the Maryland analyst never sees that load.
    admin = TestClient(empty_client.app, raise_server_exceptions=False, follow_redirects=False)
    with admin:
        admin_token = log_in(admin, world.admin, clock, password=PASSWORD)
        loaded = _upload(admin, admin_token, state_id=world.colorado_id, text=colorado)
        load_url = loaded.headers["location"]
    assert empty_client.get(load_url).status_code == 404
    assert "CO" not in re.findall(r"<td>(\w\w)</td>", empty_client.get("/reports/claims").text)


def test_the_form_asks_for_a_file_and_refuses_one_too_large(
    empty_client: TestClient, world: World, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = log_in(empty_client, world.analyst, clock, password=PASSWORD)
    no_file = empty_client.post(
        "/reports/claims", data={"csrf_token": token, "state": str(world.maryland_id)}
    )
    assert no_file.status_code == 400
    assert "Choose a claims file (CSV)." in plain(no_file.text)
    monkeypatch.setattr("portal.routes.reports_claims.MAX_UPLOAD_BYTES", 100)
    over = _upload(empty_client, token, state_id=world.maryland_id, text=GOOD)
    assert over.status_code == 400
    assert "The file is larger than 64 MB." in plain(over.text)
    # Announced far larger than the limit: refused before it is read.
    huge = _upload(empty_client, token, state_id=world.maryland_id, text=GOOD * 2000)
    assert huge.status_code == 413
    assert "The file is larger than 64 MB." in plain(huge.text)


def test_the_page_and_its_problems_in_spanish(
    empty_client: TestClient, world: World, clock: FrozenClock
) -> None:
    token = log_in(empty_client, world.spanish_analyst, clock, password=PASSWORD)
    response = _upload(empty_client, token, state_id=world.maryland_id, text=BAD)
    shown = plain(response.text)
    assert "Reclamaciones de Medicaid" in shown
    assert "Línea 5:" in shown
    assert "The service begins" not in shown


def test_only_admins_and_analysts_load_claims(
    empty_client: TestClient, empty_db: Database, clock: FrozenClock
) -> None:
    with building(empty_db.factory, clock) as make:
        coordinator = make.staff(Role.COORDINATOR).login or ""
    log_in(empty_client, coordinator, clock, password=PASSWORD)
    assert empty_client.get("/reports/claims").status_code == 403


# --- the command ----------------------------------------------------------------------------


def _run(db: Database, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setitem(os.environ, "DATABASE_URL", db.url)
    monkeypatch.setitem(os.environ, "DEMO_MODE", "true")
    try:
        result = CliRunner().invoke(cli, list(args))
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output


def test_the_command_loads_a_file_and_refuses_a_malformed_one(
    empty_db: Database,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    good, bad = tmp_path / "md.csv", tmp_path / "bad.csv"
    good.write_text(GOOD, encoding="utf-8")
    bad.write_text(BAD, encoding="utf-8")
    code, output = _run(empty_db, monkeypatch, "claims", "import", str(bad), "--state", "MD")
    assert code == 1
    assert "refused, nothing loaded (1 problem(s))" in output
    assert "line 5: The service begins" in output
    code, output = _run(empty_db, monkeypatch, "claims", "import", str(good), "--state", "md")
    assert code == 0, output
    assert "3 row(s), 2 loaded (0 replacing earlier lines), 0 unchanged" in output
    assert "line 4: no patient of MD has this Medicaid ID" in output
    code, output = _run(empty_db, monkeypatch, "claims", "import", str(good), "--state", "MD")
    assert (code, "already loaded for MD" in output) == (0, True)
    # As the Maryland analyst, for Colorado: refused.
    code, output = _run(
        empty_db,
        monkeypatch,
        "claims",
        "import",
        str(good),
        "--state",
        "CO",
        "--as",
        world.analyst,
    )
    assert code == 1
    assert "CO is not one of them" in output
    code, output = _run(empty_db, monkeypatch, "claims", "rederive")
    assert (code, output.strip()) == (0, "2 claim line(s) read, 0 changed")
    with empty_db.factory() as session:
        assert {line.claim_id for line in session.scalars(select(ClaimLine))} == {"C100", "C200"}
        loads = session.scalars(select(ClaimFile)).all()
        assert [load.loaded_by_label for load in loads] == ["system:claims-import"]


def test_the_code_lists_command_says_what_each_flag_counts(
    empty_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = _run(empty_db, monkeypatch, "claims", "codes")
    assert code == 0
    assert output.splitlines() == [
        "is_ed_visit (emergency_department): 11 revenue_code, 1 place_of_service",
        "is_inpatient_stay (inpatient_stay): 1 file_type",
        "is_vaso_occlusive (vaso_occlusive_crisis): 36 diagnosis",
    ]


def test_the_demo_files_load_with_an_adjustment_and_a_void(
    empty_db: Database, clock: FrozenClock
) -> None:
    from portal.dev.demo_claims import seed_demo_claims

    with building(empty_db.factory, clock) as make:
        center = make.center(make.state("MD"))
        for number in range(14):
            make.patient(
                center=center,
                medicaid_id=f"MD{5000000 + number}",
                infusion_date=clock.now().date() - timedelta(days=400 + 90 * number),
                schedule=False,
            )
    with empty_db.factory() as session:
        seed_demo_claims(session, clock=clock)
        session.commit()
        loads = session.scalars(select(ClaimFile).order_by(ClaimFile.id)).all()
        live_crisis_stays = {
            line.claim_id
            for line in session.scalars(select(ClaimLine))
            if line.superseded_at is None and line.is_vaso_occlusive and line.is_inpatient_stay
        }
    first, adjustments = loads
    assert (first.rows_unmatched, first.rows_unchanged) == (1, 0)
    assert (adjustments.rows_replacing, adjustments.rows_voids) == (1, 1)
    assert adjustments.loaded_at > first.loaded_at
    # After infusion, patients 5 and 13 had a crisis stay again (1 and 9 an ED visit); the
    # adjustment file corrected patient 5's to "without crisis" (MDD005R1A).
    assert {claim for claim in live_crisis_stays if "R" in claim} == {"MDD013R1"}
