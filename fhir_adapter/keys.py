"""A client's public keys: checking a JWK Set an admin pastes, checking a JWKS URL, fetching
the set from that URL, and picking the key an assertion names. joserfc reads the keys; no
cryptography is written here."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from core.text import N_

log = logging.getLogger("cgt_access.fhir.keys")

# What SMART Backend Services asks servers to support (and all this server accepts).
ALGORITHMS = ("RS384", "ES384")
_KEY_TYPE_FOR = {"RS384": "RSA", "ES384": "EC"}
MIN_RSA_BITS = 2048
MAX_KEYS = 20
MAX_JWKS_BYTES = 64 * 1024
MAX_URL_LENGTH = 500
# Connecting and reading a center's key set happens inside a token request: keep it short.
FETCH_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
# Members that only a private (or symmetric) key has: such a set was never meant to leave
# the center, and a server holding it could sign as the center.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

PublicKey = RSAKey | ECKey


class KeySetProblem(ValueError):
    """A key set or URL that cannot be used; `message` is for the admin (N_ marked, so the
    portal translates it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JwksUnavailable(Exception):
    """The key set could not be fetched from the client's URL; the message (for the log and
    the client) names the cause without any secret."""


def _modulus_bits(value: object) -> int:
    """The size of an RSA modulus given as base64url (0 when it is not one)."""
    if not isinstance(value, str):
        return 0
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return 0
    return int.from_bytes(raw, "big").bit_length()


def _usable_key(member: dict[str, Any]) -> tuple[PublicKey | None, str | None]:
    """The key, or None and why it cannot verify RS384/ES384 assertions."""
    kty, kid = member.get("kty"), member.get("kid")
    if not isinstance(kid, str) or not kid.strip():
        return None, N_("Every key needs a key id (kid): assertions name their key by it.")
    if member.get("use") not in (None, "sig"):
        return None, N_("The key %(kid)s is not a signing key (use is not sig).", kid=kid)
    if member.get("alg") not in (None, *ALGORITHMS):
        return None, N_(
            "The key %(kid)s is for another algorithm; use RS384 or ES384 keys.", kid=kid
        )
    try:
        if kty == "RSA":
            # Measured before joserfc reads it (which would only warn about a short key).
            if _modulus_bits(member.get("n")) < MIN_RSA_BITS:
                return None, N_("The RSA key %(kid)s is shorter than 2048 bits.", kid=kid)
            return RSAKey.import_key(member), None
        if kty == "EC":
            if member.get("crv") != "P-384":
                return None, N_(
                    "The EC key %(kid)s is not on the P-384 curve that ES384 needs.", kid=kid
                )
            return ECKey.import_key(member), None
    except (JoseError, ValueError, TypeError, KeyError):
        return None, N_("The key %(kid)s is not a valid public key.", kid=kid)
    return None, N_("The key %(kid)s is neither an RSA nor an EC key.", kid=kid)


def public_key_set(document: object, *, strict: bool) -> dict[str, Any]:
    """The JWK Set `document` (a set, or one key) reduced to its usable public keys.

    Raises KeySetProblem when it holds private key material (always: the center must not
    hand its private key to anybody), when it is not a key set, or when no key is usable.
    `strict` (a pasted set) also refuses any unusable key, naming it; a set fetched from a
    URL may carry other keys of the center's, which are left out."""
    if isinstance(document, dict) and "keys" not in document and "kty" in document:
        document = {"keys": [document]}
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySetProblem(N_('This is not a JWK Set: expected {"keys": [...]}.'))
    members = document["keys"]
    if not all(isinstance(member, dict) for member in members):
        raise KeySetProblem(N_('This is not a JWK Set: expected {"keys": [...]}.'))
    if any(_PRIVATE_MEMBERS & member.keys() for member in members):
        raise KeySetProblem(
            N_(
                "This key set contains private key material. Paste only the public keys: "
                "the private key must never leave the center. Make a new key pair, as this "
                "one is no longer secret."
            )
        )
    if len(members) > MAX_KEYS:
        raise KeySetProblem(N_("A key set may hold at most 20 keys."))
    usable: list[dict[str, Any]] = []
    kids: set[str] = set()
    for member in members:
        key, problem = _usable_key(member)
        if key is None:
            if strict:
                raise KeySetProblem(problem or N_("A key cannot be used."))
            continue
        kid = str(member["kid"])
        if kid in kids:
            raise KeySetProblem(N_("Two keys have the key id %(kid)s.", kid=kid))
        kids.add(kid)
        usable.append(key.as_dict(private=False))
    if not usable:
        raise KeySetProblem(N_("The key set has no RS384 (RSA) or ES384 (EC P-384) public key."))
    return {"keys": usable}


def parse_pasted_key_set(text: str) -> dict[str, Any]:
    """A pasted JWK Set, checked strictly (see `public_key_set`). Raises KeySetProblem."""
    if len(text.encode()) > MAX_JWKS_BYTES:
        raise KeySetProblem(N_("The key set is larger than 64 KB."))
    try:
        document = json.loads(text)
    except ValueError:
        raise KeySetProblem(N_("This is not valid JSON.")) from None
    return public_key_set(document, strict=True)


def check_jwks_url(url: str, *, allow_http_loopback: bool) -> str:
    """The URL, trimmed, if keys may be fetched from it. Raises KeySetProblem.

    Only https: the keys decide who may read patients' records. Plain http is accepted
    for localhost alone, and only when `allow_http_loopback` (demo mode, tests)."""
    url = url.strip()
    parts = urlsplit(url)
    if len(url) > MAX_URL_LENGTH:
        raise KeySetProblem(N_("The address is longer than 500 characters."))
    if parts.username is not None or parts.password is not None:
        raise KeySetProblem(N_("The address must not carry a user name or password."))
    try:
        parts.port  # noqa: B018  (a bad port raises here)
    except ValueError:
        raise KeySetProblem(N_("This is not a valid web address.")) from None
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS and allow_http_loopback:
        return url
    raise KeySetProblem(
        N_("Use an https:// address (plain http only for localhost, in demo mode).")
    )


def fetch_key_set(url: str) -> dict[str, Any]:
    """GET the JWK Set at `url` (no redirects, a short timeout, at most 64 KB) and keep its
    usable public keys. Raises JwksUnavailable."""
    try:
        with (
            httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=False) as http,
            http.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise JwksUnavailable(f"the key set URL answered HTTP {response.status_code}")
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksUnavailable("the key set at the URL is larger than 64 KB")
    except httpx.HTTPError as error:
        raise JwksUnavailable(
            f"the key set URL could not be read ({type(error).__name__})"
        ) from None
    try:
        return public_key_set(json.loads(body), strict=False)
    except ValueError as problem:  # KeySetProblem or JSON
        reason = problem.message if isinstance(problem, KeySetProblem) else "not JSON"
        raise JwksUnavailable(f"the key set at the URL cannot be used: {reason}") from None


def find_key(key_set: dict[str, Any] | None, *, kid: str, alg: str) -> PublicKey | None:
    """The key of `key_set` with this `kid`, if it fits `alg` (RSA for RS384, EC P-384 for
    ES384)."""
    for member in (key_set or {}).get("keys", []):
        if member.get("kid") != kid or member.get("kty") != _KEY_TYPE_FOR.get(alg):
            continue
        key, _problem = _usable_key(member)
        if key is not None:
            return key
    return None


def describe_keys(key_set: dict[str, Any] | None) -> list[str]:
    """ "kid (RSA 2048)" / "kid (EC P-384)" for each key, for the admin page."""
    described = []
    for member in (key_set or {}).get("keys", []):
        key, _problem = _usable_key(member)
        if isinstance(key, RSAKey):
            described.append(f"{member['kid']} (RSA {key.public_key.key_size})")
        elif key is not None:
            described.append(f"{member['kid']} (EC {member.get('crv')})")
    return described
