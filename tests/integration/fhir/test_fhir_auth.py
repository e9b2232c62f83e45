"""SMART Backend Services: a center's system gets a short-lived token at /auth/token with a
signed client assertion (RS384 or ES384), and the FHIR API lets it do only what its scopes
allow, only to its own center's patients, every read and write audited with the client.

The tests go through the real resource routes (a read, a search, a create)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import OctKey
from sqlalchemy import func, select

from core.audit.models import AuditEvent, AuditOutcome
from core.clock import FrozenClock
from core.db import transaction
from core.models import Patient
from fhir_adapter.clients import KeysInput, rotate_keys, set_client_enabled
from fhir_adapter.models import FhirAccessToken, FhirClient
from fhir_adapter.tokens import CLIENT_ASSERTION_TYPE
from tests.conftest import Database
from tests.support.smart import (
    FRONT_RANGE,
    HARBORVIEW,
    TOKEN_URL,
    CenterSystem,
    JwksServer,
    admin_actor,
    center_id,
    register,
)


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    """A machine client (no cookies of a browser) of the app."""
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client


@pytest.fixture(scope="module")
def rsa_center() -> CenterSystem:
    return CenterSystem.generate("RS384")


@pytest.fixture(scope="module")
def ec_center() -> CenterSystem:
    return CenterSystem.generate("ES384")


def hemoglobin(patient_id: int) -> dict[str, Any]:
    """A center's hemoglobin result about `patient_id`, valid R4."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-11-02",
        "valueQuantity": {
            "value": 11.2,
            "unit": "g/dL",
            "system": "http://unitsofmeasure.org",
            "code": "g/dL",
        },
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def events(db: Database, action: str) -> list[AuditEvent]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def patients_of(db: Database, center_name: str) -> list[int]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(Patient.id)
                .where(Patient.center_id == center_id(db, center_name))
                .order_by(Patient.id)
            )
        )


def token_rows(db: Database) -> int:
    with db.factory() as session:
        return session.scalar(select(func.count(FhirAccessToken.id))) or 0


# --- discovery ---------------------------------------------------------------------------


def test_smart_configuration_is_published_at_both_addresses(http: TestClient) -> None:
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        response = http.get(path)
        assert response.status_code == 200, path
        document = response.json()
        assert document["token_endpoint"] == TOKEN_URL
        assert document["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
        assert document["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
        assert document["grant_types_supported"] == ["client_credentials"]
        assert "client-confidential-asymmetric" in document["capabilities"]
        assert {"permission-v1", "permission-v2"} <= set(document["capabilities"])
        assert "system/Patient.rs" in document["scopes_supported"]
        assert "set-cookie" not in response.headers  # no browser here: no CSRF cookie


# --- getting a token ---------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_a_signed_assertion_gets_a_short_lived_opaque_token(
    db: Database,
    http: TestClient,
    clock: FrozenClock,
    alg: str,
    rsa_center: CenterSystem,
    ec_center: CenterSystem,
) -> None:
    center = rsa_center if alg == "RS384" else ec_center
    register(db, clock, center=center)
    # A machine posts no CSRF token and has no cookie: the endpoint is not a page form.
    response = center.request_token(
        http, center.assertion(clock.now()), scope="system/Patient.rs system/Observation.c"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "system/Patient.rs system/Observation.c"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert "set-cookie" not in response.headers
    token = body["access_token"]
    assert len(token) >= 40 and "." not in token  # opaque, not a JWT

    with db.factory() as session:
        stored = session.scalars(select(FhirAccessToken)).one()
        assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in (stored.token_hash, stored.scopes)
        assert stored.expires_at - stored.issued_at == timedelta(minutes=5)
    issued = events(db, "fhir.token")
    assert [(e.outcome, e.client_id, e.actor_role) for e in issued] == [
        (AuditOutcome.SUCCESS, center.client_id, "fhir_client")
    ]
    assert center.client_id == issued[0].actor_label

    maya = patients_of(db, HARBORVIEW)[0]
    assert http.get(f"/fhir/Patient/{maya}", headers=bearer(token)).status_code == 200


def _none_alg(center: CenterSystem, now_claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': center.kid})}.{part(now_claims)}."


def test_bad_assertions_are_refused_with_rfc6749_errors(
    db: Database, http: TestClient, clock: FrozenClock, rsa_center: CenterSystem
) -> None:
    center = rsa_center
    register(db, clock, center=center)
    now = clock.now()
    impostor = CenterSystem.generate("RS384", kid=center.kid)  # same kid, another key
    impostor.client_id = center.client_id
    claims = {
        "iss": center.client_id,
        "sub": center.client_id,
        "aud": TOKEN_URL,
        "exp": int((now + timedelta(minutes=4)).timestamp()),
        "jti": "none-alg",
    }
    hs256 = jwt.encode(
        {"alg": "HS256", "kid": center.kid}, claims, OctKey.generate_key(256), algorithms=["HS256"]
    )
    stranger = CenterSystem.generate("ES384")
    cases: dict[str, tuple[str, str]] = {
        "expired": (
            center.assertion(now - timedelta(minutes=10), lifetime=timedelta(minutes=4)),
            "expired",
        ),
        "exp too far ahead": (
            center.assertion(now, lifetime=timedelta(minutes=30)),
            "more than 5 minutes",
        ),
        "signed by another key": (impostor.assertion(now), "signature does not verify"),
        "wrong aud (the FHIR base)": (
            center.assertion(now, aud="http://testserver/fhir"),
            "aud must be this token endpoint",
        ),
        "sub differs from iss": (center.assertion(now, sub="someone-else"), "sub must be"),
        "no jti": (center.assertion(now, jti=None), "jti"),
        "no exp": (center.assertion(now, exp=None), "exp"),
        "no kid": (center.assertion(now, header={"kid": None}), "kid"),
        "unknown kid": (center.assertion(now, header={"kid": "nope"}), "no RS384 key with kid"),
        "alg none": (_none_alg(center, claims), "RS384 or ES384"),
        "alg HS256": (hs256, "RS384 or ES384"),
        "unknown client": (stranger.assertion(now), "unknown client"),
        "jku elsewhere": (
            center.assertion(now, header={"jku": "https://evil.example/jwks"}),
            "jku",
        ),
        "not a JWT": ("not-a-jwt", "not a signed JWT"),
    }
    for label, (assertion, words) in cases.items():
        response = center.request_token(http, assertion)
        assert response.status_code == 401, f"{label}: {response.status_code} {response.text}"
        body = response.json()
        assert body["error"] == "invalid_client", label
        assert words in body["error_description"], f"{label}: {body['error_description']}"
        assert response.headers["cache-control"] == "no-store", label
    assert token_rows(db) == 0

    refusals = events(db, "fhir.token")
    assert len(refusals) == len(cases)
    assert {event.outcome for event in refusals} == {AuditOutcome.DENIED}
    sent = [assertion for assertion, _words in cases.values() if "." in assertion]
    for event in refusals:  # the assertion itself is never kept, nor its parts
        kept = json.dumps(event.detail) + event.actor_label
        assert not [part for text in sent for part in text.split(".") if part and part in kept]
    by_client = [event for event in refusals if event.client_id == center.client_id]
    assert len(by_client) == len(cases) - 2  # all but the stranger and the non-JWT
    stranger_event = next(e for e in refusals if stranger.client_id in e.actor_label)
    assert stranger_event.client_id is None


def test_malformed_token_requests_get_rfc6749_errors_never_500(
    db: Database, http: TestClient, clock: FrozenClock, rsa_center: CenterSystem
) -> None:
    register(db, clock, center=rsa_center)
    good = {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": rsa_center.assertion(clock.now()),
        "scope": "system/Patient.rs",
    }
    cases: list[tuple[str, dict[str, Any] | str, str]] = [
        ("no grant_type", {**good, "grant_type": ""}, "invalid_request"),
        ("password grant", {**good, "grant_type": "password"}, "unsupported_grant_type"),
        ("wrong assertion type", {**good, "client_assertion_type": "x"}, "invalid_request"),
        (
            "no assertion",
            {k: v for k, v in good.items() if k != "client_assertion"},
            "invalid_request",
        ),
        (
            "grant_type twice",
            "grant_type=client_credentials&grant_type=client_credentials",
            "invalid_request",
        ),
        ("client_id not iss", {**good, "client_id": "another"}, "invalid_client"),
    ]
    for label, form, error in cases:
        if isinstance(form, str):
            response = http.post(
                "/auth/token",
                content=form,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            response = http.post("/auth/token", data=form)
        assert response.status_code in (400, 401), f"{label}: {response.status_code}"
        assert response.json()["error"] == error, f"{label}: {response.text}"
    as_json = http.post("/auth/token", json=good)
    assert as_json.status_code == 400
    assert as_json.json()["error"] == "invalid_request"
    huge = http.post("/auth/token", data={**good, "client_assertion": "x" * 40_000})
    assert (huge.status_code, huge.json()["error"]) == (400, "invalid_request")
    long_assertion = http.post("/auth/token", data={**good, "client_assertion": "x" * 20_000})
    assert long_assertion.json()["error_description"] == "client_assertion is too long"
    assert token_rows(db) == 0


def test_a_replayed_assertion_is_refused(
    db: Database, http: TestClient, clock: FrozenClock, ec_center: CenterSystem
) -> None:
    register(db, clock, center=ec_center)
    assertion = ec_center.assertion(clock.now(), jti="once-only")
    assert ec_center.request_token(http, assertion).status_code == 200
    replay = ec_center.request_token(http, assertion)
    assert replay.status_code == 401
    assert "already used" in replay.json()["error_description"]
    # A freshly signed assertion with the same jti is a replay too.
    clock.advance(timedelta(seconds=10))
    again = ec_center.request_token(http, ec_center.assertion(clock.now(), jti="once-only"))
    assert again.status_code == 401
    assert token_rows(db) == 1


def test_scopes_granted_are_what_was_asked_and_allowed(
    db: Database, http: TestClient, clock: FrozenClock, rsa_center: CenterSystem
) -> None:
    register(db, clock, center=rsa_center, scopes="system/Patient.rs system/Observation.cruds")

    def scope_for(requested: str | None) -> tuple[int, dict[str, Any]]:
        clock.advance(timedelta(seconds=1))
        response = rsa_center.request_token(
            http, rsa_center.assertion(clock.now()), scope=requested
        )
        return response.status_code, response.json()

    granted = {
        "system/Patient.read system/Observation.rs system/Encounter.rs": (
            "system/Patient.read system/Observation.rs"
        ),
        "system/*.rs": "system/Observation.rs system/Patient.rs",
        "system/Patient.cruds": "system/Patient.rs",
        "system/Observation.write": "system/Observation.write",
        "system/Observation.* launch openid": "system/Observation.*",
    }
    for requested, expected in granted.items():
        status, body = scope_for(requested)
        assert (status, body.get("scope")) == (200, expected), requested
    for refused in ("system/Encounter.rs", "patient/Patient.rs", "system/Patient.sr", None):
        status, body = scope_for(refused)
        assert (status, body["error"]) == (400, "invalid_scope"), refused


# --- using a token -------------------------------------------------------------------------


def test_the_fhir_api_refuses_requests_without_a_valid_token(
    db: Database, http: TestClient, clock: FrozenClock, rsa_center: CenterSystem
) -> None:
    register(db, clock, center=rsa_center)
    maya = patients_of(db, HARBORVIEW)[0]
    url = f"/fhir/Patient/{maya}"

    missing = http.get(url)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="cgt-access FHIR"'
    assert missing.headers["content-type"].startswith("application/fhir+json")
    outcome = missing.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "login"

    for headers in (bearer("made-up"), {"Authorization": "Basic dXNlcjpwYXNz"}, bearer("")):
        refused = http.get(url, headers=headers)
        assert refused.status_code == 401, headers
        assert refused.json()["resourceType"] == "OperationOutcome"
    unknown = http.get(url, headers=bearer("made-up"))
    assert 'error="invalid_token"' in unknown.headers["www-authenticate"]

    # A portal login cookie is no FHIR credential either: nothing here reads cookies.
    http.cookies.set("cgt_session", "anything")
    assert http.get(url).status_code == 401


def test_a_token_expires_after_five_minutes(
    db: Database, http: TestClient, clock: FrozenClock, rsa_center: CenterSystem
) -> None:
    register(db, clock, center=rsa_center)
    token = rsa_center.token(http, clock)
    maya = patients_of(db, HARBORVIEW)[0]
    clock.advance(timedelta(minutes=4, seconds=59))
    assert http.get(f"/fhir/Patient/{maya}", headers=bearer(token)).status_code == 200
    clock.advance(timedelta(seconds=1))
    expired = http.get(f"/fhir/Patient/{maya}", headers=bearer(token))
    assert expired.status_code == 401
    assert expired.json()["issue"][0]["code"] == "expired"
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]
    denied = [e for e in events(db, "fhir.auth") if e.outcome is AuditOutcome.DENIED]
    assert [e.client_id for e in denied] == [rsa_center.client_id]


def test_disabling_a_client_refuses_its_live_token_at_once(
    db: Database, http: TestClient, clock: FrozenClock, rsa_center: CenterSystem
) -> None:
    client_pk = register(db, clock, center=rsa_center)
    token = rsa_center.token(http, clock)
    maya = patients_of(db, HARBORVIEW)[0]
    assert http.get(f"/fhir/Patient/{maya}", headers=bearer(token)).status_code == 200

    with transaction(db.factory) as session:
        client = session.get(FhirClient, client_pk)
        assert client is not None
        set_client_enabled(
            session, clock=clock, actor=admin_actor(db), client=client, enabled=False
        )
    refused = http.get(f"/fhir/Patient/{maya}", headers=bearer(token))
    assert refused.status_code == 401
    assert refused.json()["resourceType"] == "OperationOutcome"
    again = rsa_center.request_token(http, rsa_center.assertion(clock.now()))
    assert again.status_code == 401
    assert again.json()["error_description"] == "this client is disabled"

    with transaction(db.factory) as session:
        client = session.get(FhirClient, client_pk)
        assert client is not None
        set_client_enabled(session, clock=clock, actor=admin_actor(db), client=client, enabled=True)
    # Enabled again, it needs a new token: the old one was revoked, not suspended.
    assert http.get(f"/fhir/Patient/{maya}", headers=bearer(token)).status_code == 401
    assert rsa_center.request_token(http, rsa_center.assertion(clock.now())).status_code == 200


def test_a_read_scope_cannot_write(
    db: Database, http: TestClient, clock: FrozenClock, rsa_center: CenterSystem
) -> None:
    register(db, clock, center=rsa_center)
    token = rsa_center.token(http, clock, scope="system/Patient.rs")
    maya = patients_of(db, HARBORVIEW)[0]
    refused = http.post("/fhir/Observation", json={"subject": maya}, headers=bearer(token))
    assert refused.status_code == 403
    outcome = refused.json()
    assert outcome["issue"][0]["code"] == "forbidden"
    assert "system/Observation.c" in outcome["issue"][0]["diagnostics"]
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    # The refusal is in the audit log, with the client, though the request rolled back.
    denied = events(db, "fhir.create")
    assert [(e.outcome, e.client_id, e.target) for e in denied] == [
        (AuditOutcome.DENIED, rsa_center.client_id, "Observation")
    ]

    writer = rsa_center.token(http, clock, scope="system/Observation.c")
    created = http.post("/fhir/Observation", json=hemoglobin(maya), headers=bearer(writer))
    assert created.status_code == 201, created.text


def test_a_client_sees_and_writes_only_its_own_centers_patients(
    db: Database, http: TestClient, clock: FrozenClock, rsa_center: CenterSystem
) -> None:
    register(db, clock, center=rsa_center, center_name=HARBORVIEW)
    token = rsa_center.token(http, clock, scope="system/Patient.rs system/Observation.cruds")
    own, others = patients_of(db, HARBORVIEW), patients_of(db, FRONT_RANGE)
    assert own and others

    found = http.get("/fhir/Patient", params={"_count": 1000}, headers=bearer(token))
    assert found.status_code == 200
    matches = [e for e in found.json()["entry"] if e["search"]["mode"] == "match"]
    assert sorted(int(entry["resource"]["id"]) for entry in matches) == own
    assert http.get(f"/fhir/Patient/{own[0]}", headers=bearer(token)).status_code == 200
    # Another center's patient is answered like one that does not exist.
    elsewhere = http.get(f"/fhir/Patient/{others[0]}", headers=bearer(token))
    assert elsewhere.status_code == 404
    assert elsewhere.json()["issue"][0]["code"] == "not-found"
    written = http.post("/fhir/Observation", json=hemoglobin(others[0]), headers=bearer(token))
    assert written.status_code == 422
    assert f"Patient/{others[0]}" in written.text

    # Every read is audited with the client and the patient; the refused ones are not reads.
    reads = events(db, "fhir.read")
    assert [(e.patient_id, e.client_id, e.target) for e in reads] == [
        (own[0], rsa_center.client_id, f"Patient/{own[0]}")
    ]
    searched = events(db, "fhir.search")
    assert sorted(e.patient_id for e in searched if e.patient_id) == own
    assert {e.client_id for e in searched} == {rsa_center.client_id}
    assert {e.actor_role for e in reads + searched} == {"fhir_client"}
    assert events(db, "fhir.create") == []


# --- keys at a URL, and rotation ------------------------------------------------------------


def test_keys_are_fetched_from_the_jwks_url_and_cached_in_the_database(
    db: Database, http: TestClient, clock: FrozenClock, rsa_center: CenterSystem
) -> None:
    with JwksServer(rsa_center.public_jwks()) as server:
        client_pk = register(db, clock, center=rsa_center, jwks_url=server.url)
        assert server.requests == 0  # nothing fetched until a token is asked for
        assert rsa_center.token(http, clock)
        assert server.requests == 1
        clock.advance(timedelta(minutes=10))
        assert rsa_center.token(http, clock)
        assert server.requests == 1  # the copy in the database served
        with db.factory() as session:
            client = session.get(FhirClient, client_pk)
            assert client is not None and client.current_key_set is not None
            assert client.current_key_set.fetched_at == clock.now() - timedelta(minutes=10)
            assert client.current_key_set.jwks == rsa_center.public_jwks()

        # The center rolls its key: an unknown kid makes us look again (once a minute).
        rolled = CenterSystem.generate("ES384")
        rolled.client_id = rsa_center.client_id
        server.document = rolled.public_jwks()
        clock.advance(timedelta(seconds=30))
        assert rolled.request_token(http, rolled.assertion(clock.now())).status_code == 200
        assert server.requests == 2
        unknown = rolled.request_token(
            http, rolled.assertion(clock.now(), header={"kid": "never-published"})
        )
        assert unknown.status_code == 401
        assert server.requests == 2  # not refetched within the minute

        server.status = 503
        clock.advance(timedelta(minutes=20))  # the cached copy is stale
        failed = rolled.request_token(http, rolled.assertion(clock.now()))
        assert failed.status_code == 401
        assert "could not be fetched" in failed.json()["error_description"]
        assert "HTTP 503" in failed.json()["error_description"]


def test_an_unreachable_jwks_url_is_a_clear_invalid_client(
    db: Database,
    http: TestClient,
    clock: FrozenClock,
    rsa_center: CenterSystem,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with JwksServer() as server:
        closed = server.url  # the server stops at the end of the block: nothing listens
    register(db, clock, center=rsa_center, jwks_url=closed)
    assertion = rsa_center.assertion(clock.now())
    with caplog.at_level(logging.INFO):
        response = rsa_center.request_token(http, assertion)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "could not be fetched" in response.json()["error_description"]
    assert f"FHIR client {rsa_center.client_id}: key set not fetched" in caplog.text
    assert assertion not in caplog.text
    assert assertion.split(".")[2] not in caplog.text


def test_a_jwks_url_serving_a_private_key_is_refused(
    db: Database, http: TestClient, clock: FrozenClock, rsa_center: CenterSystem
) -> None:
    leaked = {"keys": [rsa_center.key.as_dict(private=True)]}
    with JwksServer(leaked) as server:
        register(db, clock, center=rsa_center, jwks_url=server.url)
        response = rsa_center.request_token(http, rsa_center.assertion(clock.now()))
    assert response.status_code == 401
    assert "private key material" in response.json()["error_description"]


def test_rotated_keys_keep_working_for_the_grace_period_only(
    db: Database, http: TestClient, clock: FrozenClock, rsa_center: CenterSystem
) -> None:
    client_pk = register(db, clock, center=rsa_center)
    new = CenterSystem.generate("ES384")
    new.client_id = rsa_center.client_id
    old_token = rsa_center.token(http, clock)

    with transaction(db.factory) as session:
        client = session.get(FhirClient, client_pk)
        assert client is not None
        rotate_keys(
            session,
            clock=clock,
            actor=admin_actor(db),
            client=client,
            data=KeysInput(jwks=json.dumps(new.public_jwks()), grace_hours="1"),
            allow_http_loopback=False,
        )
    maya = patients_of(db, HARBORVIEW)[0]
    assert http.get(f"/fhir/Patient/{maya}", headers=bearer(old_token)).status_code == 200
    assert new.token(http, clock)
    assert rsa_center.token(http, clock)  # the old key, within the hour
    clock.advance(timedelta(hours=1))
    late = rsa_center.request_token(http, rsa_center.assertion(clock.now()))
    assert late.status_code == 401
    assert new.token(http, clock)

    # Replacing at once (a leaked key) also revokes the tokens already given.
    live = new.token(http, clock)
    with transaction(db.factory) as session:
        client = session.get(FhirClient, client_pk)
        assert client is not None
        rotate_keys(
            session,
            clock=clock,
            actor=admin_actor(db),
            client=client,
            data=KeysInput(jwks=json.dumps(rsa_center.public_jwks()), grace_hours="0"),
            allow_http_loopback=False,
        )
    assert http.get(f"/fhir/Patient/{maya}", headers=bearer(live)).status_code == 401
    assert new.request_token(http, new.assertion(clock.now())).status_code == 401
