"""Registering treatment centers' FHIR clients: who they are, which center they act for,
what they may be granted, and the public keys they sign with (with rotation and its
history). Admins do this on the admin pages; every change is audited."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, joinedload, selectinload

from core.audit.service import Actor, record_event
from core.clock import Clock
from core.errors import FieldErrors
from core.ids import parse_id, parse_int
from core.models import TreatmentCenter
from core.text import N_
from fhir_adapter.keys import KeySetProblem, check_jwks_url, parse_pasted_key_set
from fhir_adapter.models import FhirAccessToken, FhirClient, FhirClientKeySet
from fhir_adapter.scopes import LETTERS, canonical_scopes, parse_scope, parse_scopes

_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{2,63}$")
# How long the replaced keys keep working after a rotation (hours), as offered to admins.
GRACE_HOURS = (0, 1, 24, 168)


@dataclass
class ClientInput:
    """What the registration form sends. `scopes`: scopes in any syntax `parse_scope`
    reads (the page sends one per ticked box, e.g. `system/Patient.r`)."""

    client_id: str = ""
    name: str = ""
    center_id: str = ""
    jwks_url: str = ""
    jwks: str = ""
    scopes: list[str] = field(default_factory=list)


@dataclass
class KeysInput:
    """A new key set: a URL or a pasted set (exactly one), and the old keys' grace period."""

    jwks_url: str = ""
    jwks: str = ""
    grace_hours: str = "0"


def list_clients(session: Session) -> list[FhirClient]:
    """Every registered client with its center, by name (disabled ones too)."""
    query = (
        select(FhirClient)
        .options(joinedload(FhirClient.center).joinedload(TreatmentCenter.state))
        .options(selectinload(FhirClient.key_sets))
        .order_by(FhirClient.name, FhirClient.id)
    )
    return list(session.scalars(query))


def get_client(session: Session, *, pk: int) -> FhirClient | None:
    return session.get(FhirClient, pk)


def client_by_client_id(session: Session, *, client_id: str) -> FhirClient | None:
    return session.scalar(select(FhirClient).where(FhirClient.client_id == client_id))


def scope_boxes(scopes: str | list[str]) -> set[str]:
    """The one-letter scopes (`system/Patient.r`) that `scopes` adds up to: what the page
    ticks."""
    text = scopes if isinstance(scopes, str) else " ".join(scopes)
    return {
        f"system/{scope.resource_type}.{letter}"
        for scope in parse_scopes(text)[0]
        for letter in LETTERS
        if letter in {interaction.value for interaction in scope.interactions}
    }


def _clean_scopes(values: list[str], errors: dict[str, str]) -> str:
    parsed = [parse_scope(value.strip()) for value in values if value.strip()]
    if any(scope is None for scope in parsed):
        errors["scopes"] = N_("Choose permissions from the list.")
        return ""
    text = canonical_scopes(scope for scope in parsed if scope is not None)
    if not text:
        errors["scopes"] = N_("Choose at least one permission.")
    return text


def _clean_keys(
    jwks_url: str, jwks: str, *, allow_http_loopback: bool, errors: dict[str, str]
) -> tuple[str | None, dict[str, object] | None]:
    """(url, None) or (None, pasted set); fills `errors` otherwise."""
    if jwks_url.strip() and jwks.strip():
        errors["jwks_url"] = N_(
            "Give either the key set's address or the pasted key set, not both."
        )
        return None, None
    try:
        if jwks_url.strip():
            return check_jwks_url(jwks_url, allow_http_loopback=allow_http_loopback), None
        if jwks.strip():
            return None, parse_pasted_key_set(jwks)
    except KeySetProblem as problem:
        errors["jwks_url" if jwks_url.strip() else "jwks"] = problem.message
        return None, None
    errors["jwks_url"] = N_("Give the address of the center's key set (JWKS URL), or paste it.")
    return None, None


def register_client(
    session: Session, *, clock: Clock, actor: Actor, data: ClientInput, allow_http_loopback: bool
) -> FhirClient:
    """Register a center's client with its first key set. A blank client id is generated.
    `allow_http_loopback` lets a JWKS URL be plain http on localhost (demo mode, tests).
    Raises FieldErrors."""
    errors: dict[str, str] = {}
    client_id = data.client_id.strip() or f"center-{secrets.token_hex(8)}"
    if not _CLIENT_ID.match(client_id):
        errors["client_id"] = N_(
            "Use 3 to 64 letters, digits, dots, dashes, underscores or tildes, or leave it "
            "blank to have one made."
        )
    elif client_by_client_id(session, client_id=client_id) is not None:
        errors["client_id"] = N_("Another client has this client id.")
    name = data.name.strip()
    if not name or len(name) > 120:
        errors["name"] = N_("Enter a name that says which system this is (at most 120 characters).")
    center_pk = parse_id(data.center_id)
    center = session.get(TreatmentCenter, center_pk) if center_pk is not None else None
    if center is None:
        errors["center_id"] = N_("Choose the treatment center this client acts for.")
    url, pasted = _clean_keys(
        data.jwks_url, data.jwks, allow_http_loopback=allow_http_loopback, errors=errors
    )
    scopes = _clean_scopes(data.scopes, errors)
    if errors:
        raise FieldErrors(errors)
    assert center is not None
    now = clock.now()
    client = FhirClient(
        client_id=client_id,
        name=name,
        center_id=center.id,
        scopes=scopes,
        created_at=now,
        created_by_user_id=actor.user_id,
        updated_at=now,
    )
    session.add(client)
    session.flush()
    session.add(
        FhirClientKeySet(
            client_pk=client.id,
            jwks_url=url,
            jwks=pasted,
            created_at=now,
            created_by_user_id=actor.user_id,
        )
    )
    session.flush()
    session.refresh(client)
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="admin.fhir_client.register",
        target=f"fhir_client:{client.client_id}",
        client_id=client.client_id,
        detail={"center_id": center.id, "scopes": scopes, "keys": "url" if url else "pasted"},
    )
    return client


def revoke_tokens(session: Session, *, client: FhirClient) -> int:
    """Delete the client's access tokens: every copy of the process refuses them at once."""
    result = session.execute(delete(FhirAccessToken).where(FhirAccessToken.client_pk == client.id))
    session.flush()
    return int(getattr(result, "rowcount", 0) or 0)


def update_client(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    client: FhirClient,
    name: str,
    scopes: list[str],
) -> FhirClient:
    """Rename a client or change what it may be granted. Changed permissions revoke its live
    tokens (it gets a new one, with the new permissions, at its next token request). The
    center does not change: a client for another center is another registration.
    Raises FieldErrors."""
    errors: dict[str, str] = {}
    name = name.strip()
    if not name or len(name) > 120:
        errors["name"] = N_("Enter a name that says which system this is (at most 120 characters).")
    text = _clean_scopes(scopes, errors)
    if errors:
        raise FieldErrors(errors)
    changed = [
        field_name
        for field_name, old, new in (("name", client.name, name), ("scopes", client.scopes, text))
        if old != new
    ]
    if not changed:
        return client
    client.name, client.scopes, client.updated_at = name, text, clock.now()
    session.flush()
    revoked = revoke_tokens(session, client=client) if "scopes" in changed else 0
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="admin.fhir_client.update",
        target=f"fhir_client:{client.client_id}",
        client_id=client.client_id,
        detail={"fields": changed, "scopes": text, "tokens_revoked": revoked},
    )
    return client


def set_client_enabled(
    session: Session, *, clock: Clock, actor: Actor, client: FhirClient, enabled: bool
) -> None:
    """Disable a client (its live tokens are revoked at once, and it gets no new ones) or
    enable it again."""
    if client.is_enabled == enabled:
        return
    client.disabled_at = None if enabled else clock.now()
    client.updated_at = clock.now()
    session.flush()
    revoked = 0 if enabled else revoke_tokens(session, client=client)
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="admin.fhir_client.enable" if enabled else "admin.fhir_client.disable",
        target=f"fhir_client:{client.client_id}",
        client_id=client.client_id,
        detail=None if enabled else {"tokens_revoked": revoked},
    )


def rotate_keys(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    client: FhirClient,
    data: KeysInput,
    allow_http_loopback: bool,
) -> FhirClientKeySet:
    """Replace the client's key set with a new URL or pasted set. The old set keeps
    verifying assertions for the grace period (so a center can switch its signer without a
    gap); with none it stops at once and the live tokens are revoked (the way to answer a
    leaked key). Raises FieldErrors."""
    errors: dict[str, str] = {}
    grace_hours = parse_int(data.grace_hours, low=0, high=24 * 365)
    grace_hours = -1 if grace_hours is None else grace_hours
    if grace_hours not in GRACE_HOURS:
        errors["grace_hours"] = N_("Choose how long the old keys keep working.")
    url, pasted = _clean_keys(
        data.jwks_url, data.jwks, allow_http_loopback=allow_http_loopback, errors=errors
    )
    if errors:
        raise FieldErrors(errors)
    now = clock.now()
    for old in client.key_sets:
        if old.replaced_at is None:
            old.replaced_at = now
            old.accepted_until = now + timedelta(hours=grace_hours)
    new = FhirClientKeySet(
        client_pk=client.id,
        jwks_url=url,
        jwks=pasted,
        created_at=now,
        created_by_user_id=actor.user_id,
    )
    session.add(new)
    client.updated_at = now
    session.flush()
    session.refresh(client)
    revoked = revoke_tokens(session, client=client) if grace_hours == 0 else 0
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="admin.fhir_client.rotate_keys",
        target=f"fhir_client:{client.client_id}",
        client_id=client.client_id,
        detail={
            "keys": "url" if url else "pasted",
            "grace_hours": grace_hours,
            "tokens_revoked": revoked,
        },
    )
    return new


def end_grace(session: Session, *, clock: Clock, actor: Actor, client: FhirClient) -> None:
    """Stop the replaced keys at once (their grace period ends now) and revoke the live
    tokens: for when an old key turns out to be compromised after all."""
    now = clock.now()
    ended = 0
    for key_set in client.key_sets:
        if key_set.replaced_at is not None and key_set.accepted_at(now):
            key_set.accepted_until = now
            ended += 1
    if not ended:
        return
    session.flush()
    revoked = revoke_tokens(session, client=client)
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="admin.fhir_client.end_grace",
        target=f"fhir_client:{client.client_id}",
        client_id=client.client_id,
        detail={"key_sets": ended, "tokens_revoked": revoked},
    )
