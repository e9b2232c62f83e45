"""The token endpoint's work: SMART Backend Services (client_credentials with a
`private_key_jwt` client assertion, RFC 6749 + RFC 7523), checked with joserfc against the
client's registered keys.

A granted token is opaque and random, lives 5 minutes, and is stored as its SHA-256: the
bearer check (`fhir_adapter.bearer`) looks it up, so a disabled client is refused at once
by every copy of the process. Every issuance and every refusal is audited (without the
assertion)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, JoseError
from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.audit.models import AuditOutcome
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.identity.passwords import new_token, token_digest
from fhir_adapter.keys import (
    ALGORITHMS,
    JwksUnavailable,
    PublicKey,
    fetch_key_set,
    find_key,
)
from fhir_adapter.models import FhirAccessToken, FhirAssertionJti, FhirClient, FhirClientKeySet
from fhir_adapter.scopes import ScopeGrant, grant_requested, parse_scopes

log = logging.getLogger("cgt_access.fhir.auth")

TOKEN_PATH = "/auth/token"
GRANT_TYPE = "client_credentials"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# SMART recommends access tokens of at most five minutes; a backend service asks again.
TOKEN_LIFETIME = timedelta(minutes=5)
# An assertion's exp may be at most this far ahead (SMART: five minutes).
MAX_ASSERTION_LIFETIME = timedelta(minutes=5)
# Tolerated difference between the center's clock and ours.
CLOCK_SKEW = timedelta(seconds=60)
# A fetched key set is used for this long before it is fetched again ...
JWKS_CACHE_FOR = timedelta(minutes=15)
# ... or sooner when an assertion names a key it does not hold (the center rolled its
# keys), but at most once a minute, so unknown key ids cannot make us hammer its server.
JWKS_REFETCH_AFTER = timedelta(seconds=60)
MAX_ASSERTION_CHARS = 16_000
MAX_JTI_CHARS = 255
# Expired tokens are kept a day (then deleted when the client next gets a token).
_TOKEN_ROWS_KEPT = timedelta(days=1)


def token_url(public_base_url: str) -> str:
    """The token endpoint's absolute URL: what every assertion's `aud` must be."""
    return public_base_url.rstrip("/") + TOKEN_PATH


class TokenRefused(Exception):
    """An RFC 6749 error response: `error` (invalid_request, invalid_client, invalid_scope,
    unsupported_grant_type), `description` (for the client's developers; no secret in it)
    and the HTTP status."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def as_json(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def _invalid_client(description: str) -> TokenRefused:
    return TokenRefused("invalid_client", description, status=401)


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str
    client_id: str

    def as_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }


def _single(form: Mapping[str, Sequence[str]], name: str, *, required: bool = True) -> str:
    values = form.get(name, [])
    if len(values) > 1:  # RFC 6749 section 3.2: no parameter more than once
        raise TokenRefused("invalid_request", f"{name} is given more than once")
    value = values[0].strip() if values else ""
    if required and not value:
        raise TokenRefused("invalid_request", f"{name} is required")
    return value


@dataclass(frozen=True)
class _Assertion:
    """What an assertion says before it is verified: only used to find the client's key."""

    alg: str
    kid: str
    jku: str | None
    issuer: str


def _read_unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of the assertion, not verified yet."""
    if len(assertion) > MAX_ASSERTION_CHARS:
        raise _invalid_client("client_assertion is too long")
    try:
        compact = jws.extract_compact(assertion.encode())
        header = dict(compact.headers())
        claims = json.loads(compact.payload)
    except (JoseError, ValueError, TypeError):
        raise _invalid_client("client_assertion is not a signed JWT (JWS compact form)") from None
    if not isinstance(claims, dict) or not isinstance(claims.get("iss"), str):
        raise _invalid_client("the assertion must name the client in iss")
    return header, claims


def _check_header(header: dict[str, Any], issuer: str) -> _Assertion:
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise _invalid_client(f"the assertion's alg must be RS384 or ES384, not {str(alg)[:20]!r}")
    if header.get("typ") not in (None, "JWT", "jwt"):
        raise _invalid_client("the assertion's typ header must be JWT")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _invalid_client("the assertion's header must name its key (kid)")
    jku = header.get("jku")
    return _Assertion(
        alg=str(alg), kid=kid, jku=jku if isinstance(jku, str) else None, issuer=issuer
    )


def _key_from(
    session: Session, key_set: FhirClientKeySet, *, assertion: _Assertion, now: datetime
) -> PublicKey | None:
    """The assertion's key in this set; a URL set is fetched when its copy is stale, or
    when it lacks the key and was not fetched in the last minute. Raises JwksUnavailable."""
    if key_set.jwks_url is None:
        return find_key(key_set.jwks, kid=assertion.kid, alg=assertion.alg)
    age = now - key_set.fetched_at if key_set.fetched_at else None
    key = find_key(key_set.jwks, kid=assertion.kid, alg=assertion.alg)
    fresh = age is not None and age < JWKS_CACHE_FOR
    if key is not None and fresh:
        return key
    if key is None and age is not None and age < JWKS_REFETCH_AFTER:
        return None
    # The copy lives in the database (not in this process), so every copy of the process
    # shares it; a failed fetch leaves the old copy untouched.
    key_set.jwks = fetch_key_set(key_set.jwks_url)
    key_set.fetched_at = now
    session.flush()
    return find_key(key_set.jwks, kid=assertion.kid, alg=assertion.alg)


def _verification_key(
    session: Session, client: FhirClient, *, assertion: _Assertion, now: datetime
) -> PublicKey:
    accepted = [key_set for key_set in reversed(client.key_sets) if key_set.accepted_at(now)]
    urls = {key_set.jwks_url for key_set in accepted if key_set.jwks_url}
    if assertion.jku is not None and assertion.jku not in urls:
        # SMART: a jku header must be a registered JWKS URL; keys are never taken from a
        # URL the assertion itself names.
        raise _invalid_client("the assertion's jku is not the client's registered key set URL")
    unavailable: list[str] = []
    for key_set in accepted:
        try:
            key = _key_from(session, key_set, assertion=assertion, now=now)
        except JwksUnavailable as problem:
            log.warning(
                "FHIR client %s: key set not fetched from its URL: %s", client.client_id, problem
            )
            unavailable.append(str(problem))
            continue
        if key is not None:
            return key
    if unavailable:
        raise _invalid_client(
            f"the client's key set could not be fetched from its registered URL: {unavailable[0]}"
        )
    raise _invalid_client(
        f"the client's registered key set has no {assertion.alg} key with kid "
        f"{assertion.kid[:64]!r}"
    )


def _numeric_date(claims: Mapping[str, Any], name: str, *, required: bool) -> datetime | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid_client(f"the assertion's {name} must be a NumericDate (seconds)")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise _invalid_client(f"the assertion's {name} is out of range") from None


def _check_claims(
    claims: Mapping[str, Any], *, client_id: str, audience: str, now: datetime
) -> tuple[str, datetime]:
    """The assertion's jti and exp, after checking iss, sub, aud and the times."""
    if claims.get("sub") != client_id:
        raise _invalid_client("the assertion's sub must be the client_id (the same as iss)")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in audiences:
        raise _invalid_client(f"the assertion's aud must be this token endpoint, {audience}")
    exp = _numeric_date(claims, "exp", required=True)
    assert exp is not None
    if exp <= now - CLOCK_SKEW:
        raise _invalid_client("the assertion has expired (exp is in the past)")
    if exp > now + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
        raise _invalid_client("the assertion's exp is more than 5 minutes ahead")
    nbf = _numeric_date(claims, "nbf", required=False)
    if nbf is not None and nbf > now + CLOCK_SKEW:
        raise _invalid_client("the assertion is not valid yet (nbf)")
    iat = _numeric_date(claims, "iat", required=False)
    if iat is not None and iat > now + CLOCK_SKEW:
        raise _invalid_client("the assertion's iat is in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
        raise _invalid_client("the assertion needs a unique jti (a string of at most 255)")
    return jti, exp


def _remember_jti(session: Session, client: FhirClient, *, jti: str, exp: datetime) -> bool:
    """Record the jti; False when the client already used it. One statement that both
    databases make atomic (ON CONFLICT DO NOTHING), so two copies of the process racing
    with the same assertion cannot both succeed."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = FhirAssertionJti.__table__
    assert isinstance(table, Table)
    statement = (
        insert(table)
        .values(client_pk=client.id, jti=jti, expires_at=exp + CLOCK_SKEW)
        .on_conflict_do_nothing(index_elements=["client_pk", "jti"])
        .returning(table.c.id)
    )
    return session.execute(statement).first() is not None


def _forget_expired(session: Session, client: FhirClient, *, now: datetime) -> None:
    """Expired jtis can no longer be replayed (their assertion would be refused as
    expired), and expired tokens open nothing: keep the tables small."""
    session.execute(
        delete(FhirAssertionJti).where(
            FhirAssertionJti.client_pk == client.id, FhirAssertionJti.expires_at < now
        )
    )
    session.execute(
        delete(FhirAccessToken).where(
            FhirAccessToken.client_pk == client.id,
            FhirAccessToken.expires_at < now - _TOKEN_ROWS_KEPT,
        )
    )


@dataclass
class _Attempt:
    """Who a token request claims to be, as far as it got: for the audit of a refusal."""

    issuer: str | None = None
    client: FhirClient | None = None

    def actor(self, ip: str | None, user_agent: str | None) -> Actor:
        if self.client is not None:
            return Actor.fhir_client(self.client.client_id, ip, user_agent)
        # Like a failed login's typed name: what the unknown caller claimed to be.
        label = (
            f"unknown FHIR client {self.issuer[:64]!r}" if self.issuer else "unknown FHIR client"
        )
        return Actor(user_id=None, label=label, role=None, ip=ip, user_agent=user_agent)


def _authenticate(
    session: Session,
    *,
    clock: Clock,
    form: Mapping[str, Sequence[str]],
    audience: str,
    attempt: _Attempt,
) -> tuple[FhirClient, ScopeGrant]:
    grant_type = _single(form, "grant_type")
    if grant_type != GRANT_TYPE:
        raise TokenRefused(
            "unsupported_grant_type", "this server supports grant_type=client_credentials only"
        )
    assertion_type = _single(form, "client_assertion_type")
    if assertion_type != CLIENT_ASSERTION_TYPE:
        raise TokenRefused(
            "invalid_request", f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}"
        )
    assertion_text = _single(form, "client_assertion")
    requested_text = _single(form, "scope", required=False)
    named_client = _single(form, "client_id", required=False)
    header, claims = _read_unverified(assertion_text)
    issuer = str(claims["iss"])
    attempt.issuer = issuer
    # Looked up before anything else is checked, so that every refusal of an assertion
    # naming a registered client is in the audit log under that client (as claimed).
    client = session.scalar(select(FhirClient).where(FhirClient.client_id == issuer))
    attempt.client = client
    if named_client and named_client != issuer:
        raise _invalid_client("client_id differs from the assertion's iss")
    assertion = _check_header(header, issuer)
    if client is None:
        raise _invalid_client("unknown client: iss names no registered client")
    if not client.is_enabled:
        raise _invalid_client("this client is disabled")
    now = clock.now()
    key = _verification_key(session, client, assertion=assertion, now=now)
    try:
        verified = jwt.decode(assertion_text, key, algorithms=[assertion.alg])
    except BadSignatureError:
        raise _invalid_client("the assertion's signature does not verify") from None
    except JoseError:
        raise _invalid_client("the assertion could not be verified") from None
    if verified.claims.get("iss") != client.client_id:
        raise _invalid_client("the assertion's iss must be the client_id")
    jti, exp = _check_claims(
        verified.claims, client_id=client.client_id, audience=audience, now=now
    )
    # Only now, with a verified assertion, is anything written for the client.
    _forget_expired(session, client, now=now)
    if not _remember_jti(session, client, jti=jti, exp=exp):
        raise _invalid_client("this assertion was already used (its jti was seen before)")
    if not requested_text:
        raise TokenRefused("invalid_scope", "scope is required, e.g. system/Patient.rs")
    requested, _unknown = parse_scopes(requested_text)
    granted = grant_requested(requested, ScopeGrant.from_text(client.scopes))
    if not granted.scopes:
        raise TokenRefused(
            "invalid_scope",
            "none of the requested scopes is allowed for this client; it may ask for: "
            + client.scopes,
        )
    return client, granted


def issue_token(
    session: Session,
    *,
    clock: Clock,
    form: Mapping[str, Sequence[str]],
    audience: str,
    ip: str | None = None,
    user_agent: str | None = None,
) -> IssuedToken:
    """Answer a token request (`form`: every value of each form field, as sent).

    `audience` is the token endpoint's URL (`token_url(settings.public_base_url)`), which
    the assertion's `aud` must name. Grants the part of the requested scopes the client is
    registered for. Raises TokenRefused (after auditing the refusal)."""
    attempt = _Attempt()
    try:
        client, granted = _authenticate(
            session, clock=clock, form=form, audience=audience, attempt=attempt
        )
    except TokenRefused as refusal:
        record_event(
            session,
            clock=clock,
            actor=attempt.actor(ip, user_agent),
            action="fhir.token",
            outcome=AuditOutcome.DENIED,
            detail={"error": refusal.error, "reason": refusal.description},
        )
        log.info("token refused (%s): %s", refusal.error, refusal.description)
        raise
    now = clock.now()
    token = new_token()
    session.add(
        FhirAccessToken(
            token_hash=token_digest(token),
            client_pk=client.id,
            scopes=granted.text,
            issued_at=now,
            expires_at=now + TOKEN_LIFETIME,
        )
    )
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=Actor.fhir_client(client.client_id, ip, user_agent),
        action="fhir.token",
        target=f"center:{client.center_id}",
        detail={"scope": granted.text},
    )
    return IssuedToken(
        access_token=token,
        expires_in=int(TOKEN_LIFETIME.total_seconds()),
        scope=granted.text,
        client_id=client.client_id,
    )
