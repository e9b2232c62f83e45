"""Admin pages: the treatment centers' FHIR clients (SMART backend services): register one,
change its permissions, disable or enable it, rotate its keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from core.errors import FieldErrors
from core.identity.access import Permission
from core.identity.models import User
from core.ids import PathId
from core.reference import list_centers
from core.text import N_
from fhir_adapter.clients import (
    GRACE_HOURS,
    ClientInput,
    KeysInput,
    end_grace,
    get_client,
    list_clients,
    register_client,
    rotate_keys,
    scope_boxes,
    set_client_enabled,
    update_client,
)
from fhir_adapter.keys import describe_keys
from fhir_adapter.models import FhirClient
from fhir_adapter.scopes import LETTERS, RESOURCE_TYPES
from fhir_adapter.tokens import token_url
from portal import i18n
from portal.deps import ContextDep, PageNotFound, SessionDep, actor_for, require
from portal.routes.pages import page_router
from portal.web import redirect, render

router = page_router()
_ = i18n.gettext

ClientsAdmin = Annotated[User, Depends(require(Permission.FHIR_CLIENTS_MANAGE))]
LIST_TEMPLATE = "portal/admin_fhir_clients.html"
CLIENT_TEMPLATE = "portal/admin_fhir_client.html"
_STATUSES = ("active", "disabled")


class ClientForm(BaseModel):
    client_id: str = Field("", max_length=200)
    name: str = Field("", max_length=300)
    center_id: str = Field("", max_length=12)
    jwks_url: str = Field("", max_length=1000)
    jwks: str = Field("", max_length=70_000)
    scopes: list[str] = Field(default_factory=list, max_length=60)


class ClientUpdateForm(BaseModel):
    name: str = Field("", max_length=300)
    scopes: list[str] = Field(default_factory=list, max_length=60)


class KeysForm(BaseModel):
    jwks_url: str = Field("", max_length=1000)
    jwks: str = Field("", max_length=70_000)
    grace_hours: str = Field("0", max_length=4)


def _allow_http_loopback(context: ContextDep) -> bool:
    # Plain-http key sets on localhost are for the demo (and tests), never production.
    return context.settings.demo_mode


def _scope_grid() -> dict[str, Any]:
    return {"scope_types": RESOURCE_TYPES, "scope_letters": LETTERS}


def _list_context(
    session: SessionDep, context: ContextDep, status: str, form: ClientInput
) -> dict[str, Any]:
    clients = list_clients(session)
    if status == "active":
        clients = [client for client in clients if client.is_enabled]
    elif status == "disabled":
        clients = [client for client in clients if not client.is_enabled]
    return {
        "clients": clients,
        "status": status,
        "centers": list_centers(session),
        "form": form,
        "selected_scopes": scope_boxes(form.scopes),
        "token_url": token_url(context.settings.public_base_url),
        "discovery_url": context.settings.public_base_url + "/.well-known/smart-configuration",
        **_scope_grid(),
    }


@router.get("/admin/fhir-clients", name="admin_fhir_clients")
def clients_page(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ClientsAdmin,
    status: Annotated[str, Query(max_length=12)] = "",
) -> Response:
    status = status if status in _STATUSES else ""
    return render(
        request,
        LIST_TEMPLATE,
        _list_context(session, context, status, ClientInput()),
        block="clients",
    )


@router.post("/admin/fhir-clients", name="admin_fhir_client_create")
def client_create(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ClientsAdmin,
    data: Annotated[ClientForm, Form()],
) -> Response:
    form = ClientInput(**data.model_dump())
    try:
        client = register_client(
            session,
            clock=context.clock,
            actor=actor_for(request, user),
            data=form,
            allow_http_loopback=_allow_http_loopback(context),
        )
    except FieldErrors as problem:
        return render(
            request,
            LIST_TEMPLATE,
            {
                **_list_context(session, context, "", form),
                "errors": i18n.translate_errors(problem.errors),
            },
            block="register",
            status_code=400,
        )
    return redirect(request, f"/admin/fhir-clients/{client.id}")


def _client(session: SessionDep, fhir_client_id: int) -> FhirClient:
    client = get_client(session, pk=fhir_client_id)
    if client is None:
        raise PageNotFound()
    return client


def _client_context(
    context: ContextDep,
    client: FhirClient,
    *,
    name: str | None = None,
    scopes: list[str] | None = None,
    keys: KeysInput | None = None,
) -> dict[str, Any]:
    now = context.clock.now()
    history = list(reversed(client.key_sets))
    return {
        "client": client,
        "name": client.name if name is None else name,
        "selected_scopes": scope_boxes(client.scopes if scopes is None else scopes),
        "keys": keys or KeysInput(),
        "current": client.current_key_set,
        "current_keys": describe_keys(client.current_key_set.jwks)
        if client.current_key_set
        else [],
        "history": history,
        "in_grace": [
            key_set
            for key_set in history
            if key_set.replaced_at is not None and key_set.accepted_at(now)
        ],
        "grace_hours": GRACE_HOURS,
        "token_url": token_url(context.settings.public_base_url),
        "fhir_base_url": context.settings.public_base_url + "/fhir",
        **_scope_grid(),
    }


@router.get("/admin/fhir-clients/{fhir_client_id}", name="admin_fhir_client")
def client_page(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ClientsAdmin,
    fhir_client_id: PathId,
) -> Response:
    client = _client(session, fhir_client_id)
    return render(request, CLIENT_TEMPLATE, _client_context(context, client), block="client")


@router.post("/admin/fhir-clients/{fhir_client_id}", name="admin_fhir_client_update")
def client_update(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ClientsAdmin,
    fhir_client_id: PathId,
    data: Annotated[ClientUpdateForm, Form()],
) -> Response:
    client = _client(session, fhir_client_id)
    try:
        update_client(
            session,
            clock=context.clock,
            actor=actor_for(request, user),
            client=client,
            name=data.name,
            scopes=data.scopes,
        )
    except FieldErrors as problem:
        return render(
            request,
            CLIENT_TEMPLATE,
            {
                **_client_context(context, client, name=data.name, scopes=data.scopes),
                "errors": i18n.translate_errors(problem.errors),
            },
            block="details",
            status_code=400,
        )
    return redirect(request, f"/admin/fhir-clients/{client.id}")


@router.post("/admin/fhir-clients/{fhir_client_id}/keys", name="admin_fhir_client_keys")
def client_keys(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ClientsAdmin,
    fhir_client_id: PathId,
    data: Annotated[KeysForm, Form()],
) -> Response:
    client = _client(session, fhir_client_id)
    keys = KeysInput(**data.model_dump())
    try:
        rotate_keys(
            session,
            clock=context.clock,
            actor=actor_for(request, user),
            client=client,
            data=keys,
            allow_http_loopback=_allow_http_loopback(context),
        )
    except FieldErrors as problem:
        return render(
            request,
            CLIENT_TEMPLATE,
            {
                **_client_context(context, client, keys=keys),
                "key_errors": i18n.translate_errors(problem.errors),
            },
            block="keys",
            status_code=400,
        )
    return redirect(request, f"/admin/fhir-clients/{client.id}")


@router.post("/admin/fhir-clients/{fhir_client_id}/action", name="admin_fhir_client_action")
def client_action(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ClientsAdmin,
    fhir_client_id: PathId,
    action: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Disable or enable the client, or end the old keys' grace period now."""
    client = _client(session, fhir_client_id)
    actor = actor_for(request, user)
    if action in ("disable", "enable"):
        set_client_enabled(
            session, clock=context.clock, actor=actor, client=client, enabled=action == "enable"
        )
    elif action == "end_grace":
        end_grace(session, clock=context.clock, actor=actor, client=client)
    else:
        return render(
            request,
            "portal/error.html",
            {
                "title": _("Not possible"),
                "message": _(N_("Unknown action.")),
                "status": 400,
                "back": f"/admin/fhir-clients/{client.id}",
            },
            status_code=400,
        )
    return redirect(request, f"/admin/fhir-clients/{client.id}")
