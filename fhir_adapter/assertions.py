"""What a treatment center's system does before each token request (SMART Backend
Services): hold a private key (ES384 or RS384), publish its public half, and sign a short
client assertion (RFC 7523) with it. The CLI uses this (`cgt-access fhir demo-client`,
`cgt-access fhir assertion`) so that a center's engineer can try the API with curl before
writing any code; the platform itself only verifies assertions (`fhir_adapter.tokens`)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

# The token endpoint refuses an assertion that expires more than 5 minutes ahead; a minute
# less leaves room for clocks that differ a little.
ASSERTION_LIFETIME = timedelta(minutes=4)
SigningKey = ECKey | RSAKey


class KeyFileProblem(ValueError):
    """A private key file the platform's signing helpers cannot use (the message says why)."""


def generate_key(alg: str = "ES384") -> SigningKey:
    """A new private signing key: EC P-384 for ES384, RSA 3072 bits for RS384. Its `kid`
    is its RFC 7638 thumbprint (the same a key read back from its PEM file gets)."""
    if alg == "ES384":
        key: SigningKey = ECKey.generate_key("P-384", private=True)
    elif alg == "RS384":
        key = RSAKey.generate_key(3072, private=True)
    else:
        raise ValueError(f"unsupported signing algorithm {alg}: use ES384 or RS384")
    key.ensure_kid()
    return key


def algorithm_of(key: SigningKey) -> str:
    return "ES384" if isinstance(key, ECKey) else "RS384"


def private_key_pem(key: SigningKey) -> bytes:
    """The private key as PKCS#8 PEM (what `openssl genpkey` writes)."""
    return key.as_pem(private=True)


def load_private_key(pem: bytes) -> SigningKey:
    """A private key from a PEM file: an EC P-384 key (ES384) or an RSA key of 2048 bits or
    more (RS384), its `kid` its thumbprint. Raises KeyFileProblem."""
    key: SigningKey
    try:
        key = ECKey.import_key(pem)
    except (JoseError, ValueError, TypeError):
        try:
            key = RSAKey.import_key(pem)
        except (JoseError, ValueError, TypeError):
            raise KeyFileProblem(
                "not a PEM private key (make one with: openssl genpkey -algorithm EC "
                "-pkeyopt ec_paramgen_curve:P-384 -out key.pem)"
            ) from None
    if not key.is_private:
        raise KeyFileProblem("this is a public key: the assertion is signed with the private key")
    if isinstance(key, ECKey) and key.curve_name != "P-384":
        raise KeyFileProblem(f"an EC key must be on P-384 for ES384, not {key.curve_name}")
    if isinstance(key, RSAKey) and key.private_key is not None and key.private_key.key_size < 2048:
        raise KeyFileProblem("an RSA key must have at least 2048 bits")
    key.ensure_kid()
    return key


def public_key_set(key: SigningKey) -> dict[str, Any]:
    """The JWK Set holding the key's public half: what the platform registers (pasted, or
    published at the center's JWKS URL)."""
    public = key.as_dict(private=False)
    public.update(alg=algorithm_of(key), use="sig")
    return {"keys": [public]}


def sign_client_assertion(
    key: SigningKey,
    *,
    client_id: str,
    audience: str,
    now: datetime,
    lifetime: timedelta = ASSERTION_LIFETIME,
    jti: str | None = None,
) -> str:
    """A signed client assertion: `iss` = `sub` = the client id, `aud` = the token
    endpoint's URL exactly, `exp` `lifetime` after `now`, a fresh `jti` (a token endpoint
    accepts each once), the key's `kid` in the header."""
    alg = algorithm_of(key)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": int((now + lifetime).timestamp()),
        "jti": jti or str(uuid.uuid4()),
    }
    header = {"alg": alg, "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, claims, key, algorithms=[alg])
