"""Passwords: the rules a new one must meet (in words a person understands), Argon2id
hashing, and the digests that are all the database keeps of tokens."""

from __future__ import annotations

import re

import pytest
from argon2 import PasswordHasher

from core.identity.passwords import (
    MIN_PASSWORD_LENGTH,
    PRODUCTION_HASHER,
    WeakPassword,
    check_new_password,
    digests_match,
    hash_password,
    needs_rehash,
    new_token,
    token_digest,
    verify_password,
)


def refusal(password: str, login: str | None = None) -> str:
    with pytest.raises(WeakPassword) as caught:
        check_new_password(password, login=login)
    return str(caught.value)


@pytest.mark.parametrize("password", ["", "short", "nine char"])
def test_short_passwords_are_refused_with_the_minimum(password: str) -> None:
    assert refusal(password) == "Use at least 10 characters."
    assert MIN_PASSWORD_LENGTH == 10


def test_ten_characters_are_enough_when_varied() -> None:
    check_new_password("river-boat")


def test_very_long_passwords_are_refused() -> None:
    assert refusal("correct horse battery staple " * 9) == "Use at most 256 characters."


@pytest.mark.parametrize(
    "password",
    ["password123", "PASSWORD123", "1234567890", "qwertyuiop", "SickleCell", "Passw0rd12"],
)
def test_common_passwords_are_refused_whatever_the_case(password: str) -> None:
    assert "too easy to guess" in refusal(password)


@pytest.mark.parametrize("password", ["aaaaaaaaaaaa", "abababababab", "abcabcabcabc", "1111122222"])
def test_passwords_with_fewer_than_four_different_characters_are_refused(password: str) -> None:
    assert refusal(password) == "This password is too easy to guess. Try a short sentence."


@pytest.mark.parametrize("password", ["maya-rocks-2026", "MAYA-ROCKS-2026", "i am Maya here"])
def test_the_username_inside_the_password_is_refused(password: str) -> None:
    assert refusal(password, login="maya") == "Do not put your username in your password."


def test_a_good_sentence_passes_for_its_owner() -> None:
    check_new_password("my bike is green and fast", login="maya")


def test_weak_password_is_a_value_error_for_form_handling() -> None:
    assert issubclass(WeakPassword, ValueError)


def test_a_hash_verifies_its_password_and_nothing_else() -> None:
    password = "blue kites over the bay"
    stored = hash_password(password)
    assert stored.startswith("$argon2id$")
    assert password not in stored
    assert verify_password(password, stored)
    assert not verify_password("blue kites over the Bay", stored)
    assert not verify_password("", stored)


def test_the_same_password_hashes_differently_each_time() -> None:
    first, second = hash_password("same words again"), hash_password("same words again")
    assert first != second
    assert verify_password("same words again", first)
    assert verify_password("same words again", second)


def test_no_hash_and_broken_hashes_never_verify() -> None:
    assert not verify_password("anything at all", None)
    assert not verify_password("anything at all", "not-a-hash")
    assert not verify_password("anything at all", "$argon2id$v=19$m=1,t=1,p=1$broken")


def test_hashes_made_with_weaker_parameters_are_flagged_for_rehash() -> None:
    assert not needs_rehash(hash_password("current parameters"))
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("old parameters")
    assert needs_rehash(weak)
    assert verify_password("old parameters", weak)


def test_production_hashes_use_rfc_9106_parameters_and_verify_here() -> None:
    """The suite hashes cheaply (tests/conftest.py); what the platform runs with is this."""
    assert (PRODUCTION_HASHER.time_cost, PRODUCTION_HASHER.memory_cost) == (3, 65536)
    assert PRODUCTION_HASHER.parallelism == 4
    stored = PRODUCTION_HASHER.hash("a sentence from before")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert verify_password("a sentence from before", stored)


def test_tokens_are_long_url_safe_and_unique() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)


def test_a_token_digest_is_its_sha256_and_reveals_nothing() -> None:
    token = new_token()
    digest = token_digest(token)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == token_digest(token)
    assert token not in digest
    assert digest != token_digest(new_token())
    assert token_digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_digests_are_compared_exactly() -> None:
    digest = token_digest("one")
    assert digests_match(digest, token_digest("one"))
    assert not digests_match(digest, token_digest("two"))
    assert not digests_match(digest, digest[:-1])
