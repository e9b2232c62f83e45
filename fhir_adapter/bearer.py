"""Who is calling the FHIR API, what it may do, and the audit of what it did.

FHIR routes declare what they do with one dependency:

    from fhir_adapter.bearer import FhirAccess, require_fhir
    from fhir_adapter.scopes import Interaction

    @router.get("/fhir/Patient/{id}")
    def read_patient(
        id: str,
        session: SessionDep,
        access: Annotated[FhirAccess, require_fhir("Patient", Interaction.READ)],
    ) -> Response:
        patient = patient_for_caller(session, caller=access.caller, patient_id=...)
        if patient is None:
            raise FhirError.single(404, "not-found", "Patient/... is not known")
        access.record(patient_id=patient.id, resource_id=id)
        ...

`require_fhir` checks the bearer token (401 with `WWW-Authenticate: Bearer` otherwise),
then the scope (403 `forbidden` otherwise), both as OperationOutcomes; when the route
returns, it writes one audit event per resource the route `record`ed (or one for the
request), in the request's transaction, with the client as the actor. A client sees and
writes only its own center's patients: query patients through `own_patients` or
`patient_for_caller`, and give new records the caller's `center_id` and `state_id`.

Routes that need several scopes (a transaction Bundle) take `FhirCallerDep` and check each
entry with `caller.allows(...)`, raising `scope_denied(...)` before writing anything, and
audit with `record_fhir_event`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.params import Depends as DependsParam
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from core.audit.models import AuditOutcome
from core.audit.service import Actor, EventData, listed_targets, record_event, record_events
from core.clock import Clock
from core.db import transaction
from core.identity.passwords import token_digest
from core.models import Patient, TreatmentCenter
from core.web import ClockDep, SessionDep, request_context
from fhir_adapter.errors import FhirError, Issue
from fhir_adapter.models import FhirAccessToken, FhirClient
from fhir_adapter.scopes import Interaction, ScopeGrant

log = logging.getLogger("cgt_access.fhir.auth")

REALM = "cgt-access FHIR"
_T = TypeVar("_T")


@dataclass(frozen=True)
class FhirCaller:
    """A treatment center's system calling with a valid access token.

    `client_pk` is the `fhir_clients` row, `client_id` its OAuth client id, `center_id`
    and `state_id` the center it acts for (and only for), `grant` the scopes of the token,
    `actor` what the audit log records it as."""

    client_pk: int
    client_id: str
    center_id: int
    state_id: int
    grant: ScopeGrant
    actor: Actor
    token_expires_at: datetime

    def allows(self, resource_type: str, interaction: Interaction) -> bool:
        return self.grant.allows(resource_type, interaction)


@dataclass(frozen=True)
class Denial:
    """What the audit log should keep of a refused FHIR request: written in a transaction
    of its own, because the request's transaction is rolled back by the refusal."""

    actor: Actor
    action: str
    target: str | None
    reason: str


@dataclass
class AuditedFhirError(FhirError):
    """A FhirError whose refusal is audited (see `install_fhir_auth`)."""

    denial: Denial | None = None


def _quoted(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")


def _unauthorized(code: str, diagnostics: str, *, error: str | None) -> dict[str, Any]:
    challenge = f'Bearer realm="{REALM}"'
    if error is not None:  # RFC 6750: no error code when no token was sent at all
        challenge += f', error="{error}", error_description="{_quoted(diagnostics)}"'
    return {
        "status": 401,
        "issues": [Issue(code=code, diagnostics=diagnostics)],
        "headers": {"WWW-Authenticate": challenge},
    }


def authenticate_bearer(
    session: Session,
    *,
    clock: Clock,
    authorization: str | None,
    ip: str | None = None,
    user_agent: str | None = None,
) -> FhirCaller:
    """The caller behind an `Authorization: Bearer` header. Raises a 401 FhirError
    (OperationOutcome, `WWW-Authenticate: Bearer ...`) for a missing, unknown, expired or
    revoked token, or a disabled client."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuditedFhirError(
            **_unauthorized(
                "login",
                "This FHIR API needs an access token from the token endpoint "
                "(SMART Backend Services): send Authorization: Bearer <token>.",
                error=None,
            )
        )
    row = session.execute(
        select(FhirAccessToken, FhirClient, TreatmentCenter.state_id)
        .join(FhirClient, FhirClient.id == FhirAccessToken.client_pk)
        .join(TreatmentCenter, TreatmentCenter.id == FhirClient.center_id)
        .where(FhirAccessToken.token_hash == token_digest(token))
    ).first()
    if row is None:
        raise AuditedFhirError(
            **_unauthorized(
                "unknown",
                "The access token is not valid (unknown or revoked).",
                error="invalid_token",
            )
        )
    stored, client, state_id = row
    actor = Actor.fhir_client(client.client_id, ip, user_agent)
    now = clock.now()
    problem: tuple[str, str] | None = None
    if stored.expires_at <= now:
        problem = ("expired", "The access token has expired: get a new one.")
    elif not client.is_enabled:
        problem = ("unknown", "The client is disabled.")
    if problem is not None:
        raise AuditedFhirError(
            **_unauthorized(problem[0], problem[1], error="invalid_token"),
            denial=Denial(actor=actor, action="fhir.auth", target=None, reason=problem[1]),
        )
    return FhirCaller(
        client_pk=client.id,
        client_id=client.client_id,
        center_id=client.center_id,
        state_id=state_id,
        grant=ScopeGrant.from_text(stored.scopes),
        actor=actor,
        token_expires_at=stored.expires_at,
    )


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def fhir_caller(request: Request, session: SessionDep, clock: ClockDep) -> FhirCaller:
    """The dependency: the authenticated caller (no scope checked). See the module doc."""
    return authenticate_bearer(
        session,
        clock=clock,
        authorization=request.headers.get("authorization"),
        ip=_client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )


# Read by the permission-matrix test: the route is guarded by a bearer token.
fhir_caller.fhir_bearer = True  # type: ignore[attr-defined]

FhirCallerDep = Annotated[FhirCaller, Depends(fhir_caller)]


def scope_denied(caller: FhirCaller, resource_type: str, interaction: Interaction) -> FhirError:
    """The 403 to raise when `caller` lacks the scope for `interaction` on `resource_type`
    (audited, with the client, in a transaction of its own)."""
    needed = f"system/{resource_type}.{interaction.value}"
    diagnostics = (
        f"The access token does not allow {interaction.action} on {resource_type} "
        f"(needs {needed}; granted: {caller.grant.text or 'nothing'})."
    )
    return AuditedFhirError(
        status=403,
        issues=[Issue(code="forbidden", diagnostics=diagnostics)],
        headers={
            "WWW-Authenticate": (
                f'Bearer realm="{REALM}", error="insufficient_scope", scope="{needed}"'
            )
        },
        denial=Denial(
            actor=caller.actor,
            action=f"fhir.{interaction.action}",
            target=resource_type,
            reason=f"missing scope {needed}",
        ),
    )


def record_fhir_event(
    session: Session,
    *,
    clock: Clock,
    caller: FhirCaller,
    interaction: Interaction,
    resource_type: str,
    resource_id: str | None = None,
    patient_id: int | None = None,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
) -> None:
    """One FHIR read or write in the audit log: `fhir.<interaction>` by the client, on
    `ResourceType[/id]`, about the patient when there is one."""
    record_event(
        session,
        clock=clock,
        actor=caller.actor,
        action=f"fhir.{interaction.action}",
        outcome=outcome,
        patient_id=patient_id,
        target=f"{resource_type}/{resource_id}"[:120] if resource_id else resource_type,
    )


def record_fhir_events(
    session: Session,
    *,
    clock: Clock,
    caller: FhirCaller,
    written: Iterable[tuple[Interaction, str, str, int | None]],
) -> None:
    """The writes of one request (a transaction's or batch's entries: interaction, resource
    type, resource id, patient id) in the audit log: one `fhir.<interaction>` event per
    patient and interaction, naming every resource it touched (the `target` lists them as
    far as it holds, `detail["resources"]` holds them all). A Bundle about a thousand
    patients writes a thousand events, not ten thousand: each event is an indexed row,
    and they were a tenth of the time of a large transaction."""
    touched: dict[tuple[Interaction, int | None], list[str]] = {}
    for interaction, resource_type, resource_id, patient_id in written:
        touched.setdefault((interaction, patient_id), []).append(f"{resource_type}/{resource_id}")
    record_events(
        session,
        clock=clock,
        actor=caller.actor,
        events=(
            EventData(
                action=f"fhir.{interaction.action}",
                patient_id=patient_id,
                target=listed_targets(resources),
                detail={"resources": resources} if len(resources) > 1 else None,
            )
            for (interaction, patient_id), resources in touched.items()
        ),
    )


@dataclass
class FhirAccess:
    """What a FHIR route gets from `require_fhir`: the caller, and a list of what the
    request touched, audited when the route returns."""

    caller: FhirCaller
    resource_type: str
    interaction: Interaction
    touched: list[tuple[str, str | None, int | None]] = field(default_factory=list)

    def record(
        self,
        *,
        patient_id: int | None = None,
        resource_id: str | None = None,
        resource_type: str | None = None,
    ) -> None:
        """Note a resource the request read or wrote (and its patient): each becomes an
        audit event. A search notes every patient whose data it returns."""
        entry = (resource_type or self.resource_type, resource_id, patient_id)
        if entry not in self.touched:
            self.touched.append(entry)


def require_fhir(resource_type: str, interaction: Interaction) -> Any:
    """The dependency (an `Annotated` marker) for a FHIR route that does `interaction` on
    `resource_type`: `access: Annotated[FhirAccess, require_fhir("Observation",
    Interaction.CREATE)]`. 401 without a valid token, 403 without the scope; audits the
    request when the route returns (see `FhirAccess.record`)."""

    def check(session: SessionDep, clock: ClockDep, caller: FhirCallerDep) -> Iterator[FhirAccess]:
        if not caller.allows(resource_type, interaction):
            raise scope_denied(caller, resource_type, interaction)
        access = FhirAccess(caller=caller, resource_type=resource_type, interaction=interaction)
        yield access
        # Reached only when the route succeeded: the events commit with its work.
        for touched_type, resource_id, patient_id in access.touched or [
            (resource_type, None, None)
        ]:
            record_fhir_event(
                session,
                clock=clock,
                caller=caller,
                interaction=interaction,
                resource_type=touched_type,
                resource_id=resource_id,
                patient_id=patient_id,
            )

    check.fhir_bearer = True  # type: ignore[attr-defined]
    check.fhir_scope = (resource_type, interaction)  # type: ignore[attr-defined]
    # scope="function": the audit is written before the request's transaction commits.
    marker: DependsParam = Depends(check, scope="function")
    return marker


# --- a client sees and writes only its own center's patients ---------------------------


def own_patients(query: Select[_T], caller: FhirCaller) -> Select[_T]:
    """Restrict a query over patients (selecting or joining `Patient`) to the caller's
    center: every FHIR search and read goes through this or `patient_for_caller`."""
    return query.where(Patient.center_id == caller.center_id)


def patient_for_caller(session: Session, *, caller: FhirCaller, patient_id: int) -> Patient | None:
    """The patient if it belongs to the caller's center, else None: answer 404, as for a
    patient that does not exist, so a client learns nothing of other centers."""
    return session.scalar(own_patients(select(Patient).where(Patient.id == patient_id), caller))


def may_access_patient(caller: FhirCaller, patient: Patient) -> bool:
    """True when the caller acts for this patient's center (check before any write that
    names a patient, e.g. an Observation's subject)."""
    return patient.center_id == caller.center_id


# --- answering refusals ------------------------------------------------------------------


def _audit_denial(request: Request, denial: Denial) -> None:
    context = request_context(request)
    try:
        with transaction(context.factory) as session:
            record_event(
                session,
                clock=context.clock,
                actor=denial.actor,
                action=denial.action,
                outcome=AuditOutcome.DENIED,
                target=denial.target,
                detail={"reason": denial.reason},
            )
    except Exception:  # the refusal stands even if it could not be written down
        log.exception("could not audit a refused FHIR request")


def fhir_error_response(error: FhirError) -> Response:
    """The OperationOutcome response of a FhirError (used unless the FHIR base plumbing
    installs its own handler)."""
    return JSONResponse(
        error.outcome(),
        status_code=error.status,
        headers=error.headers,
        media_type="application/fhir+json",
    )


def install_fhir_auth(app: FastAPI) -> None:
    """Register the handlers: an AuditedFhirError is audited (after the request's
    transaction rolled back), then answered like any FhirError (by the FhirError handler
    installed at that moment, or by `fhir_error_response`)."""

    async def audited(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AuditedFhirError)
        if exc.denial is not None:
            await run_in_threadpool(_audit_denial, request, exc.denial)
        handler: Callable[..., Any] | None = app.exception_handlers.get(FhirError)
        if handler is not None and handler is not plain:
            response: Response = await handler(request, exc)
            return response
        return fhir_error_response(exc)

    async def plain(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FhirError)
        return fhir_error_response(exc)

    if FhirError not in app.exception_handlers:
        app.add_exception_handler(FhirError, plain)
    app.add_exception_handler(AuditedFhirError, audited)
