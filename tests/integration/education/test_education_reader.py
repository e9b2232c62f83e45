"""What patients and caregivers see and do in education: the modules offered to them (core,
funded by their state today, and whatever they started, completed or were assigned), reading
section by section and resuming in another login, the knowledge check (feedback, retry,
completion with version and score), significant and minor new versions, 404 for what is not
offered, 403 for staff, and module pages that load nothing from another host. Pages are
driven as a browser without JavaScript would, and as htmx does. SQLite and PostgreSQL."""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.clock import FrozenClock
from core.db import transaction
from core.models import CaregiverLink, State
from education.content import ModuleLibrary, load_library, shipped_modules
from education.models import (
    ModuleAssignment,
    ModuleCompletion,
    ModuleFunding,
    ModuleProgress,
)
from education.offer import ReadingStatus, offered_modules
from portal.routes.education import module_library
from tests.conftest import (
    ANALYST,
    CAREGIVER_CO,
    CAREGIVER_MD,
    COORDINATOR_MD,
    PATIENT_MD,
    T0,
    Database,
    log_in,
    user_by_login,
)
from tests.support.education import without_funding


@pytest.fixture(autouse=True)
def _states_fund_nothing_yet(request: pytest.FixtureRequest) -> None:
    """These tests add their own funding windows to states that fund nothing yet."""
    if "db" in request.fixturenames:
        without_funding(request.getfixturevalue("db"))


HTMX = {"HX-Request": "true"}
CORE = "what-is-gene-therapy"  # core, for patients and caregivers, every therapy
FUNDABLE = "living-after-gene-therapy"  # not core, patients and caregivers
FOR_CAREGIVERS = "for-caregivers"  # not core, caregivers only
OTHER_THERAPY = "casgevy-what-to-know"  # core, Casgevy only (Maya receives Lyfgenia)
LIBRARY = shipped_modules()


def title(key: str, language: str = "en") -> str:
    module = LIBRARY.get(key)
    assert module is not None
    return module.text(language).title


def sections(key: str) -> tuple[str, ...]:
    module = LIBRARY.get(key)
    assert module is not None
    return module.section_ids


def page_text(response: httpx.Response) -> str:
    return html.unescape(response.text)


def fund(
    db: Database,
    key: str,
    *,
    state: str = "MD",
    start: date,
    until: date | None = None,
    ended_at: datetime | None = None,
) -> None:
    with transaction(db.factory) as session:
        state_id = session.scalar(select(State.id).where(State.code == state))
        assert state_id is not None
        session.add(
            ModuleFunding(
                state_id=state_id,
                module_key=key,
                funded_from=start,
                funded_until=until,
                created_at=T0 - timedelta(days=90),
                ended_at=ended_at,
            )
        )


Browser = Callable[[str], tuple[TestClient, str]]


@pytest.fixture
def new_browser(app: FastAPI, clock: FrozenClock) -> Iterator[Browser]:
    """Another device: a fresh client, logged in anew (its own login session)."""
    with ExitStack() as stack:

        def open_browser(login: str) -> tuple[TestClient, str]:
            client = stack.enter_context(
                TestClient(app, raise_server_exceptions=False, follow_redirects=False)
            )
            return client, log_in(client, login, clock)

        yield open_browser


def read_next(
    client: TestClient, token: str, key: str, section_id: str, *, htmx: bool
) -> httpx.Response:
    """Press "Next" under a section, as a plain form or as htmx."""
    response: httpx.Response = client.post(
        f"/learn/{key}/{section_id}",
        data={"csrf_token": token},
        headers=HTMX if htmx else {},
    )
    return response


# --- what is offered --------------------------------------------------------------------------


def test_the_list_shows_core_and_funded_modules_but_not_unfunded_ones(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    today = T0.date()
    fund(db, "state-support", start=today - timedelta(days=30))  # Maryland funds it
    fund(db, FUNDABLE, state="CO", start=today - timedelta(days=30))  # Colorado does, not MD
    fund(db, FOR_CAREGIVERS, start=today - timedelta(days=30))  # not for patients
    # Windows that do not contain today, or were ended by an admin.
    fund(db, "state-support", start=today + timedelta(days=1))
    login_as(PATIENT_MD)

    response = client.get("/learn")
    assert response.status_code == 200
    text = page_text(response)
    for shown in (CORE, "warning-signs", "lyfgenia-what-to-know", "state-support"):
        assert title(shown) in text, shown
    for hidden in (FUNDABLE, FOR_CAREGIVERS, OTHER_THERAPY):
        assert title(hidden) not in text, hidden
    assert text.count('class="card learn-card"') == 7  # 6 core modules for her therapy + 1
    assert "Not started" in text and "Start" in text


def test_an_ended_or_future_funding_window_offers_nothing(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    today = T0.date()
    fund(db, FUNDABLE, start=today - timedelta(days=60), ended_at=T0 - timedelta(hours=1))
    fund(db, "state-support", start=today + timedelta(days=3))
    login_as(PATIENT_MD)

    text = page_text(client.get("/learn"))
    assert title(FUNDABLE) not in text
    assert title("state-support") not in text
    assert client.get(f"/learn/{FUNDABLE}").status_code == 404


def test_a_module_out_of_its_funding_window_stays_visible_to_who_completed_it(
    db: Database, new_browser: Browser, clock: FrozenClock
) -> None:
    # Maryland funds the module until Nov 30 (Baltimore's date).
    fund(db, FUNDABLE, start=date(2026, 11, 1), until=date(2026, 11, 30))
    maya, maya_token = new_browser(PATIENT_MD)
    _complete_by_pages(maya, maya_token, FUNDABLE)

    # Dec 1 at 04:30 UTC is still Nov 30 in Baltimore: still funded for a new reader.
    clock.set(datetime(2026, 12, 1, 4, 30, tzinfo=UTC))
    denise, _ = new_browser(CAREGIVER_MD)
    assert title(FUNDABLE) in page_text(denise.get("/learn"))

    clock.set(datetime(2026, 12, 1, 5, 30, tzinfo=UTC))  # Dec 1 in Baltimore: window over
    denise, _ = new_browser(CAREGIVER_MD)
    assert title(FUNDABLE) not in page_text(denise.get("/learn"))
    assert denise.get(f"/learn/{FUNDABLE}/{sections(FUNDABLE)[0]}").status_code == 404

    maya, _ = new_browser(PATIENT_MD)
    listing = page_text(maya.get("/learn"))
    assert title(FUNDABLE) in listing
    card = _card(listing, FUNDABLE)
    assert "Completed" in card and "Read again" in card
    # Still readable: what was completed can be read again.
    assert maya.get(f"/learn/{FUNDABLE}/{sections(FUNDABLE)[0]}").status_code == 200


def test_started_or_assigned_modules_stay_offered_whatever_the_funding(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    with transaction(db.factory) as session:
        maya = user_by_login(session, PATIENT_MD)
        coordinator = user_by_login(session, COORDINATOR_MD)
        session.add(
            ModuleProgress(
                user_id=maya.id,
                module_key=FUNDABLE,
                module_version=1,
                current_section=sections(FUNDABLE)[1],
                sections_done=[sections(FUNDABLE)[0]],
                started_at=T0 - timedelta(days=3),
                updated_at=T0 - timedelta(days=3),
            )
        )
        session.add(
            ModuleAssignment(
                module_key="state-support",
                user_id=maya.id,
                patient_id=maya.patient_id,
                due_on=date(2026, 12, 15),
                assigned_at=T0 - timedelta(days=1),
                assigned_by_user_id=coordinator.id,
            )
        )
    login_as(PATIENT_MD)

    text = page_text(client.get("/learn"))
    started, assigned = _card(text, FUNDABLE), _card(text, "state-support")
    count = len(sections(FUNDABLE))
    assert f"Section 2 of {count}" in started and "Continue" in started
    assert f'<progress max="{count}" value="1"' in started
    assert "Please read by December 15, 2026" in assigned and "Start" in assigned
    # What needs doing comes first: the assignment, then the started module.
    assert (
        text.index(title("state-support")) < text.index(title(FUNDABLE)) < text.index(title(CORE))
    )


def test_a_caregiver_sees_caregiver_modules_and_their_progress_is_their_own(
    db: Database, new_browser: Browser
) -> None:
    fund(db, FOR_CAREGIVERS, start=T0.date() - timedelta(days=1))
    denise, token = new_browser(CAREGIVER_MD)

    listing = page_text(denise.get("/learn"))
    assert title(FOR_CAREGIVERS) in listing and title(CORE) in listing
    first = sections(FOR_CAREGIVERS)[0]
    assert read_next(denise, token, FOR_CAREGIVERS, first, htmx=False).status_code == 303
    assert read_next(denise, token, CORE, sections(CORE)[0], htmx=False).status_code == 303

    maya, _ = new_browser(PATIENT_MD)
    mine = page_text(maya.get("/learn"))
    assert title(FOR_CAREGIVERS) not in mine  # a caregivers' module
    assert "Not started" in _card(mine, CORE)  # Denise's reading is hers, not Maya's
    assert maya.get(f"/learn/{FOR_CAREGIVERS}").status_code == 404
    assert f"Section 2 of {len(sections(CORE))}" in _card(page_text(denise.get("/learn")), CORE)

    _complete_by_pages(denise, token, FOR_CAREGIVERS)
    with db.factory() as session:
        completion = session.scalars(select(ModuleCompletion)).one()
        denise_user = user_by_login(session, CAREGIVER_MD)
        maryland = session.scalar(select(State.id).where(State.code == "MD"))
    assert completion.user_id == denise_user.id and completion.module_key == FOR_CAREGIVERS
    assert completion.reader_role == "caregiver" and completion.patient_id is None
    assert completion.state_id == maryland


def test_a_spanish_reader_gets_the_spanish_text(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    login_as(CAREGIVER_CO)  # Rosa reads in Spanish
    listing = client.get("/learn")
    assert '<html lang="es">' in listing.text
    text = page_text(listing)
    assert title(CORE, "es") in text and title(CORE) not in text

    module = LIBRARY.get(CORE)
    assert module is not None
    page = page_text(client.get(f"/learn/{CORE}/{module.section_ids[0]}"))
    assert module.es.sections[0].title in page
    assert module.en.sections[0].title not in page
    check = page_text(client.get(f"/learn/{CORE}/check"))
    assert module.es.questions[0].text in check


# --- reading and resuming ---------------------------------------------------------------------


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_reading_resumes_at_the_same_section_in_a_new_login(
    db: Database, new_browser: Browser, clock: FrozenClock, htmx: bool
) -> None:
    ids = sections(CORE)
    assert len(ids) >= 3
    phone, token = new_browser(PATIENT_MD)

    start = phone.get(f"/learn/{CORE}")
    assert start.status_code == 303 and start.headers["location"] == f"/learn/{CORE}/{ids[0]}"
    first = phone.get(f"/learn/{CORE}/{ids[0]}")
    assert first.status_code == 200
    assert f"Section 1 of {len(ids)}" in first.text
    assert f'<progress max="{len(ids)}" value="1"' in first.text

    for index in (0, 1):
        step = read_next(phone, token, CORE, ids[index], htmx=htmx)
        if htmx:  # the next section's block, and the address to show
            assert step.status_code == 200
            assert step.headers["HX-Push-Url"] == f"/learn/{CORE}/{ids[index + 1]}"
            assert step.text.lstrip().startswith('<article id="section"')
            assert "<html" not in step.text
            assert f"Section {index + 2} of {len(ids)}" in step.text
        else:
            assert step.status_code == 303
            assert step.headers["location"] == f"/learn/{CORE}/{ids[index + 1]}"
    # Going back to re-read the first section does not move where the reader resumes.
    back = phone.get(f"/learn/{CORE}/{ids[0]}", headers=HTMX if htmx else {})
    assert back.status_code == 200
    assert ("<html" in back.text) is not htmx
    phone.post("/logout", data={"csrf_token": token})

    clock.advance(timedelta(days=2))
    laptop, _ = new_browser(PATIENT_MD)
    resume = laptop.get(f"/learn/{CORE}")
    assert resume.status_code == 303
    assert resume.headers["location"] == f"/learn/{CORE}/{ids[2]}"
    card = _card(page_text(laptop.get("/learn")), CORE)
    assert f"Section 3 of {len(ids)}" in card and "Continue" in card


def test_after_the_last_section_comes_the_knowledge_check(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    token = login_as(PATIENT_MD)
    ids = sections(CORE)
    for section_id in ids[:-1]:
        read_next(client, token, CORE, section_id, htmx=False)
    last = client.get(f"/learn/{CORE}/{ids[-1]}")
    assert "Go to the questions" in last.text
    done = read_next(client, token, CORE, ids[-1], htmx=True)
    assert done.status_code == 204 and done.headers["HX-Redirect"] == f"/learn/{CORE}/check"
    assert client.get(f"/learn/{CORE}").headers["location"] == f"/learn/{CORE}/check"


# --- the knowledge check ----------------------------------------------------------------------


def _answers(key: str, *, wrong: Collection[str] = ()) -> dict[str, str]:
    """The check's form fields: every answer right, except the questions in `wrong`."""
    module = LIBRARY.get(key)
    assert module is not None
    return {
        f"q-{q.id}": str((q.answer + 1) % len(q.choices) if q.id in wrong else q.answer)
        for q in module.en.questions
    }


def _check_state(response: httpx.Response) -> str:
    match = re.search(r'name="check_state" value="([^"]+)"', response.text)
    assert match, "no check state in the form"
    return match.group(1)


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_the_knowledge_check_gives_feedback_allows_a_retry_and_completes(
    db: Database, client: TestClient, login_as: Callable[[str], str], htmx: bool
) -> None:
    token = login_as(PATIENT_MD)
    module = LIBRARY.get(CORE)
    assert module is not None
    questions = module.en.questions
    page = client.get(f"/learn/{CORE}/check")
    assert page.status_code == 200
    for question in questions:
        assert html.escape(question.text, quote=False) in page.text
    assert page.text.count('type="radio"') == sum(len(q.choices) for q in questions)
    first = questions[0]
    headers = HTMX if htmx else {}

    if htmx:  # one question at a time, with its own button
        wrong = _answers(CORE, wrong={first.id})
        answer = client.post(
            f"/learn/{CORE}/check",
            data={
                "csrf_token": token,
                "check_state": _check_state(page),
                f"q-{first.id}": wrong[f"q-{first.id}"],
                "check": first.id,
            },
            headers=headers,
        )
        assert answer.status_code == 200
        assert answer.text.lstrip().startswith('<section id="check"')
        state = _check_state(answer)
        for question in questions[1:]:
            reply = client.post(
                f"/learn/{CORE}/check",
                data={
                    "csrf_token": token,
                    "check_state": state,
                    f"q-{question.id}": str(question.answer),
                    "check": question.id,
                },
                headers=headers,
            )
            state = _check_state(reply)
            assert "Right." in reply.text
    else:  # every answer at once, one of them wrong
        answer = client.post(
            f"/learn/{CORE}/check",
            data={
                "csrf_token": token,
                "check_state": _check_state(page),
                **_answers(CORE, wrong={first.id}),
                "check": "all",
            },
        )
        assert answer.status_code == 200
        assert "<html" in answer.text
        state = _check_state(answer)
        assert answer.text.count("Right.") == len(questions) - 1
    feedback = page_text(answer)
    assert "Not quite. Try again." in feedback
    assert first.explanation in feedback
    with db.factory() as session:
        assert session.scalars(select(ModuleCompletion)).all() == []

    # The retry: the wrong one answered right now.
    retry = client.post(
        f"/learn/{CORE}/check",
        data={
            "csrf_token": token,
            "check_state": state,
            f"q-{first.id}": str(first.answer),
            "check": first.id if htmx else "all",
        },
        headers=headers,
    )
    if htmx:
        assert retry.status_code == 200
        assert "Well done: you completed this lesson." in retry.text
    else:
        assert retry.status_code == 303
        assert retry.headers["location"] == f"/learn/{CORE}/check?done=1"
        done = client.get(retry.headers["location"])
        assert "Well done: you completed this lesson." in done.text
    expected = (
        f"You answered {len(questions) - 1} of {len(questions)} questions right the first time."
    )
    assert expected in page_text(retry if htmx else done)

    with db.factory() as session:
        maya = user_by_login(session, PATIENT_MD)
        completion = session.scalars(select(ModuleCompletion)).one()
        assert (completion.user_id, completion.module_key) == (maya.id, CORE)
        assert completion.module_version == module.version
        assert (completion.score, completion.questions) == (len(questions) - 1, len(questions))
        assert completion.reader_role == "patient" and completion.patient_id == maya.patient_id
        assert maya.patient is not None and completion.state_id == maya.patient.state_id
        assert completion.completed_at == T0
    card = _card(page_text(client.get("/learn")), CORE)
    assert "Completed" in card
    assert f"{len(questions) - 1} of {len(questions)} right the first time" in card


def test_a_retry_cannot_rewrite_a_first_try_and_a_forged_state_is_ignored(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    token = login_as(PATIENT_MD)
    module = LIBRARY.get(CORE)
    assert module is not None
    questions = module.en.questions
    page = client.get(f"/learn/{CORE}/check")
    everything_wrong = _answers(CORE, wrong={q.id for q in questions})
    data = {"csrf_token": token, "check": "all"}
    wrong = client.post(
        f"/learn/{CORE}/check", data={**data, "check_state": _check_state(page), **everything_wrong}
    )
    assert wrong.text.count("Not quite. Try again.") == len(questions)
    # A made-up state, or the check reloaded as a fresh page, cannot reset the first tries:
    # they are kept with the reader's progress.
    fresh = client.get(f"/learn/{CORE}/check")
    forged = client.post(
        f"/learn/{CORE}/check", data={**data, "check_state": "e30.forged", **_answers(CORE)}
    )
    assert forged.status_code == 303  # completed now, scored from the first tries
    assert fresh.status_code == 200
    with db.factory() as session:
        completion = session.scalars(select(ModuleCompletion)).one()
    assert completion.score == 0
    # A second pass of the same version keeps the first record.
    again = client.post(
        f"/learn/{CORE}/check", data={**data, "check_state": _check_state(wrong), **_answers(CORE)}
    )
    assert again.status_code == 303
    with db.factory() as session:
        assert len(session.scalars(select(ModuleCompletion)).all()) == 1


# --- new versions -----------------------------------------------------------------------------


def _library_copy(
    tmp_path: Path, key: str, *, version: int, significant_since: int
) -> ModuleLibrary:
    """A library of one shipped module, its front matter moved to another version."""
    source = LIBRARY.get(key)
    assert source is not None
    folder = tmp_path / f"v{version}-{significant_since}" / key
    shutil.copytree(Path(__file__).parents[3] / "education/modules" / key, folder)
    for language in ("en", "es"):
        path = folder / f"{language}.md"
        text = path.read_text(encoding="utf-8")
        text = text.replace(
            f"version: {source.version}\nsignificant_since: {source.significant_since}\n",
            f"version: {version}\nsignificant_since: {significant_since}\n",
            1,
        )
        path.write_text(text, encoding="utf-8")
    library = load_library(folder.parent)
    module = library.get(key)
    assert module is not None and module.version == version
    return library


def test_a_significant_new_version_asks_again_and_a_minor_one_does_not(
    db: Database, app: FastAPI, client: TestClient, clock: FrozenClock, tmp_path: Path
) -> None:
    token = log_in(client, PATIENT_MD, clock)
    first_library = _library_copy(tmp_path, CORE, version=1, significant_since=1)
    app.dependency_overrides[module_library] = lambda: first_library
    ids = sections(CORE)
    read_next(client, token, CORE, ids[0], htmx=False)
    page = client.get(f"/learn/{CORE}/check")
    client.post(
        f"/learn/{CORE}/check",
        data={
            "csrf_token": token,
            "check_state": _check_state(page),
            **_answers(CORE),
            "check": "all",
        },
    )

    minor = _library_copy(tmp_path, CORE, version=2, significant_since=1)
    app.dependency_overrides[module_library] = lambda: minor
    card = _card(page_text(client.get("/learn")), CORE)
    assert "Completed" in card and "(version 1)" in card and "Updated" not in card
    assert "You answered" in client.get(f"/learn/{CORE}/check").text  # nothing asked again

    significant = _library_copy(tmp_path, CORE, version=3, significant_since=3)
    app.dependency_overrides[module_library] = lambda: significant
    card = _card(page_text(client.get("/learn")), CORE)
    assert "This lesson changed since you read it." in card and "Read again" in card
    assert client.get(f"/learn/{CORE}").headers["location"] == f"/learn/{CORE}/{ids[0]}"
    check = client.get(f"/learn/{CORE}/check")
    assert "You answered" not in check.text and 'type="radio"' in check.text
    # Reading the new version starts over (the old reading's sections do not count).
    read_next(client, token, CORE, ids[0], htmx=False)
    card = _card(page_text(client.get("/learn")), CORE)
    assert f"Section 2 of {len(ids)}" in card
    client.post(
        f"/learn/{CORE}/check",
        data={
            "csrf_token": token,
            "check_state": _check_state(check),
            **_answers(CORE),
            "check": "all",
        },
    )
    with db.factory() as session:
        versions = sorted(c.module_version for c in session.scalars(select(ModuleCompletion)))
    assert versions == [1, 3]

    with db.factory() as session:  # the service reads the same library it is given
        maya = user_by_login(session, PATIENT_MD)
        statuses = {
            item.key: item.status
            for item in offered_modules(
                session, user=maya, clock=clock, library=significant, language="en"
            )
        }
    assert statuses == {CORE: ReadingStatus.COMPLETED}


def test_an_outdated_reading_that_goes_straight_to_the_check_starts_over(
    db: Database, app: FastAPI, client: TestClient, clock: FrozenClock, tmp_path: Path
) -> None:
    token = log_in(client, PATIENT_MD, clock)
    ids = sections(CORE)
    module = LIBRARY.get(CORE)
    assert module is not None and len(ids) >= 3
    first = module.en.questions[0]
    old = _library_copy(tmp_path, CORE, version=1, significant_since=1)
    app.dependency_overrides[module_library] = lambda: old
    for section_id in ids[:2]:
        read_next(client, token, CORE, section_id, htmx=False)
    assert client.get(f"/learn/{CORE}").headers["location"] == f"/learn/{CORE}/{ids[2]}"

    significant = _library_copy(tmp_path, CORE, version=3, significant_since=3)
    app.dependency_overrides[module_library] = lambda: significant
    page = client.get(f"/learn/{CORE}/check")
    answer = client.post(
        f"/learn/{CORE}/check",
        data={
            "csrf_token": token,
            "check_state": _check_state(page),
            f"q-{first.id}": str(first.answer),
            "check": first.id,
        },
        headers=HTMX,
    )
    assert answer.status_code == 200 and "Right." in answer.text
    # The sections read in the old version do not count for the new one.
    assert client.get(f"/learn/{CORE}").headers["location"] == f"/learn/{CORE}/{ids[0]}"
    card = _card(page_text(client.get("/learn")), CORE)
    assert f"Section 1 of {len(ids)}" in card
    with db.factory() as session:
        progress = session.scalars(select(ModuleProgress)).one()
    assert progress.module_version == 3 and progress.sections_done == []


# --- refusals ---------------------------------------------------------------------------------


def test_a_module_not_offered_is_not_found(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    token = login_as(PATIENT_MD)
    for path in (
        f"/learn/{OTHER_THERAPY}",  # another therapy's module
        f"/learn/{OTHER_THERAPY}/{sections(OTHER_THERAPY)[0]}",
        f"/learn/{OTHER_THERAPY}/check",
        f"/learn/{FUNDABLE}/{sections(FUNDABLE)[0]}",  # not funded by Maryland
        "/learn/no-such-module",
        f"/learn/{CORE}/no-such-section",
    ):
        assert client.get(path).status_code == 404, path
    refused = client.post(
        f"/learn/{OTHER_THERAPY}/{sections(OTHER_THERAPY)[0]}", data={"csrf_token": token}
    )
    assert refused.status_code == 404
    with db.factory() as session:
        assert session.scalars(select(ModuleProgress)).all() == []


@pytest.mark.parametrize("login", [COORDINATOR_MD, ANALYST])
def test_staff_do_not_read_modules(
    db: Database, client: TestClient, login_as: Callable[[str], str], login: str
) -> None:
    login_as(login)
    assert client.get("/learn").status_code == 403
    assert client.get(f"/learn/{CORE}/{sections(CORE)[0]}").status_code == 403
    assert 'href="/learn"' not in client.get("/account").text  # no menu item for staff


# --- light pages ------------------------------------------------------------------------------


class _Resources(HTMLParser):
    """The addresses a browser would load on its own: stylesheets, scripts, images..."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in ("link", "script", "img", "iframe", "source", "video", "audio", "embed"):
            for name in ("src", "href", "srcset"):
                if values.get(name):
                    self.urls.append(str(values[name]))
        if values.get("style") and "url(" in str(values["style"]):
            self.urls.append(str(values["style"]))


def test_module_pages_load_nothing_from_another_host_and_work_without_javascript(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    login_as(CAREGIVER_CO)
    key = OTHER_THERAPY  # Andre receives Casgevy: a module with a table and many sources
    pages = [f"/learn/{key}/{section_id}" for section_id in sections(key)]
    pages += [f"/learn/{key}/check", "/learn"]
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        parser = _Resources()
        parser.feed(response.text)
        assert parser.urls, path  # the stylesheet at least
        for url in parser.urls:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc and url.startswith("/"), (path, url)
        # Without JavaScript every step is a plain link or form.
        if "/check" not in path and path != "/learn":
            assert re.search(r'<form method="post" action="/learn/[^"]+"', response.text)


def test_printing_hides_navigation_and_buttons() -> None:
    css = (Path(__file__).parents[3] / "static/css/site.css").read_text(encoding="utf-8")
    printed = " ".join(re.findall(r"@media print \{(.*?)\n\}", css, flags=re.S))
    for selector in (".site-header nav", ".no-print", ".learn-steps", ".learn-check button"):
        assert selector in printed, selector


# --- the home page ----------------------------------------------------------------------------


def test_home_links_to_learning_and_summarises_what_is_started(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    token = login_as(PATIENT_MD)
    home = client.get("/home")
    assert 'href="/learn"' in home.text and 'hx-get="/learn?view=summary"' in home.text
    read_next(client, token, CORE, sections(CORE)[0], htmx=False)

    summary = client.get("/learn?view=summary", headers=HTMX)
    assert summary.status_code == 200 and "<html" not in summary.text
    text = page_text(summary)
    assert title(CORE) in text and f"Section 2 of {len(sections(CORE))}" in text
    assert title("warning-signs") not in text  # offered, but not started nor assigned
    # Without htmx the address is simply the list.
    assert "<html" in client.get("/learn?view=summary").text


def test_staff_and_a_caregiver_without_a_patient_are_offered_nothing(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    with transaction(db.factory) as session:
        rosa = user_by_login(session, CAREGIVER_CO)
        assert offered_modules(session, user=rosa, clock=clock, language="en")
        coordinator = user_by_login(session, COORDINATOR_MD)
        assert offered_modules(session, user=coordinator, clock=clock, language="en") == []
        for link in session.scalars(
            select(CaregiverLink).where(CaregiverLink.caregiver_id == rosa.caregiver_id)
        ):
            session.delete(link)
        session.flush()
        assert offered_modules(session, user=rosa, clock=clock, language="en") == []
    login_as(CAREGIVER_CO)
    assert client.get(f"/learn/{CORE}").status_code == 404
    assert client.get("/learn").status_code == 200


# --- helpers ----------------------------------------------------------------------------------


def _card(listing: str, key: str) -> str:
    """The list's card of one module (its text up to the next card)."""
    start = listing.index(f'id="module-{key}"')
    end = listing.find('class="card learn-card"', start)
    return listing[start : end if end >= 0 else len(listing)]


def _complete_by_pages(client: TestClient, token: str, key: str) -> None:
    for section_id in sections(key):
        assert read_next(client, token, key, section_id, htmx=False).status_code == 303
    page = client.get(f"/learn/{key}/check")
    done = client.post(
        f"/learn/{key}/check",
        data={
            "csrf_token": token,
            "check_state": _check_state(page),
            **_answers(key),
            "check": "all",
        },
    )
    assert done.status_code == 303, done.text


def test_a_caregiver_with_the_right_sees_the_patients_learning_and_without_it_does_not(
    db: Database, new_browser: Browser
) -> None:
    maya, maya_token = new_browser(PATIENT_MD)
    _complete_by_pages(maya, maya_token, CORE)
    with db.factory() as session:
        maya_user = user_by_login(session, PATIENT_MD)
        denise_user = user_by_login(session, CAREGIVER_MD)
        patient_id = maya_user.patient_id
        link = session.scalars(
            select(CaregiverLink).where(
                CaregiverLink.caregiver_id == denise_user.caregiver_id,
                CaregiverLink.patient_id == patient_id,
            )
        ).one()
        link_id = link.id

    def set_right(allowed: bool) -> None:
        with transaction(db.factory) as session:
            row = session.get(CaregiverLink, link_id)
            assert row is not None
            row.can_view_education = allowed

    set_right(True)
    denise, _ = new_browser(CAREGIVER_MD)
    home = page_text(denise.get("/home"))
    assert f"/care/{patient_id}/learning" in denise.get("/home").text, home
    seen = page_text(denise.get(f"/care/{patient_id}/learning"))
    assert title(CORE) in seen and "Completed on" in seen
    # Denise's own reading list does not show Maya's completion as hers.
    own = _card(page_text(denise.get("/learn")), CORE)
    assert "Completed" not in own

    set_right(False)
    assert denise.get(f"/care/{patient_id}/learning").status_code == 404
    assert f"/care/{patient_id}/learning" not in denise.get("/home").text
