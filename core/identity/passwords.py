"""Password hashing (Argon2id) and the rules a new password must meet."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from core.text import N_

# Argon2id with RFC 9106's second recommended (low-memory) parameters: 64 MiB, 3 passes.
PRODUCTION_HASHER = PasswordHasher()
_hasher = PRODUCTION_HASHER
# Verified against when the login is unknown, so both paths cost the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def use_hasher(hasher: PasswordHasher) -> None:
    """Hash and verify with `hasher`'s parameters from now on. Only the test suite calls
    this (cheap parameters: thousands of logins at the real cost take minutes); hashes made
    with other parameters still verify, and `needs_rehash` says they differ."""
    global _hasher, _DUMMY_HASH
    _hasher = hasher
    _DUMMY_HASH = hasher.hash(secrets.token_urlsafe(16))


MIN_PASSWORD_LENGTH = 10
_COMMON = {
    "password12",
    "1234567890",
    "qwertyuiop",
    "password123",
    "iloveyou12",
    "0987654321",
    "abcdefghij",
    "passw0rd12",
    "sicklecell",
    "123456789a",
}


class WeakPassword(ValueError):
    """The new password is refused; the message says why in words a person understands."""


def check_new_password(password: str, *, login: str | None = None) -> None:
    """Raise WeakPassword unless `password` is long enough and not trivially guessable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(N_("Use at least 10 characters."))
    if len(password) > 256:
        raise WeakPassword(N_("Use at most 256 characters."))
    lowered = password.lower()
    if lowered in _COMMON or len(set(lowered)) < 4:
        raise WeakPassword(N_("This password is too easy to guess. Try a short sentence."))
    if login and login.lower() in lowered:
        raise WeakPassword(N_("Do not put your username in your password."))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """True when `password` matches; always spends the time of one Argon2 verification."""
    if password_hash is None:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_DUMMY_HASH, password)
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def new_token() -> str:
    """A URL-safe random token with 256 bits of entropy."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the database keeps of a token: its SHA-256, so a leaked table opens nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


def digests_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)
