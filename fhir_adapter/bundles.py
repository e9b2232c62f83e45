"""The rules of a Bundle that the models do not check: the R4 invariants bdl-1 to bdl-8 and,
for a transaction or batch, that each entry's request fits its resource (a POST to `Patient`
carries a Patient; a PUT to `Patient/123` carries Patient 123; a GET or DELETE carries none).

They run on the parsed JSON after the structure walk, so every value read here already has
the right JSON type wherever the walk found no error; they still read defensively, because a
broken entry elsewhere does not stop the walk from reaching the Bundle's end.
"""

from __future__ import annotations

import re
from typing import Any

from fhir_adapter.errors import Issue
from fhir_adapter.references import check_full_url
from fhir_adapter.schema import Segment, fhirpath, is_resource_type
from fhir_adapter.structure import FoundResource

_REQUESTS = frozenset({"transaction", "batch"})
_RESPONSES = frozenset({"transaction-response", "batch-response"})
_TYPE_URL = re.compile(r"/?(?P<type>[A-Z][A-Za-z]{0,63})")
_INSTANCE_URL = re.compile(r"/?(?P<type>[A-Z][A-Za-z]{0,63})/(?P<id>[A-Za-z0-9\-.]{1,64})")
_WITH_RESOURCE = frozenset({"POST", "PUT", "PATCH"})
_WITHOUT_RESOURCE = frozenset({"GET", "HEAD", "DELETE"})


def check_bundle(bundle: FoundResource) -> list[Issue]:
    """The invariants of one Bundle (any type) and the requests of a transaction or batch."""
    data = bundle.data
    kind = data.get("type")
    issues: list[Issue] = []

    def issue(code: str, diagnostics: str, *path: Segment) -> None:
        issues.append(
            Issue(code=code, diagnostics=diagnostics, expression=(fhirpath((*bundle.path, *path)),))
        )

    if not isinstance(kind, str):
        return issues  # the walk reported the missing or malformed type
    if "total" in data and kind not in ("searchset", "history"):
        issue("invariant", "total is only for a searchset or history Bundle (bdl-1)", "total")
    entries = data.get("entry")
    seen_full_urls: dict[tuple[str, str | None], int] = {}
    for index, entry in enumerate(entries if isinstance(entries, list) else ()):
        if not isinstance(entry, dict):
            continue
        if "search" in entry and kind != "searchset":
            issue("invariant", "search is only for a searchset (bdl-2)", "entry", index, "search")
        has_request, has_response = "request" in entry, "response" in entry
        if kind in _REQUESTS or kind == "history":
            if not has_request:
                issue("required", f"Each entry of a {kind} needs a request (bdl-3)", "entry", index)
        elif has_request:
            issue("invariant", f"A {kind} entry has no request (bdl-3)", "entry", index, "request")
        if kind in _RESPONSES or kind == "history":
            if not has_response:
                issue(
                    "required", f"Each entry of a {kind} needs a response (bdl-4)", "entry", index
                )
        elif has_response:
            issue(
                "invariant", f"A {kind} entry has no response (bdl-4)", "entry", index, "response"
            )
        if not (has_request or has_response or "resource" in entry):
            issue(
                "invariant",
                "An entry needs a resource, a request or a response (bdl-5)",
                "entry",
                index,
            )
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str):
            problem = check_full_url(full_url)
            if problem:
                issue("value", problem, "entry", index, "fullUrl")
            resource = entry.get("resource")
            version = None
            if isinstance(resource, dict) and isinstance(resource.get("meta"), dict):
                version_id = resource["meta"].get("versionId")
                version = version_id if isinstance(version_id, str) else None
            first = seen_full_urls.setdefault((full_url, version), index)
            if first != index:
                issue(
                    "invariant",
                    f"entry[{first}] has the same fullUrl; fullUrls are unique in a Bundle (bdl-7)",
                    "entry",
                    index,
                    "fullUrl",
                )
        if kind in _REQUESTS and isinstance(entry.get("request"), dict):
            for problem, path in _request_problems(entry):
                issue("invalid", problem, "entry", index, *path)
    return issues


def _request_problems(entry: dict[str, Any]) -> list[tuple[str, tuple[Segment, ...]]]:
    """What is wrong between an entry's request and its resource in a transaction or batch."""
    request: dict[str, Any] = entry["request"]
    method, url = request.get("method"), request.get("url")
    if not isinstance(method, str) or not isinstance(url, str):
        return []  # the walk reported the missing or malformed element
    resource = entry.get("resource")
    problems: list[tuple[str, tuple[Segment, ...]]] = []
    if method in _WITH_RESOURCE and not isinstance(resource, dict):
        problems.append((f"A {method} entry needs a resource", ("resource",)))
    if method in _WITHOUT_RESOURCE and resource is not None:
        problems.append((f"A {method} entry carries no resource", ("resource",)))
    if not isinstance(resource, dict) or not is_resource_type(resource.get("resourceType")):
        return problems  # the walk reported the missing or unknown type
    resource_type, path = resource["resourceType"], url.split("?", 1)[0]
    on_type, on_instance = _TYPE_URL.fullmatch(path), _INSTANCE_URL.fullmatch(path)
    if (
        method == "POST"
        and on_type
        and is_resource_type(on_type["type"])
        and on_type["type"] != resource_type
    ):
        problems.append(
            (
                f"A POST to {on_type['type']} must carry a {on_type['type']}, not a "
                f"{resource_type}",
                ("resource", "resourceType"),
            )
        )
    matched = on_type or on_instance
    if method == "PUT" and matched is not None:
        target = matched["type"]
        if target != resource_type:
            problems.append(
                (
                    f"A PUT to {url[:80]} must carry a {target}, not a {resource_type}",
                    ("resource", "resourceType"),
                )
            )
        elif on_instance and resource.get("id") not in (None, on_instance["id"]):
            problems.append(
                (
                    f"The resource's id must be {on_instance['id']}, the id in request.url",
                    ("resource", "id"),
                )
            )
    return problems
