"""Hypothesis strategies for broken FHIR input: any JSON, public examples with elements
replaced, removed or added, and transactions or batches built from them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

from tests.support.fhir_examples import Example, all_examples

A_URN = "urn:uuid:3f2b9c1e-5c1a-4f5e-9a7e-2d4b6c8e0f11"

JSON_KEYS = st.sampled_from(
    [
        "resourceType",
        "id",
        "status",
        "gender",
        "birthDate",
        "active",
        "name",
        "family",
        "entry",
        "resource",
        "request",
        "method",
        "url",
        "fullUrl",
        "type",
        "reference",
        "subject",
        "code",
        "coding",
        "system",
        "value",
        "valueQuantity",
        "unit",
        "contained",
        "extension",
        "_birthDate",
        "component",
        "telecom",
        "clinicalStatus",
        "total",
    ]
) | st.text(max_size=8)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["Patient", "Bundle", "Observation", "transaction", "POST", "final", "x", ""])
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(JSON_KEYS, children, max_size=5)
    ),
    max_leaves=25,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from _paths(item, (*prefix, index))


@st.composite
def broken_examples(draw: st.DrawFn) -> dict[str, Any]:
    """A public example with a few of its elements replaced, removed, or added to."""
    resource = draw(st.sampled_from(all_examples())).copy()
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(resource))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = resource
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(JSON_KEYS)] = draw(JSON_VALUES)
    return resource


@st.composite
def broken_bundles(draw: st.DrawFn) -> dict[str, Any]:
    """Transactions and batches whose entries are examples, broken or not, with requests and
    fullUrls of any shape."""
    entries = []
    for _ in range(draw(st.integers(0, 4))):
        entry: dict[str, Any] = {}
        if draw(st.booleans()):
            entry["resource"] = draw(
                broken_examples() | st.sampled_from(all_examples()).map(Example.copy)
            )
        if draw(st.booleans()):
            entry["fullUrl"] = draw(st.sampled_from([A_URN, "urn:uuid:x", "Patient/1", 5]))
        entry["request"] = {
            "method": draw(st.sampled_from(["POST", "PUT", "GET", "DELETE", "FETCH", 5, None])),
            "url": draw(
                st.sampled_from(["Patient", "Patient/1", "Observation", "", "Patient?x=1", 3])
            ),
        }
        entries.append(entry)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": draw(st.sampled_from(["transaction", "batch", "collection", "bogus"])),
    }
    if entries:
        bundle["entry"] = entries
    return bundle
