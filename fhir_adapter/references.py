"""References: does each `Reference.reference` point at something, and at something allowed?

Resolution follows FHIR's rules for Bundles (R4 bundle.html#references): an absolute URL or a
`urn:uuid:`/`urn:oid:` matches an entry's `fullUrl`; a relative `Type/id` matches an entry
whose fullUrl ends in it (resolved against the referring entry's base when that is a RESTful
URL), or a PUT to `Type/id`, or an entry resource of that type and id. `#id` points at a
contained resource of the same resource (`#` alone at the container itself).

What is not in the request is the caller's business: a relative reference (or an absolute one
on our own base) that the Bundle does not hold goes to the `ReferenceResolver` the caller
supplies, all at once, so that the mapping layer answers with one query which of them are the
client's own resources. Without a resolver such references are not judged (a standalone
`$validate` cannot know them). A `urn:` reference resolves only inside its Bundle: a dangling one
in a Bundle is an error; in a resource sent alone it is a warning (it may be valid where it came
from; the mapping layer refuses it if it needs the target). References to other servers are
left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from fhir_adapter.errors import Issue
from fhir_adapter.schema import fhirpath, is_resource_type, resource_types
from fhir_adapter.structure import FoundReference, FoundResource, Walk

_RELATIVE = re.compile(
    r"(?P<type>[A-Z][A-Za-z]{0,63})/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_CONDITIONAL = re.compile(r"(?P<type>[A-Z][A-Za-z]{0,63})\?\S+")
_RESTFUL_TAIL = re.compile(
    r"(?P<base>.*)/(?P<type>[A-Z][A-Za-z]{0,63})/(?P<id>[A-Za-z0-9\-.]{1,64})"
)
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_UUID = re.compile(
    r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


@dataclass(frozen=True, slots=True)
class LocalReference:
    """A reference to a resource on this server, such as `Patient/123`."""

    resource_type: str
    id: str

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.id}"


ReferenceResolver = Callable[[frozenset[LocalReference]], Collection[LocalReference]]
"""Given the references to this server that the request itself does not hold, returns those
the client may point at (its own resources); every other one is refused."""


@dataclass
class _Entries:
    """One Bundle's entries, indexed for resolution."""

    kind: str | None  # Bundle.type
    full_urls: dict[str, str | None] = field(default_factory=dict)  # fullUrl -> resourceType
    type_ids: dict[tuple[str, str], str] = field(default_factory=dict)  # (type, id) -> type
    bases: dict[int, str] = field(default_factory=dict)  # entry index -> its RESTful base

    @classmethod
    def of(cls, bundle: dict[str, Any]) -> _Entries:
        kind = bundle.get("type")
        entries = cls(kind=kind if isinstance(kind, str) else None)
        raw_entries = bundle.get("entry")
        for index, entry in enumerate(raw_entries if isinstance(raw_entries, list) else ()):
            if not isinstance(entry, dict):
                continue
            resource = entry.get("resource")
            resource = resource if isinstance(resource, dict) else {}
            resource_type = resource.get("resourceType")
            # An entry of an unknown type is reported once, not again by each reference to it.
            resource_type = resource_type if is_resource_type(resource_type) else None
            resource_id = resource.get("id")
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str):
                entries.full_urls[full_url] = resource_type
                tail = _RESTFUL_TAIL.fullmatch(full_url)
                if tail:
                    entries.bases[index] = tail["base"]
                    entries.type_ids[(tail["type"], tail["id"])] = tail["type"]
            elif resource_type is not None and isinstance(resource_id, str):
                entries.type_ids[(resource_type, resource_id)] = resource_type
            request = entry.get("request")
            if isinstance(request, dict) and request.get("method") == "PUT":
                url = request.get("url")
                target = _RELATIVE.fullmatch(url) if isinstance(url, str) else None
                if target:
                    entries.type_ids[(target["type"], target["id"])] = target["type"]
        return entries


@dataclass
class _Outcome:
    issues: list[Issue] = field(default_factory=list)
    # Issues from the caller's resolver: the request is well-formed, this server refuses it.
    refused: list[Issue] = field(default_factory=list)


def check_references(
    found: Walk,
    *,
    resolve: ReferenceResolver | None = None,
    local_base: str | None = None,
) -> tuple[list[Issue], list[Issue]]:
    """Resolve every reference the walk met. Returns (content issues, refusals): the first
    are errors in the request itself (a dangling `urn:uuid`, a reference to a type the
    element does not allow), the second what the resolver did not accept."""
    outcome = _Outcome()
    indexes: dict[int, _Entries] = {}
    unresolved: dict[LocalReference, list[FoundReference]] = {}
    for reference in found.references:
        holder = _outermost(reference.resource)
        bundle = holder.bundle
        entries = None
        if bundle is not None:
            entries = indexes.get(id(bundle))
            if entries is None:
                entries = indexes[id(bundle)] = _Entries.of(bundle.data)
        target = _resolve(reference, holder, entries, local_base, outcome, unresolved)
        if target is not None and reference.targets is not None and target not in reference.targets:
            _error(
                outcome,
                reference,
                "invalid",
                f"A reference to a {target} is not allowed here; it must point at "
                f"{_one_of(reference.targets)}",
            )
    if resolve is not None and unresolved:
        accepted = set(resolve(frozenset(unresolved)))
        for local, references in unresolved.items():
            if local in accepted:
                continue
            for reference in references:
                issue = Issue(
                    code="not-found",
                    diagnostics=(
                        f"{local} is not in this request and is not one of your resources"
                    ),
                    expression=(fhirpath(reference.path),),
                )
                outcome.refused.append(issue)
                _mark(reference.resource)
    return outcome.issues, outcome.refused


def _resolve(
    reference: FoundReference,
    holder: FoundResource,
    entries: _Entries | None,
    local_base: str | None,
    outcome: _Outcome,
    unresolved: dict[LocalReference, list[FoundReference]],
) -> str | None:
    """The resource type the reference points at, when it can be told; records issues."""
    text = reference.reference
    shown = text if len(text) <= 100 else text[:99] + "…"
    if text.startswith("#"):
        local_id = text[1:]
        if not local_id:
            return holder.resource_type
        if local_id in holder.contained:
            return holder.contained[local_id]
        _error(outcome, reference, "not-found", f"No contained resource has the id '{shown[1:]}'")
        return None
    if text.startswith(("urn:uuid:", "urn:oid:")):
        if entries is not None and entries.kind == "batch":
            _error(
                outcome,
                reference,
                "not-found",
                f"{shown}: the entries of a batch are processed independently and cannot "
                "point at each other; send a transaction instead",
            )
            return None
        if entries is None:
            # Outside a Bundle it points nowhere the server can follow; whoever needs the
            # target (the mapping of Observation.subject) refuses it then.
            _warning(outcome, reference, f"{shown} can only be resolved inside a Bundle")
            return None
        if text in entries.full_urls:
            return entries.full_urls[text]
        _error(
            outcome,
            reference,
            "not-found",
            f"{shown} is not the fullUrl of any entry in this Bundle",
        )
        return None
    if _ABSOLUTE.match(text):
        if entries is not None and entries.kind != "batch" and text in entries.full_urls:
            return entries.full_urls[text]
        if local_base and text.startswith(local_base + "/"):
            text = text[len(local_base) + 1 :]
        else:
            tail = _RESTFUL_TAIL.fullmatch(text.split("/_history/")[0])
            return tail["type"] if tail and tail["type"] in resource_types() else None
    conditional = _CONDITIONAL.fullmatch(text)
    if conditional:
        if not _known_type(outcome, reference, conditional["type"]):
            return None
        if entries is None or entries.kind not in ("transaction", "batch"):
            _warning(
                outcome,
                reference,
                "Conditional references are resolved only inside a transaction or batch; "
                "this one is kept as written",
            )
        return conditional["type"]
    relative = _RELATIVE.fullmatch(text)
    if relative is None:
        _error(
            outcome,
            reference,
            "invalid",
            f"'{shown}' is not a reference: use Type/id, an absolute URL, urn:uuid:..., "
            "or #id for a contained resource",
        )
        return None
    resource_type, resource_id = relative["type"], relative["id"]
    if not _known_type(outcome, reference, resource_type):
        return None
    if entries is not None and entries.kind != "batch":
        base = entries.bases.get(holder.entry) if holder.entry is not None else None
        if base is not None and f"{base}/{resource_type}/{resource_id}" in entries.full_urls:
            return resource_type
        if (resource_type, resource_id) in entries.type_ids:
            return resource_type
    unresolved.setdefault(LocalReference(resource_type, resource_id), []).append(reference)
    return resource_type


def check_full_url(full_url: str) -> str | None:
    """Why a Bundle entry's fullUrl is not acceptable, or None when it is."""
    if full_url.startswith("urn:uuid:") and not _UUID.fullmatch(full_url):
        return f"'{full_url[:80]}' is not a urn:uuid: followed by a UUID"
    if "/_history/" in full_url:
        return "A fullUrl cannot be a version-specific reference (bdl-8)"
    return None


def _outermost(resource: FoundResource) -> FoundResource:
    while resource.container is not None:
        resource = resource.container
    return resource


def _known_type(outcome: _Outcome, reference: FoundReference, resource_type: str) -> bool:
    if resource_type in resource_types():
        return True
    _error(outcome, reference, "invalid", f"'{resource_type}' is not an R4 resource type")
    return False


def _mark(resource: FoundResource | None) -> None:
    while resource is not None:
        resource.errors += 1
        resource = resource.container or resource.bundle


def _error(outcome: _Outcome, reference: FoundReference, code: str, diagnostics: str) -> None:
    outcome.issues.append(
        Issue(code=code, diagnostics=diagnostics, expression=(fhirpath(reference.path),))
    )
    _mark(reference.resource)


def _warning(outcome: _Outcome, reference: FoundReference, diagnostics: str) -> None:
    outcome.issues.append(
        Issue(
            code="informational",
            diagnostics=diagnostics,
            severity="warning",
            expression=(fhirpath(reference.path),),
        )
    )


def _one_of(types: frozenset[str]) -> str:
    ordered = sorted(types)
    return ordered[0] if len(ordered) == 1 else ", ".join(ordered[:-1]) + " or " + ordered[-1]
