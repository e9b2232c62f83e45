"""The permission matrix, generated from the routes themselves.

Every route either is in PUBLIC or declares a guard (`require`, `require_patient`,
`require_login_session`). For each guarded route, each kind of person and each target
patient, a small oracle written here (from ROLE_PERMISSIONS and the scope rules, not from
`may_access_patient`) says what the person should see, and one pass over the running
application checks it. A new route without a guard fails `test_every_route_is_guarded`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fastapi.routing
import httpx
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import PatientReport, ReportKind, ReportStatus, Visit
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import sync_schedule
from coordination.questionnaires.models import Questionnaire, QuestionnaireResponse
from coordination.questionnaires.responses import start_response
from coordination.texting.gateway import ConsoleGateway
from coordination.texting.models import InboundMessage, InboxItem
from core.audit.models import AuditEvent, AuditOutcome
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.identity.access import ROLE_PERMISSIONS, Permission
from core.identity.models import Role, User
from core.models import CaregiverLink, Patient, ProxyRight, State, TreatmentCenter
from education.content import shipped_modules
from fhir_adapter.clients import ClientInput, register_client
from fhir_adapter.models import FhirClient
from portal.app import create_app
from portal.dev.demo import DEMO_PASSWORD
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
    T0,
    Database,
    csrf_token,
    log_in,
    make_settings,
    user_by_login,
)

# Routes anybody may call. Everything else must declare a guard.
PUBLIC = frozenset(
    {
        "login",
        "login_submit",
        "root",
        "invitation",
        "invitation_submit",
        "forgot_password",
        "forgot_password_submit",
        "reset_password",
        "language",
        "logout",
        "healthz",
        "readyz",
        "demo_messages",
        "demo_answer",  # demo mode only (404 otherwise): answering as a fictional patient
        "calendar_feed",  # a calendar app's fetch: the secret token in the URL is the key
        "sms_inbound",  # Twilio's webhooks: the X-Twilio-Signature is the key
        "sms_status",
        "fhir_token",  # SMART backend services: the signed client assertion is the key
        "smart_configuration",  # SMART discovery documents
        "fhir_smart_configuration",
        "fhir_metadata",  # FHIR: the CapabilityStatement is public
    }
)
# Logged-in routes that answer 403 by design outside demo mode (the matrix runs without it).
DEMO_ONLY = frozenset({"mfa_skip"})
# Routes that need a query to name what they show (without one: 404, nothing named).
QUERIES = {
    "reports_program_csv": "table=retention",
    "reports_program_patients": "table=retention",
    "reports_support_csv": "table=requests",
}
# Routes open to a permission that refuse, in words (403), those without a second one: the
# patients behind a program figure are for staff who may see patients' records.
REFUSED_IN_WORDS = {"reports_program_patients": Permission.RECORD_VIEW}
MISSING_ID = 999_999
# An education module offered to the seeded patient and caregiver (core, every therapy).
MODULE_KEY = "what-is-gene-therapy"
_PATH_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


# --- reading the routes' declarations --------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """What a route's dependencies demand: permissions, one of them patient-scoped, or
    only a login (the second-factor pages)."""

    permissions: frozenset[Permission] = frozenset()
    scoped_permission: Permission | None = None
    login_only: bool = False
    readers_only: bool = False  # EDUCATION_VIEW pages that only patients and caregivers read
    fhir_bearer: bool = False  # the FHIR API: a treatment center's access token, no login

    @property
    def exists(self) -> bool:
        return bool(self.permissions) or self.login_only or self.fhir_bearer

    def describe(self) -> str:
        if self.fhir_bearer:
            return "FHIR bearer token"
        if self.scoped_permission is not None:
            return f"patient-scoped {self.scoped_permission.value}"
        if self.permissions:
            return " + ".join(sorted(permission.value for permission in self.permissions))
        return "login only" if self.login_only else "none"


@dataclass(frozen=True)
class RouteSpec:
    name: str
    path: str
    methods: frozenset[str]
    guard: Guard

    def label(self, method: str) -> str:
        return f"{method} {self.path} [{self.name}]"


def _find_guard(dependant: Dependant) -> Guard:
    permissions: set[Permission] = set()
    scoped: Permission | None = None
    login_only = readers_only = fhir_bearer = False

    def walk(node: Dependant) -> None:
        nonlocal scoped, login_only, readers_only, fhir_bearer
        call = node.call
        if call is not None:
            permission = getattr(call, "permission", None)
            if isinstance(permission, Permission):
                permissions.add(permission)
                if getattr(call, "patient_scoped", False) is True:
                    scoped = permission
            if getattr(call, "login_only", False) is True:
                login_only = True
            if getattr(call, "readers_only", False) is True:
                readers_only = True
            if getattr(call, "fhir_bearer", False) is True:
                fhir_bearer = True
        for child in node.dependencies:
            walk(child)

    walk(dependant)
    return Guard(frozenset(permissions), scoped, login_only, readers_only, fhir_bearer)


def _route_entries(app: FastAPI) -> Iterator[tuple[Any, APIRoute]]:
    """(route or route context, the APIRoute behind it) for every path operation.

    FastAPI 0.137 keeps included routers as nodes in `app.routes`; its public
    `iter_route_contexts` flattens them (older versions copied the routes in)."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route, route
        return
    for context in iterate(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context, context.original_route


def api_routes(app: FastAPI) -> list[RouteSpec]:
    """Every API route of the app (the /static mount is not one) with its guard."""
    specs = []
    for entry, route in _route_entries(app):
        dependant = getattr(entry, "dependant", None) or route.dependant
        specs.append(
            RouteSpec(
                name=str(entry.name),
                path=str(entry.path),
                methods=frozenset(entry.methods or ()),
                guard=_find_guard(dependant),
            )
        )
    return specs


def _route_only_app(tmp_path: Path) -> FastAPI:
    """An app to read routes from; it never touches its database."""
    return create_app(
        make_settings(f"sqlite:///{tmp_path / 'unused.db'}"),
        clock=FrozenClock(T0),
        gateway=ConsoleGateway(),
        run_scheduler=False,
    )


def test_every_route_is_guarded(tmp_path: Path) -> None:
    routes = api_routes(_route_only_app(tmp_path))
    names = {route.name for route in routes}
    # The walker must keep seeing the routes and the guards (a FastAPI change once hid
    # every included route from `app.routes`; a blind walker would pass vacuously).
    assert len(routes) >= 30, sorted(names)
    assert any(route.guard.scoped_permission for route in routes)
    assert any(route.guard.login_only for route in routes)

    unguarded = [
        f"{sorted(route.methods)} {route.path} [{route.name}]"
        for route in routes
        if route.name not in PUBLIC and not route.guard.exists
    ]
    assert not unguarded, (
        "These routes have no permission guard. Add require(...)/require_patient(...) "
        "or, if they really are public, add them to PUBLIC:\n  " + "\n  ".join(unguarded)
    )
    guarded_public = [route.name for route in routes if route.name in PUBLIC and route.guard.exists]
    assert not guarded_public, f"listed as PUBLIC but guarded: {guarded_public}"
    assert names >= PUBLIC, f"PUBLIC names no route any more: {sorted(PUBLIC - names)}"
    assert names >= DEMO_ONLY


# --- the world as the oracle sees it ---------------------------------------------------


@dataclass(frozen=True)
class Persona:
    key: str
    login: str | None
    second_factor_passed: bool = True


PERSONAS = (
    Persona("anonymous", None),
    Persona("patient", PATIENT_MD),
    Persona("caregiver", CAREGIVER_MD),
    Persona("coordinator", COORDINATOR_MD),
    Persona("state_analyst", ANALYST),
    Persona("admin", ADMIN),
    # Password accepted, authenticator code not typed yet.
    Persona("coordinator_before_second_factor", COORDINATOR_CO, second_factor_passed=False),
)


@dataclass(frozen=True)
class Person:
    """What the oracle needs to know about a logged-in user."""

    role: Role
    patient_id: int | None
    caregiver_id: int | None
    state_ids: frozenset[int]
    center_id: int | None


@dataclass(frozen=True)
class Target:
    """A patient to put in the path, and why they were picked."""

    label: str
    patient_id: int
    state_id: int | None = None
    center_id: int | None = None
    link_id: int = MISSING_ID
    visit_id: int = MISSING_ID
    report_id: int = MISSING_ID
    inbox_item_id: int = MISSING_ID
    response_id: int = MISSING_ID


@dataclass
class World:
    people: dict[str, Person]
    targets: list[Target]
    # (caregiver_id, patient_id) -> the rights of that link
    links: dict[tuple[int, int], frozenset[ProxyRight]] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> World:
        people: dict[str, Person] = {}
        for persona in PERSONAS:
            if persona.login is None:
                continue
            user = user_by_login(session, persona.login)
            people[persona.key] = Person(
                role=user.role,
                patient_id=user.patient_id,
                caregiver_id=user.caregiver_id,
                state_ids=frozenset(user.state_ids),
                center_id=user.center_id,
            )
        links = _links(session)
        first_link: dict[int, int] = {}
        for link in session.scalars(select(CaregiverLink).order_by(CaregiverLink.id)):
            first_link.setdefault(link.patient_id, link.id)
        first_visit: dict[int, int] = {}
        for visit in session.scalars(select(Visit).order_by(Visit.id)):
            first_visit.setdefault(visit.patient_id, visit.id)
        first_report: dict[int, int] = {}
        for report in session.scalars(select(PatientReport).order_by(PatientReport.id)):
            first_report.setdefault(report.patient_id, report.id)
        first_inbox_item: dict[int, int] = {}
        for item in session.scalars(select(InboxItem).order_by(InboxItem.id)):
            first_inbox_item.setdefault(item.patient_id, item.id)
        first_response: dict[int, int] = {}
        for response in session.scalars(
            select(QuestionnaireResponse).order_by(QuestionnaireResponse.id)
        ):
            first_response.setdefault(response.patient_id, response.id)
        caregiver = people["caregiver"]
        patient_md = session.get(Patient, people["patient"].patient_id)
        assert patient_md is not None
        partial = [
            patient_id
            for (caregiver_id, patient_id), rights in links.items()
            if caregiver_id == caregiver.caregiver_id and ProxyRight.VIEW_EDUCATION not in rights
        ]
        assert partial, "the seeded caregiver should have a link with fewer rights"
        other_state = session.scalar(
            select(Patient)
            .where(Patient.state_id != patient_md.state_id)
            .order_by(Patient.id)
            .limit(1)
        )
        assert other_state is not None
        picked = [
            ("the patient's own record (caregiver: full rights; MD)", patient_md),
            (
                "a patient the caregiver helps with fewer rights (MD)",
                session.get(Patient, partial[0]),
            ),
            ("a patient in another state, unlinked to the caregiver (CO)", other_state),
        ]
        targets = []
        for label, patient in picked:
            assert patient is not None
            targets.append(
                Target(
                    label=f"patient {patient.id}: {label}",
                    patient_id=patient.id,
                    state_id=patient.state_id,
                    center_id=patient.center_id,
                    link_id=first_link.get(patient.id, MISSING_ID),
                    visit_id=first_visit.get(patient.id, MISSING_ID),
                    report_id=first_report.get(patient.id, MISSING_ID),
                    inbox_item_id=first_inbox_item.get(patient.id, MISSING_ID),
                    response_id=first_response.get(patient.id, MISSING_ID),
                )
            )
        targets.append(Target(label="a patient id that does not exist", patient_id=MISSING_ID))
        ids = {
            "state_id": _first_id(session, State.id),
            "center_id": _first_id(session, TreatmentCenter.id),
            "user_id": user_by_login(session, ANALYST).id,
            "fhir_client_id": _first_id(session, FhirClient.id),
            "questionnaire_id": _first_id(session, Questionnaire.id),
            # FHIR routes: an id (every portal login gets 401 there anyway).
            "resource_id": 1,
        }
        return cls(people=people, targets=targets, links=links, ids=ids)


def _links(session: Session) -> dict[tuple[int, int], frozenset[ProxyRight]]:
    return {
        (link.caregiver_id, link.patient_id): frozenset(link.rights())
        for link in session.scalars(select(CaregiverLink))
    }


def _first_id(session: Session, column: Any) -> int:
    value = session.scalar(select(column).order_by(column).limit(1))
    assert isinstance(value, int)
    return value


# --- the oracle ------------------------------------------------------------------------


class Outcome(enum.Enum):
    LOGIN = "a redirect to /login"
    SECOND_FACTOR = "a redirect to the second-factor step (/login/mfa)"
    FORBIDDEN = "403 (role lacks the permission)"
    NOT_FOUND = "404 (patient out of scope or missing)"
    NO_BEARER = "401 (the FHIR API takes a center's access token, never a login cookie)"
    ALLOWED = "allowed (not 401/403/404/5xx, no redirect to a login step)"


# Which right a caregiver's link must hold for each patient-level permission.
CAREGIVER_NEEDS: dict[Permission, ProxyRight | None] = {
    Permission.PATIENT_READ: None,
    Permission.SCHEDULE_VIEW: ProxyRight.VIEW_SCHEDULE,
    # Confirming a visit or asking to move it comes with seeing the schedule.
    Permission.SCHEDULE_RESPOND: ProxyRight.MANAGE_VISITS,
    Permission.EDUCATION_VIEW: ProxyRight.VIEW_EDUCATION,
    Permission.EVENTS_REPORT: ProxyRight.REPORT_EVENTS,
    # A caregiver answers questionnaires for the patient with the right to.
    Permission.QUESTIONNAIRE_ANSWER: ProxyRight.ANSWER_QUESTIONNAIRES,
}


def in_scope(world: World, person: Person, permission: Permission, target: Target) -> bool:
    """The scope rules, written out independently of core.identity.access."""
    if target.state_id is None:  # no such patient
        return False
    if person.role is Role.PATIENT:
        return person.patient_id == target.patient_id
    if person.role is Role.CAREGIVER:
        assert person.caregiver_id is not None
        rights = world.links.get((person.caregiver_id, target.patient_id))
        if rights is None or permission not in CAREGIVER_NEEDS:
            return False
        needed = CAREGIVER_NEEDS[permission]
        return needed is None or needed in rights
    if person.role is Role.COORDINATOR:
        return target.state_id in person.state_ids and (
            person.center_id is None or person.center_id == target.center_id
        )
    return False


def expected_outcome(
    world: World, persona: Persona, route: RouteSpec, target: Target | None
) -> Outcome:
    guard = route.guard
    if guard.fhir_bearer:
        return Outcome.NO_BEARER
    if persona.login is None:
        return Outcome.LOGIN
    if guard.login_only and not guard.permissions:
        return Outcome.FORBIDDEN if route.name in DEMO_ONLY else Outcome.ALLOWED
    person = world.people[persona.key]
    if person.role.is_staff and not persona.second_factor_passed:
        return Outcome.SECOND_FACTOR
    if not guard.permissions <= ROLE_PERMISSIONS[person.role]:
        return Outcome.FORBIDDEN
    needed = REFUSED_IN_WORDS.get(route.name)
    if needed is not None and needed not in ROLE_PERMISSIONS[person.role]:
        return Outcome.FORBIDDEN
    if guard.readers_only and person.role not in (Role.PATIENT, Role.CAREGIVER):
        return Outcome.FORBIDDEN
    if guard.scoped_permission is not None:
        assert target is not None
        if not in_scope(world, person, guard.scoped_permission, target):
            return Outcome.NOT_FOUND
    return Outcome.ALLOWED


def _redirect_path(response: httpx.Response) -> str | None:
    location: str | None = None
    if response.status_code in (301, 302, 303, 307, 308):
        location = str(response.headers.get("location", ""))
    elif response.status_code == 204 and "HX-Redirect" in response.headers:
        location = str(response.headers["HX-Redirect"])
    return urlsplit(location).path if location is not None else None


def problem_with(expected: Outcome, route: RouteSpec, response: httpx.Response) -> str | None:
    """None when the response is what `expected` means, else what was seen."""
    status, target = response.status_code, _redirect_path(response)
    seen = f"got {status}" + (f" -> {response.headers.get('location')}" if target else "")
    ok: bool
    if expected is Outcome.LOGIN:
        ok = target == "/login"
    elif expected is Outcome.SECOND_FACTOR:
        ok = target == "/login/mfa"
    elif expected is Outcome.FORBIDDEN:
        ok = status == 403
    elif expected is Outcome.NOT_FOUND:
        ok = status == 404
    elif expected is Outcome.NO_BEARER:
        ok = status == 401
    else:
        login_steps = (
            {"/login"} if route.guard.login_only else {"/login", "/login/mfa", "/account/mfa"}
        )
        ok = status not in (401, 403, 404) and status < 500 and target not in login_steps
    return None if ok else seen


# --- the matrix ------------------------------------------------------------------------


def _fill_path(route: RouteSpec, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"no test value for path parameter {name!r} of {route.name}"
        return values[name]

    return _PATH_PARAM.sub(value, route.path)


@dataclass
class Browser:
    persona: Persona
    client: TestClient
    token: str


def _open_browsers(stack: ExitStack, app: FastAPI, clock: FrozenClock) -> list[Browser]:
    browsers = []
    for persona in PERSONAS:
        client = stack.enter_context(
            TestClient(app, raise_server_exceptions=False, follow_redirects=False)
        )
        if persona.login is None:
            token = csrf_token(client)
        elif persona.second_factor_passed:
            token = log_in(client, persona.login, clock)
        else:
            token = csrf_token(client)
            response = client.post(
                "/login",
                data={"login": persona.login, "password": DEMO_PASSWORD, "csrf_token": token},
            )
            assert response.headers.get("location", "").startswith("/login/mfa"), response.text
            token = csrf_token(client, "/login/mfa")  # the login session's token
        browsers.append(Browser(persona, client, token))
    return browsers


def _give_everyone_a_schedule_and_a_report(db: Database, clock: FrozenClock) -> None:
    """Visits, reports and a text in the inbox to put in the routes' paths."""
    with transaction(db.factory) as session:
        for patient in session.scalars(select(Patient)):
            sync_schedule(
                session,
                clock=clock,
                actor=Actor.system("test"),
                library=shipped_protocols(),
                patient=patient,
            )
            reporter = session.scalar(select(User.id).where(User.role == Role.ADMIN))
            assert reporter is not None
            questionnaire = session.scalars(
                select(Questionnaire).order_by(Questionnaire.id)
            ).first()
            assert questionnaire is not None
            start_response(
                session,
                clock=clock,
                actor=Actor.system("test"),
                patient=patient,
                questionnaire=questionnaire,
            )
            session.add(
                PatientReport(
                    patient_id=patient.id,
                    kind=ReportKind.PAIN_CRISIS,
                    occurred_on=clock.now().date(),
                    reported_by_user_id=reporter,
                    reported_at=clock.now(),
                    status=ReportStatus.NEW,
                )
            )
            message = InboundMessage(
                message_sid=f"SMperm{patient.id}",
                from_phone=patient.mobile_phone or "+14105550197",
                to_phone="+14105550100",
                body="A question for the care team.",
                received_at=clock.now(),
                intent="other",
                patient_id=patient.id,
            )
            session.add(message)
            session.flush()
            session.add(
                InboxItem(
                    inbound_message_id=message.id,
                    patient_id=patient.id,
                    received_at=clock.now(),
                )
            )


def _take_the_outcome_snapshots(db: Database, clock: FrozenClock) -> int:
    """Snapshots of the outcome figures, for the snapshot pages' paths: the first's id."""
    with transaction(db.factory) as session:
        taken = take_snapshots(
            session,
            clock=clock,
            library=shipped_agreements(),
            as_of=AsOf(clock.now()),
            computed_by="test",
        )
        return taken[0].id


def _register_a_fhir_client(db: Database, clock: FrozenClock) -> None:
    """A client for the FHIR client admin pages' paths."""
    with transaction(db.factory) as session:
        center_id = _first_id(session, TreatmentCenter.id)
        register_client(
            session,
            clock=clock,
            actor=Actor.system("test"),
            data=ClientInput(
                name="Matrix test system",
                center_id=str(center_id),
                jwks_url="https://keys.example.org/jwks.json",
                scopes=["system/Patient.rs"],
            ),
            allow_http_loopback=False,
        )


def test_permission_matrix(db: Database, app: FastAPI, clock: FrozenClock) -> None:
    routes = [route for route in api_routes(app) if route.guard.exists]
    _give_everyone_a_schedule_and_a_report(db, clock)
    _register_a_fhir_client(db, clock)
    snapshot_id = _take_the_outcome_snapshots(db, clock)
    with db.factory() as session:
        world = World.load(session)
    failures: list[str] = []
    checked = 0
    seen_outcomes: set[Outcome] = set()
    with ExitStack() as stack:
        browsers = _open_browsers(stack, app, clock)
        for route in sorted(routes, key=lambda spec: (spec.path, sorted(spec.methods))):
            for method in sorted(route.methods):
                for browser in browsers:
                    targets: list[Target | None] = (
                        list(world.targets) if route.guard.scoped_permission else [None]
                    )
                    for target in targets:
                        values = {
                            "token": "x",
                            "resource_type": "Patient",
                            # FHIR bulk export: the Group is a center, the rest is unknown.
                            "group_id": "1",
                            "job_id": "no-such-export-job",
                            "file_name": "Patient-1.ndjson",
                            # Reports: a shipped agreement and measure, a snapshot kept.
                            "agreement_key": "casgevy-2025",
                            "measure_key": "no-voc-stay-6-18",
                            "snapshot_id": str(snapshot_id),
                            **{k: str(v) for k, v in world.ids.items()},
                        }
                        chosen = target or world.targets[0]
                        values["patient_id"] = str(chosen.patient_id)
                        values["link_id"] = str(chosen.link_id)
                        values["visit_id"] = str(chosen.visit_id)
                        values["report_id"] = str(chosen.report_id)
                        values["item_id"] = str(chosen.inbox_item_id)
                        values["response_id"] = str(chosen.response_id)
                        values["number"] = "1"
                        values["module_key"] = MODULE_KEY
                        values["section_id"] = shipped_modules().modules[MODULE_KEY].section_ids[0]
                        url = _fill_path(route, values)
                        if route.name in QUERIES:
                            url = f"{url}?{QUERIES[route.name]}"
                        expected = expected_outcome(world, browser.persona, route, target)
                        seen_outcomes.add(expected)
                        if method == "GET":
                            response = browser.client.get(url)
                        else:
                            response = browser.client.request(
                                method, url, data={"csrf_token": browser.token}
                            )
                            # A POST may change a caregiver's rights: the oracle looks again.
                            with db.factory() as session:
                                world.links = _links(session)
                        checked += 1
                        problem = problem_with(expected, route, response)
                        if problem is not None:
                            failures.append(
                                f"{route.label(method)} ({route.guard.describe()}) as "
                                f"{browser.persona.key}"
                                + (f", {target.label}" if target else "")
                                + f": expected {expected.value}, {problem}"
                            )
    assert checked > 250, checked
    # FHIR routes arrive with the FHIR API; until then no route expects a bearer token.
    outcomes = set(Outcome) - (
        set() if any(route.guard.fhir_bearer for route in routes) else {Outcome.NO_BEARER}
    )
    assert seen_outcomes == outcomes, f"the matrix never expects {outcomes - seen_outcomes}"
    assert not failures, f"{len(failures)} of {checked} checks failed:\n" + "\n".join(failures)


# --- scope in lists and the audit trail of reads ----------------------------------------


def _results_block(html: str) -> str:
    start = html.find('<div id="results">')
    assert start >= 0, "no results block on the page"
    return html[start:]


def _patients_of_state(session: Session, code: str) -> list[Patient]:
    return list(
        session.scalars(select(Patient).join(State).where(State.code == code).order_by(Patient.id))
    )


def test_coordinator_search_never_shows_another_states_patients(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    token = login_as(COORDINATOR_MD)
    with db.factory() as session:
        maryland = _patients_of_state(session, "MD")
        colorado = _patients_of_state(session, "CO")
        co_state = session.scalar(select(State).where(State.code == "CO"))
        co_center = session.scalar(
            select(TreatmentCenter).join(State).where(State.code == "CO").limit(1)
        )
        assert co_state is not None and co_center is not None
        hidden = [f"{p.family_name}, {p.given_name}" for p in colorado]
        hidden += [p.medicaid_id for p in colorado]
        shown = [f"{p.family_name}, {p.given_name}" for p in maryland]
        andre = colorado[0]

    everything = client.post("/patients/search", data={"csrf_token": token, "q": ""})
    assert everything.status_code == 200
    assert f"{len(maryland)} patients" in everything.text
    for name in shown:
        assert name in everything.text
    searches: list[dict[str, str]] = [
        {"q": ""},
        {"q": "", "state": str(co_state.id)},
        {"q": "", "center": str(co_center.id)},
        {"q": "", "status": "lost_to_follow_up"},  # only Colorado has such patients
        {"q": andre.given_name},
        {"q": andre.medicaid_id},
        {"q": "CO"},  # the prefix of every Colorado Medicaid ID
        {"q": "", "state": str(co_state.id), "center": str(co_center.id), "page": "2"},
    ]
    for form in searches:
        response = client.post("/patients/search", data={"csrf_token": token, **form})
        assert response.status_code == 200, form
        results = _results_block(response.text)  # the search box echoes the query itself
        leaked = [value for value in hidden if value in results]
        assert not leaked, f"search {form} showed Colorado patients: {leaked}"
    filtered = client.get(f"/patients?state={co_state.id}&center={co_center.id}")
    assert filtered.status_code == 200
    assert "0 patients" in filtered.text
    assert not [value for value in hidden if value in filtered.text]


def test_staff_reading_a_record_is_audited(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    login_as(COORDINATOR_MD)
    with db.factory() as session:
        coordinator = user_by_login(session, COORDINATOR_MD)
        maya = _patients_of_state(session, "MD")[0]
        andre = _patients_of_state(session, "CO")[0]
        coordinator_id, maya_id, andre_id = coordinator.id, maya.id, andre.id

    response = client.get(f"/patients/{maya_id}")
    assert response.status_code == 200
    assert f"{maya.given_name} {maya.family_name}" in response.text
    assert client.get(f"/patients/{andre_id}").status_code == 404

    with db.factory() as session:
        reads = list(session.scalars(select(AuditEvent).where(AuditEvent.action == "patient.read")))
    assert [event.patient_id for event in reads] == [maya_id]
    event = reads[0]
    assert event.actor_user_id == coordinator_id
    assert event.actor_label == COORDINATOR_MD
    assert event.actor_role == "coordinator"
    assert event.ip == "testclient"
    assert event.target == "patient_record"
    assert event.at is not None


def _asked(method: str, permission: Permission) -> dict[str, str]:
    return {"method": method, "permission": permission.value}


def test_asking_for_a_record_outside_ones_scope_is_audited_as_denied(
    db: Database, app: FastAPI, clock: FrozenClock
) -> None:
    with db.factory() as session:
        coordinator_id = user_by_login(session, COORDINATOR_MD).id
        caregiver_id = user_by_login(session, CAREGIVER_MD).id
        andre = _patients_of_state(session, "CO")[0]
        andre_id = andre.id
        nobody_id = andre_id + 10_000  # no patient has this id
        assert session.get(Patient, nobody_id) is None

    with ExitStack() as stack:
        coordinator, caregiver = (
            stack.enter_context(
                TestClient(app, raise_server_exceptions=False, follow_redirects=False)
            )
            for _ in range(2)
        )
        token = log_in(coordinator, COORDINATOR_MD, clock)
        log_in(caregiver, CAREGIVER_MD, clock)
        answers = [
            coordinator.get(f"/patients/{andre_id}"),
            coordinator.post(
                f"/patients/{andre_id}/notes", data={"csrf_token": token, "text": "hello"}
            ),
            coordinator.get(f"/patients/{nobody_id}"),
            caregiver.get(f"/care/{andre_id}/schedule"),
        ]
    # The person sees the same "not found" whether the record is out of scope or missing.
    for answer in answers:
        assert answer.status_code == 404
        assert "This page does not exist, or it is not yours to see." in answer.text

    with db.factory() as session:
        denied = list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.outcome == AuditOutcome.DENIED)
                .order_by(AuditEvent.id)
            )
        )
        assert [
            (event.actor_user_id, event.patient_id, event.target, event.detail) for event in denied
        ] == [
            (coordinator_id, andre_id, "patient_record", _asked("GET", Permission.RECORD_VIEW)),
            (coordinator_id, andre_id, "patient_note", _asked("POST", Permission.NOTES_WRITE)),
            (caregiver_id, andre_id, "care_schedule", _asked("GET", Permission.SCHEDULE_VIEW)),
        ]
        assert {event.action for event in denied} == {"patient.access"}
        assert {event.ip for event in denied} == {"testclient"}
        # Nothing was read or written for Andre.
        assert not session.scalars(
            select(AuditEvent).where(
                AuditEvent.patient_id == andre_id, AuditEvent.outcome != AuditOutcome.DENIED
            )
        ).all()
