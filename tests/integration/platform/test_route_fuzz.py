"""No input makes a page fail: every route of the app, every path, query and form
parameter, with odd values, answers something other than a 5xx.

The routes and their parameters are read from the app's route table (and the few forms a
route reads by hand are listed in RAW_FORM_FIELDS), so a new route or field is fuzzed
without anyone adding it here. Each route is called by a person who may use it (its
guard, as the permission matrix reads it), with the rest of the request as a browser of
that person would send it: their patient, one of that patient's visits, a report, a
caregiver link, the Maryland state... Then each parameter in turn takes odd values: the
classics that broke routes before ("²" passes `str.isdigit()` and `int()` refuses it, "٣"
is a digit `int()` reads, a number past SQLite's integers, negative, empty, very long,
NUL, other scripts, "%"), and more drawn by hypothesis (derandomized, bounded: the same
values on every run, in well under a minute on SQLite).

The classic values run on both databases, each with what it refuses: SQLite overflows on
huge integers; PostgreSQL cannot store NUL and its integers end at 2**31-1. The drawn
values run on SQLite only: what they break is reading the input, the same on both, and
PostgreSQL would only double the time."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fastapi.routing
import httpx
import pytest
from annotated_types import MaxLen
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from sqlalchemy import select

from coordination.followup.models import PatientReport, ReportKind, ReportStatus, Visit
from coordination.followup.outcomes import MEASURES
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import sync_schedule
from coordination.questionnaires.models import Questionnaire
from coordination.questionnaires.responses import start_response
from coordination.texting.gateway import ConsoleGateway
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.identity.access import ROLE_PERMISSIONS
from core.identity.models import Role, User
from core.models import CaregiverLink, Patient, State, TreatmentCenter
from core.settings import Settings
from education.content import shipped_modules
from portal.app import create_app
from reporting.agreements import shipped_agreements
from reporting.outcomes import AsOf
from reporting.snapshots import take_snapshots
from tests.conftest import (
    ADMIN,
    ANALYST,
    CAREGIVER_MD,
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_MD,
    Browser,
    Database,
    csrf_token,
    make_settings,
    user_by_login,
)
from tests.integration.identity.test_permissions import MODULE_KEY, PUBLIC, Guard, api_routes

ON_SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
# The classic values run on both: PostgreSQL refuses what SQLite takes (NUL, big integers).
ON_BOTH = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)

# What broke routes before: "²" passes `str.isdigit()` and `int()` refuses it; a number
# past any database integer overflows SQLite. On PostgreSQL: NUL, which it cannot store,
# and one past its integer. Every parameter gets each, every request.
CLASSIC_ODD_VALUES = {
    "sqlite": ("²", "99999999999999999999"),
    "postgresql": ("\x00", "2147483648"),
}
# More odd text, drawn by hypothesis for one parameter at a time: other scripts' digits
# ("٣" is a digit `int()` reads), signs, spaces, controls, NUL, "%", long runs.
# Routes that read (part of) their form by hand: the fields the route table cannot show.
RAW_FORM_FIELDS: dict[str, tuple[str, ...]] = {
    "visit_outcomes": ("completed_on", *(measure.key for measure in MEASURES)),
    # The knowledge check's answers, filled in by the world (one field per question).
    "learn_check_answer": ("check", "check_state"),
}
# Routes the fuzzer leaves alone: logging out would end the session the rest relies on;
# Twilio's webhooks refuse anything unsigned (test_sms_webhooks fuzzes their fields).
SKIPPED = frozenset({"logout", "sms_inbound", "sms_status"})
# For a form's other fields, what the page would send, so that the route reaches the code
# that reads the fuzzed field (a bulk assignment reads its coordinator only when assigning).
CONTEXT: dict[str, dict[str, str]] = {
    "worklist_bulk": {"action": "assign"},
    "patient_texts_consent": {"decision": "opt_in"},
    "patient_invite": {"delivery": "sms"},
    "admin_user_action": {"action": "disable"},
}


@dataclass(frozen=True)
class Param:
    where: str  # path, query, form
    name: str
    many: bool = False  # a list: the odd value goes in as one item
    max_length: int | None = None  # the field refuses longer text before the route reads it
    text: bool = True  # read as text by the route (False: FastAPI reads it as a number)

    def __repr__(self) -> str:
        return f"{self.where} {self.name}"

    def clip(self, value: str) -> str:
        return value[: self.max_length] if self.max_length is not None else value


def _param(where: str, name: str, info: FieldInfo) -> Param:
    annotation = str(info.annotation)
    lengths = [item.max_length for item in info.metadata if isinstance(item, MaxLen)]
    return Param(
        where,
        name,
        many="list" in annotation,
        max_length=min(lengths) if lengths else None,
        text="str" in annotation,
    )


@dataclass
class Target:
    name: str
    method: str
    path: str
    guard: Guard
    params: list[Param] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"{self.method} {self.path} [{self.name}]"


def _params(dependant: Dependant) -> list[Param]:
    found: dict[tuple[str, str], Param] = {}

    def walk(node: Dependant) -> None:
        for param in node.path_params:
            found[("path", param.name)] = Param("path", param.name, text=False)
        for param in node.query_params:
            found[("query", param.alias)] = _param("query", param.alias, param.field_info)
        for param in node.body_params:
            annotation = param.field_info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                for name, info in annotation.model_fields.items():
                    found[("form", name)] = _param("form", name, info)
            else:
                found[("form", param.alias)] = _param("form", param.alias, param.field_info)
        for child in node.dependencies:
            walk(child)

    walk(dependant)
    return list(found.values())


def targets(app: FastAPI) -> list[Target]:
    """Every (route, method) of the app with its parameters."""
    guards = {(spec.name, spec.path): spec.guard for spec in api_routes(app)}
    found = []
    for context in fastapi.routing.iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or context.name in SKIPPED:
            continue
        name, path = str(context.name), str(context.path)
        dependant = getattr(context, "dependant", None) or route.dependant
        params = _params(dependant)
        params += [Param("form", field) for field in RAW_FORM_FIELDS.get(name, ())]
        for method in sorted(context.methods or ()):
            found.append(
                Target(
                    name=name,
                    method=method,
                    path=path,
                    guard=guards[(name, path)],
                    params=list(params),
                )
            )
    return found


# --- the world and the people -----------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Good values for every path parameter, around Maya (Maryland)."""

    path: dict[str, str]
    answer_fields: tuple[str, ...]


def _world(db: Database, clock: FrozenClock) -> World:
    with transaction(db.factory) as session:
        maya_user = user_by_login(session, PATIENT_MD)
        maya = session.get(Patient, maya_user.patient_id)
        assert maya is not None
        sync_schedule(
            session,
            clock=clock,
            actor=Actor.system("test"),
            library=shipped_protocols(),
            patient=maya,
        )
        report = PatientReport(
            patient_id=maya.id,
            kind=ReportKind.PAIN_CRISIS,
            occurred_on=clock.now().date(),
            reported_by_user_id=maya_user.id,
            reported_at=clock.now(),
            status=ReportStatus.NEW,
        )
        session.add(report)
        session.flush()
        visit = session.scalar(select(Visit.id).where(Visit.patient_id == maya.id).limit(1))
        link = session.scalar(select(CaregiverLink.id).where(CaregiverLink.patient_id == maya.id))
        center = session.scalar(
            select(TreatmentCenter.id).where(TreatmentCenter.state_id == maya.state_id)
        )
        other = session.scalar(select(User.id).where(User.login == COORDINATOR_CO))
        module = shipped_modules().get(MODULE_KEY)
        assert visit and link and center and other and module is not None
        snapshots = take_snapshots(
            session,
            clock=clock,
            library=shipped_agreements(),
            as_of=AsOf(clock.now()),
            computed_by="test",
        )
        questionnaire = session.scalars(select(Questionnaire).order_by(Questionnaire.id)).first()
        assert questionnaire is not None
        response = start_response(
            session,
            clock=clock,
            actor=Actor.system("test"),
            patient=maya,
            questionnaire=questionnaire,
        )
        return World(
            path={
                "patient_id": str(maya.id),
                "visit_id": str(visit),
                "report_id": str(report.id),
                "link_id": str(link),
                "user_id": str(other),
                "state_id": str(session.scalar(select(State.id).where(State.id == maya.state_id))),
                "center_id": str(center),
                "module_key": MODULE_KEY,
                "section_id": module.section_ids[0],
                "token": "no-such-token-0123456789",
                # No such inbox item or FHIR client: the other parameters' odd values still
                # reach the route, which answers 404 (never a 5xx).
                "item_id": "1",
                "fhir_client_id": "1",
                # FHIR bulk export (every FHIR route answers 401 without a token anyway).
                "resource_type": "Patient",
                "resource_id": str(maya.id),
                "group_id": str(center),
                "job_id": "no-such-export-job",
                "file_name": "Patient-1.ndjson",
                # Reports: a shipped agreement and measure, a snapshot kept.
                "agreement_key": "casgevy-2025",
                "measure_key": "no-voc-stay-6-18",
                "snapshot_id": str(snapshots[0].id),
                # Questionnaires: Maya's draft response to the check-in, its first page.
                "questionnaire_id": str(questionnaire.id),
                "response_id": str(response.id),
                "number": "1",
            },
            answer_fields=tuple(f"q-{question.id}" for question in module.en.questions),
        )


# Who calls a guarded route: the first of these whose role the guard allows (a patient
# reads and answers for themself; staff pages go to the Maryland coordinator, admin pages
# to the admin).
CALLERS = (
    (PATIENT_MD, Role.PATIENT),
    (CAREGIVER_MD, Role.CAREGIVER),
    (COORDINATOR_MD, Role.COORDINATOR),
    (ADMIN, Role.ADMIN),
    (ANALYST, Role.STATE_ANALYST),
)


def caller_for(target: Target) -> str | None:
    """The login that calls `target` (None: anonymous)."""
    if target.name in PUBLIC or not target.guard.exists:
        return None
    if target.guard.login_only:
        return COORDINATOR_MD
    for login, role in CALLERS:
        if target.guard.readers_only and role not in (Role.PATIENT, Role.CAREGIVER):
            continue
        if target.guard.permissions <= ROLE_PERMISSIONS[role]:
            return login
    raise AssertionError(f"nobody may call {target.method} {target.path}")


@dataclass(repr=False)
class Fuzzer:
    world: World
    people: dict[str | None, Browser]
    targets: list[Target]
    failures: list[str] = field(default_factory=list)
    requests: int = 0

    def send(self, target: Target, odd: dict[Param, str]) -> None:
        """Call `target` as its caller would, with the parameters of `odd` set to odd
        values (the others as a browser of the caller sends them)."""
        browser = self.people[caller_for(target)]
        path_values = dict(self.world.path)
        query: dict[str, Any] = {}
        form: dict[str, Any] = dict(CONTEXT.get(target.name, {}))
        if target.name == "learn_check_answer":
            form |= dict.fromkeys(self.world.answer_fields, "0")
        for param, value in odd.items():
            item: Any = [value] if param.many else value
            if param.where == "path":
                if value == "":
                    return  # an empty path segment is another URL
                path_values[param.name] = value
            elif param.where == "query":
                query[param.name] = item
            else:
                form[param.name] = item
        url = target.path
        for name, good in path_values.items():
            # `{name}` or with a converter, `{name:int}`.
            url = re.sub(r"\{" + re.escape(name) + r"(:\w+)?\}", quote(good, safe=""), url)
        assert "{" not in url, f"no good value for a path parameter of {target.path}"
        self.requests += 1
        response: httpx.Response
        if target.method == "GET":
            response = browser.client.get(url, params=query)
        else:
            response = browser.client.post(
                url, params=query, data={"csrf_token": browser.token, **form}
            )
        if response.status_code >= 500:
            sent = ", ".join(f"{p.where} {p.name}={v[:30]!r}" for p, v in odd.items())
            self.failures.append(
                f"{target.method} {target.path} [{target.name}] {sent or 'as is'}: "
                f"{response.status_code} (as {caller_for(target) or 'anonymous'})"
            )


@pytest.fixture
def settings(db: Database) -> Settings:
    """Demo mode: its pages (answering as a demo patient) are fuzzed too."""
    return make_settings(db.url, demo_mode=True)


@pytest.fixture
def fuzzer(
    db: Database, app: FastAPI, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> Iterator[Fuzzer]:
    world = _world(db, clock)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as anonymous:
        people: dict[str | None, Browser] = {None: Browser(anonymous, csrf_token(anonymous))}
        for login, _role in CALLERS:
            people[login] = browsers(login)
        found = targets(app)
        for target in found:
            if target.name == "learn_check_answer":  # one answer field per question
                target.params += [Param("form", name) for name in world.answer_fields]
            # Routes that read their form themselves (a page's questions, an upload).
            if target.name == "questionnaire_page_save":
                target.params += [Param("form", f"q{number}") for number in range(11)]
                target.params += [Param("form", "q3-other")]
            if target.name == "questionnaire_start":
                target.params += [Param("form", "questionnaire_id")]
            if target.name == "admin_questionnaire_status":
                target.params += [Param("form", "status")]
        yield Fuzzer(world=world, people=people, targets=found)


def test_the_fuzzer_sees_every_route_and_its_parameters(tmp_path: Path) -> None:
    """The walk over the route table must keep finding the routes and their fields (a
    walker that saw nothing would pass vacuously)."""
    app = create_app(
        make_settings(f"sqlite:///{tmp_path / 'unused.db'}", demo_mode=True),
        gateway=ConsoleGateway(),
        run_scheduler=False,
    )
    found = targets(app)
    assert len(found) >= 80
    names = {target.name for target in found}
    fields = {(target.name, param.name) for target in found for param in target.params}
    for expected in [
        ("worklist", "state"),
        ("worklist_bulk", "coordinator"),
        ("worklist_bulk", "patient"),
        ("patient_create", "state_id"),
        ("admin_user", "user_id"),
        ("admin_state_update", "texts_from_hour"),
        ("learn_check_answer", "check_state"),
        ("education_reach", "year"),
        ("demo_messages", "answered"),
    ]:
        assert expected in fields, expected
    assert {"login", "patient_record", "visit_outcomes", "admin_center"} <= names


@ON_BOTH
def test_no_route_answers_a_5xx_to_the_classic_odd_values(fuzzer: Fuzzer, backend: str) -> None:
    """Each odd value in every text field of a route at once (clipped to what the field
    takes: longer text is refused before the route reads it), and in each other parameter
    (an id in the path, a number FastAPI reads) alone, since it would mask the rest."""
    started = time.monotonic()
    for target in fuzzer.targets:
        together = [
            p for p in target.params if p.text and p.name not in CONTEXT.get(target.name, {})
        ]
        alone = [p for p in target.params if p not in together]
        for value in CLASSIC_ODD_VALUES[backend]:
            if together:
                fuzzer.send(target, {param: param.clip(value) for param in together})
            for param in alone:
                fuzzer.send(target, {param: value})
    assert not fuzzer.failures, "\n".join(fuzzer.failures)
    assert fuzzer.requests > 200
    assert time.monotonic() - started < 60


ODD_TEXT = st.one_of(
    st.text(
        alphabet=st.characters(
            categories=["Nd", "No", "Nl", "Zs", "Cc", "Sm", "Po", "So"],
            exclude_characters="\r",
        ),
        max_size=12,
    ),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.from_regex(r"\A[0-9]{9,25}\Z"),
    st.sampled_from(["", "0", "-1", "٣", "𝟙", "%", "%00", "\x00", "1_0", " 7", "x" * 5000]),
)


@ON_SQLITE
@examples(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_route_answers_a_5xx_to_odd_text(fuzzer: Fuzzer, data: st.DataObject) -> None:
    target = data.draw(st.sampled_from([t for t in fuzzer.targets if t.params]), label="route")
    param = data.draw(st.sampled_from(target.params), label="parameter")
    value = data.draw(ODD_TEXT, label="value")
    fuzzer.failures.clear()  # each example stands alone (hypothesis replays them)
    fuzzer.send(target, {param: value})
    assert not fuzzer.failures, "\n".join(fuzzer.failures)
