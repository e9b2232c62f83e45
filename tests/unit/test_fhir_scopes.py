"""SMART system scopes, v1 and v2: what they mean, and what a token request is granted."""

from __future__ import annotations

import pytest

from fhir_adapter.scopes import (
    Interaction,
    ScopeGrant,
    allows,
    canonical_scopes,
    grant_requested,
    parse_scope,
    parse_scopes,
)

C, R, U, D, S = (Interaction(letter) for letter in "cruds")


@pytest.mark.parametrize(
    ("text", "resource_type", "interactions"),
    [
        ("system/Patient.rs", "Patient", {R, S}),
        ("system/Observation.cruds", "Observation", {C, R, U, D, S}),
        ("system/Observation.cud", "Observation", {C, U, D}),
        ("system/*.rs", "*", {R, S}),
        ("system/Patient.read", "Patient", {R, S}),
        ("system/Patient.write", "Patient", {C, U, D}),
        ("system/Patient.*", "Patient", {C, R, U, D, S}),
        ("system/*.read", "*", {R, S}),
    ],
)
def test_v1_and_v2_scopes_mean_resource_type_and_interactions(
    text: str, resource_type: str, interactions: set[Interaction]
) -> None:
    scope = parse_scope(text)
    assert scope is not None
    assert (scope.resource_type, set(scope.interactions)) == (resource_type, interactions)


@pytest.mark.parametrize(
    "text",
    [
        "patient/Patient.rs",  # a backend service acts for no patient
        "user/Patient.rs",
        "system/Patient.sr",  # v2 letters must come in c-r-u-d-s order
        "system/Patient.rr",
        "system/Patient.x",
        "system/Patient.",
        "system/patient.rs",  # resource types are capitalised
        "system/Observation.rs?category=laboratory",  # granular scopes: not supported
        "launch",
        "openid",
        "system/Patient.rs extra",
    ],
)
def test_other_scopes_are_not_understood(text: str) -> None:
    assert parse_scope(text) is None


def test_allows_asks_the_type_or_the_wildcard() -> None:
    grant = ScopeGrant.from_text("system/Patient.rs system/*.c")
    assert allows(grant, "Patient", Interaction.READ)
    assert allows(grant, "Patient", Interaction.CREATE)  # from system/*.c
    assert allows(grant, "Observation", Interaction.CREATE)
    assert not allows(grant, "Observation", Interaction.READ)
    assert not allows(grant, "Patient", Interaction.DELETE)
    assert not allows(ScopeGrant.from_text(""), "Patient", Interaction.READ)


def test_canonical_scopes_merge_each_type_once() -> None:
    parsed, unknown = parse_scopes(
        "system/Patient.r system/Patient.s system/Observation.write system/*.r nonsense"
    )
    assert unknown == ["nonsense"]
    assert canonical_scopes(parsed) == "system/*.r system/Observation.cud system/Patient.rs"


@pytest.mark.parametrize(
    ("allowed", "requested", "granted"),
    [
        # Asked and allowed: granted as written, v1 stays v1.
        ("system/Patient.rs", "system/Patient.read", "system/Patient.read"),
        ("system/Patient.rs", "system/Patient.rs", "system/Patient.rs"),
        # Part of what was asked.
        ("system/Patient.rs", "system/Patient.cruds", "system/Patient.rs"),
        ("system/Patient.r", "system/Patient.read", "system/Patient.r"),
        # Several, some refused.
        (
            "system/Patient.rs system/Observation.cruds",
            "system/Patient.rs system/Observation.c system/Encounter.rs",
            "system/Patient.rs system/Observation.c",
        ),
        # A wildcard request against specific registrations, and the reverse.
        (
            "system/Patient.rs system/Observation.cruds",
            "system/*.rs",
            "system/Patient.rs system/Observation.rs",
        ),
        ("system/*.rs", "system/Observation.cruds", "system/Observation.rs"),
        (
            "system/*.rs system/Observation.c",
            "system/*.cruds",
            "system/*.rs system/Observation.crs",
        ),
        # Nothing in common.
        ("system/Patient.rs", "system/Observation.rs", ""),
        ("system/Patient.rs", "system/Patient.cud", ""),
    ],
)
def test_grants_are_the_intersection(allowed: str, requested: str, granted: str) -> None:
    result = grant_requested(parse_scopes(requested)[0], ScopeGrant.from_text(allowed))
    assert result.text == granted
    for scope in result.scopes:  # never more than the registration allows
        for interaction in scope.interactions:
            target = "Anything" if scope.resource_type == "*" else scope.resource_type
            assert allows(ScopeGrant.from_text(allowed), target, interaction)
