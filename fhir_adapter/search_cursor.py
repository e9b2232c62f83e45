"""The paging links of searches: an opaque `_cursor` that carries the whole search (its
parameters, the snapshot it reads and where the page starts), encrypted and authenticated.

Why encrypted: a search's values (a name, a Medicaid ID, a birth date) and a page's position
(an observation's date) are PHI, and paging links travel in URLs, which proxies and servers
log. AES-GCM with a key derived from `SECRET_KEY` keeps them unreadable, and its tag refuses
any cursor this server did not write. The center the search ran for is authenticated data:
a cursor replayed by another center's client does not open (400), and even a cursor that
opened is only ever applied inside the caller's center (it narrows a query that is already
scoped, never widens it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fhir_adapter.errors import FhirError

_PURPOSE = b"cgt-access fhir search cursor v1"
_NONCE_BYTES = 12
# A cursor longer than this was not written by us (URLs stay well under 8 KB).
MAX_CURSOR_CHARS = 6000


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _PURPOSE, hashlib.sha256).digest()


def seal(payload: dict[str, Any], *, secret: str, bound_to: str) -> str:
    """The cursor for `payload` (JSON-able), opened only with the same secret and `bound_to`
    (the caller's center and what the search is of)."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(_key(secret)).encrypt(nonce, orjson.dumps(payload), bound_to.encode())
    return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()


def open_cursor(cursor: str, *, secret: str, bound_to: str) -> dict[str, Any]:
    """The payload of a cursor this server wrote for the same center and search; 400 for
    anything else (a forged or altered cursor, another center's, one from before a change
    of SECRET_KEY), in words that say what to do."""
    refused = FhirError.single(
        400,
        "invalid",
        "_cursor: this paging link is not valid here (it was altered, belongs to another "
        "search or client, or the server's key changed); run the search again",
    )
    if len(cursor) > MAX_CURSOR_CHARS:
        raise refused
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, TypeError):
        raise refused from None
    if len(raw) <= _NONCE_BYTES:
        raise refused
    try:
        opened = AESGCM(_key(secret)).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], bound_to.encode()
        )
        payload = orjson.loads(opened)
    except (InvalidTag, orjson.JSONDecodeError):
        raise refused from None
    if not isinstance(payload, dict):
        raise refused
    return payload
