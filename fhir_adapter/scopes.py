"""SMART system scopes: what a backend service may do to which resource types.

SMART v2 (`system/Observation.cruds`, `system/Patient.rs`, `system/*.rs`: the letters are
create, read, update, delete, search, in that order) and v1 (`system/Patient.read` = r+s,
`.write` = c+u+d, `.*` = all) both parse into a resource type and a set of interactions.
Only `system/` scopes exist for a backend service: `patient/` and `user/` scopes, v2 query
suffixes (`?category=...`) and anything else are not understood, so never granted.

The FHIR routes ask one question: `allows(grant, "Observation", Interaction.CREATE)`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass


class Interaction(enum.StrEnum):
    """A SMART v2 permission letter, i.e. one kind of FHIR interaction."""

    CREATE = "c"
    READ = "r"
    UPDATE = "u"
    DELETE = "d"
    SEARCH = "s"

    @property
    def action(self) -> str:
        """The word used in audit actions (`fhir.read`, `fhir.create`, ...)."""
        return self.name.lower()


# The order SMART v2 requires the letters in.
LETTERS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": LETTERS}
_SCOPE = re.compile(r"^system/(\*|[A-Z][A-Za-z]{0,63})\.([a-z*]+)$")

# Resource types offered on the admin page (the wildcard first). A scope may name any
# resource type; these are the ones the platform exchanges with treatment centers.
RESOURCE_TYPES = (
    "*",
    "Patient",
    "RelatedPerson",
    "Procedure",
    "MedicationAdministration",
    "Observation",
    "Encounter",
    "Condition",
    "Appointment",
    "CarePlan",
    "QuestionnaireResponse",
    "Group",
)


def _letters_in_order(text: str) -> bool:
    """True for a non-empty subsequence of "cruds" (each letter once, in order)."""
    position = 0
    for letter in text:
        found = LETTERS.find(letter, position)
        if found < 0:
            return False
        position = found + 1
    return bool(text)


@dataclass(frozen=True)
class Scope:
    """One system scope: a resource type (`*` for all) and what may be done to it.
    `text` is how it was written (v1 or v2); `canonical` is its SMART v2 form."""

    resource_type: str
    interactions: frozenset[Interaction]
    text: str

    @property
    def canonical(self) -> str:
        letters = "".join(letter for letter in LETTERS if Interaction(letter) in self.interactions)
        return f"system/{self.resource_type}.{letters}"

    def covers(self, resource_type: str) -> bool:
        return self.resource_type in ("*", resource_type)


def make_scope(resource_type: str, interactions: Iterable[Interaction]) -> Scope:
    chosen = frozenset(interactions)
    letters = "".join(letter for letter in LETTERS if Interaction(letter) in chosen)
    return Scope(resource_type, chosen, f"system/{resource_type}.{letters}")


def parse_scope(text: str) -> Scope | None:
    """The scope `text` means, or None when it is not a system scope we understand."""
    match = _SCOPE.match(text)
    if match is None:
        return None
    resource_type, permissions = match.groups()
    if permissions in _V1:
        letters = _V1[permissions]
    elif _letters_in_order(permissions):
        letters = permissions
    else:
        return None
    return Scope(resource_type, frozenset(Interaction(letter) for letter in letters), text)


def parse_scopes(text: str) -> tuple[list[Scope], list[str]]:
    """The scopes of a space-separated list, and the words that are not scopes we know."""
    understood: list[Scope] = []
    unknown: list[str] = []
    for word in text.split():
        scope = parse_scope(word)
        if scope is None:
            unknown.append(word)
        elif scope not in understood:
            understood.append(scope)
    return understood, unknown


def canonical_scopes(scopes: Iterable[Scope]) -> str:
    """One canonical v2 scope per resource type (interactions merged), sorted, the
    wildcard first: the form a client's allowed scopes are stored in."""
    merged: dict[str, set[Interaction]] = {}
    for scope in scopes:
        merged.setdefault(scope.resource_type, set()).update(scope.interactions)
    ordered = sorted(merged, key=lambda name: (name != "*", name))
    return " ".join(make_scope(name, merged[name]).canonical for name in ordered if merged[name])


@dataclass(frozen=True)
class ScopeGrant:
    """What a token (or a client's registration) allows."""

    scopes: tuple[Scope, ...]

    @classmethod
    def from_text(cls, text: str) -> ScopeGrant:
        return cls(tuple(parse_scopes(text)[0]))

    @property
    def text(self) -> str:
        return " ".join(scope.text for scope in self.scopes)

    def interactions_for(self, resource_type: str) -> frozenset[Interaction]:
        allowed: set[Interaction] = set()
        for scope in self.scopes:
            if scope.covers(resource_type):
                allowed |= scope.interactions
        return frozenset(allowed)

    def allows(self, resource_type: str, interaction: Interaction) -> bool:
        return interaction in self.interactions_for(resource_type)


def allows(grant: ScopeGrant, resource_type: str, interaction: Interaction) -> bool:
    """True when `grant` lets its holder do `interaction` on resources of `resource_type`."""
    return grant.allows(resource_type, interaction)


def grant_requested(requested: Iterable[Scope], allowed: ScopeGrant) -> ScopeGrant:
    """The part of each requested scope that the client's registration allows.

    A request the registration fully allows is granted as written (v1 stays v1); a part of
    it becomes the canonical v2 scope of that part; a wildcard request against specific
    registrations grants each registered type it covers."""
    granted: list[Scope] = []

    def add(scope: Scope) -> None:
        if scope.interactions and scope not in granted:
            granted.append(scope)

    for scope in requested:
        if scope.resource_type != "*":
            part = scope.interactions & allowed.interactions_for(scope.resource_type)
            add(scope if part == scope.interactions else make_scope(scope.resource_type, part))
            continue
        wildcard = scope.interactions & allowed.interactions_for("*")
        add(scope if wildcard == scope.interactions else make_scope("*", wildcard))
        for registered in allowed.scopes:
            if registered.resource_type == "*":
                continue
            part = (scope.interactions & registered.interactions) - wildcard
            if part:
                add(make_scope(registered.resource_type, part | wildcard))
    return ScopeGrant(tuple(granted))


def supported_scopes() -> list[str]:
    """What the discovery document lists as `scopes_supported`."""
    names = [f"system/{name}.{letters}" for name in RESOURCE_TYPES for letters in ("rs", "cruds")]
    return [*names, "system/*.read", "system/*.write"]
