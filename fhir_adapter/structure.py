"""The shape of FHIR JSON, checked in one pass over the parsed JSON before the model parse.

`fhir.resources` is lenient where FHIR's JSON format is not: it turns "yes" and 1 into true,
"12" into 12 and 86400 into a date, accepts null, [] and {} (FHIR forbids empty elements), and
an unknown `resourceType` inside a Bundle makes it raise a KeyError rather than a validation
error. This walk, guided by a schema compiled once from the same R4B models, checks what the
model cannot: JSON types, empty and null values, unknown elements, cardinality, required
elements, one value per choice (`value[x]`), nesting depth, and the codes of required bindings
(`terminology.REQUIRED_BINDINGS`). On the way it collects every Reference and every resource
(the top one, Bundle entries, contained ones) for the reference and rule checks that follow.

It costs a few percent of the model parse: the walk visits each JSON node once and only builds
an expression (`Bundle.entry[3].resource.status`) when it reports an issue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fhir_adapter.errors import Issue
from fhir_adapter.schema import (
    BASE64,
    BOOLEAN,
    COMPLEX,
    DECIMAL,
    INTEGER,
    PRIMITIVE_EXTENSION,
    PRIMITIVE_KINDS,
    RESOURCE,
    STRING,
    ElementSpec,
    Segment,
    TypeSpec,
    fhirpath,
    resource_model,
    type_spec,
)
from fhir_adapter.terminology import ValueSet

_KIND_WORDS = {
    BOOLEAN: "a JSON boolean (true or false)",
    INTEGER: "a JSON number without a fraction",
    DECIMAL: "a JSON number",
    STRING: "a JSON string",
    BASE64: "a JSON string",
    COMPLEX: "a JSON object",
    RESOURCE: "a JSON object (a resource with its resourceType)",
    PRIMITIVE_EXTENSION: "a JSON object (the primitive's id and extensions)",
}
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")
# Far deeper than any real resource (a nested Questionnaire reaches about 20); it keeps a
# hostile body from exhausting Python's recursion in the walk or in the model parse.
MAX_DEPTH = 64
# A body this broken says enough; the rest would only make the OperationOutcome huge.
MAX_ISSUES = 200


@dataclass(slots=True, eq=False)
class FoundResource:
    """A resource met in the walk: the top one, a Bundle entry's, or a contained one."""

    resource_type: str
    data: dict[str, Any]
    path: tuple[Segment, ...]
    contained: dict[str, str]  # id -> resourceType of its contained resources
    bundle: FoundResource | None = None  # the Bundle whose entry this is
    entry: int | None = None  # its index in that Bundle
    container: FoundResource | None = None  # for a contained resource
    errors: int = 0

    @property
    def expression(self) -> str:
        return fhirpath(self.path)


@dataclass(slots=True, eq=False)
class FoundReference:
    """A Reference with a `reference` string, where it is and what it may point at."""

    path: tuple[Segment, ...]  # to the `reference` string itself
    reference: str
    targets: frozenset[str] | None
    resource: FoundResource  # the resource it is written in


class TooManyIssues(Exception):
    """Raised inside the walk to stop it once MAX_ISSUES errors are known."""


@dataclass
class Walk:
    """What one pass over a JSON resource found."""

    issues: list[Issue] = field(default_factory=list)
    resources: list[FoundResource] = field(default_factory=list)
    references: list[FoundReference] = field(default_factory=list)
    # A shape the model parse cannot take safely (an unknown resourceType inside a Bundle
    # makes fhir.resources raise a KeyError; extreme nesting exhausts the stack).
    unparseable: bool = False
    truncated: bool = False


class _Walker:
    def __init__(self) -> None:
        self.found = Walk()
        self.path: list[Segment] = []
        self.stack: list[FoundResource] = []
        self.errors = 0

    def issue(self, code: str, diagnostics: str, *extra: Segment, severity: str = "error") -> None:
        expression = fhirpath([*self.path, *extra])
        self.found.issues.append(
            Issue(code=code, diagnostics=diagnostics, severity=severity, expression=(expression,))
        )
        if severity == "error":
            for resource in self.stack:
                resource.errors += 1
            self.errors += 1
            if self.errors >= MAX_ISSUES:
                raise TooManyIssues

    # --- resources -----------------------------------------------------------------------

    def resource(
        self,
        data: dict[str, Any],
        depth: int,
        *,
        bundle: FoundResource | None = None,
        entry: int | None = None,
        container: FoundResource | None = None,
    ) -> None:
        resource_type = data.get("resourceType")
        if not isinstance(resource_type, str):
            self.found.unparseable = True
            self.issue(
                "required" if resource_type is None else "structure",
                'A resource needs its resourceType, a JSON string such as "Patient"',
                "resourceType",
            )
            return
        model = resource_model(resource_type)
        if model is None:
            self.found.unparseable = True
            self.issue(
                "not-supported",
                f"'{_clip(resource_type, 64)}' is not an R4 resource type",
                "resourceType",
            )
            return
        contained: dict[str, str] = {}
        listed = data.get("contained")
        for item in listed if isinstance(listed, list) else ():
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                contained[item["id"]] = str(item.get("resourceType"))
        found = FoundResource(
            resource_type=resource_type,
            data=data,
            path=tuple(self.path),
            contained=contained,
            bundle=bundle,
            entry=entry,
            container=container,
        )
        if container is None:
            self.found.resources.append(found)
        self.stack.append(found)
        try:
            self.object(data, type_spec(model), depth)
        finally:
            self.stack.pop()

    # --- objects and values --------------------------------------------------------------

    def object(self, data: dict[str, Any], spec: TypeSpec, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.found.unparseable = True
            self.issue("too-costly", f"Nested more than {MAX_DEPTH} levels deep")
            return
        path = self.path
        elements = spec.elements
        seen_choice: dict[str, str] | None = None
        for key, value in data.items():
            element = elements.get(key)
            if element is None:
                if key == "resourceType" and spec.is_resource:
                    continue
                self.unknown(key, spec)
                continue
            if element.choice is not None:
                if seen_choice is None:
                    seen_choice = {}
                other = seen_choice.setdefault(element.choice, key)
                if other != key:
                    self.issue(
                        "structure",
                        f"Only one of {element.choice}[x] may be given: found {other} and {key}",
                        key,
                    )
            path.append(element.name)
            if value is None:
                self.issue("structure", "null is not allowed; leave the element out instead")
            elif element.repeats:
                if type(value) is not list:
                    self.issue("structure", "Must be a JSON array (this element repeats)")
                elif not value:
                    self.issue("structure", "An empty array is not allowed; leave it out")
                else:
                    for index, item in enumerate(value):
                        path.append(index)
                        if item is None:
                            # A primitive array may hold null where its `_x` twin has the
                            # extensions of that item (and the other way round).
                            twin = key[1:] if key.startswith("_") else f"_{key}"
                            if not (
                                element.kind in PRIMITIVE_KINDS
                                or element.kind == PRIMITIVE_EXTENSION
                            ) or not isinstance(data.get(twin), list):
                                self.issue("structure", "null is not allowed in this array")
                        else:
                            self.value(item, element, depth)
                        path.pop()
            elif type(value) is list:
                self.issue("structure", "Must not be an array (this element does not repeat)")
            else:
                self.value(value, element, depth)
            path.pop()
        for element in spec.required:
            if element.key not in data and (
                element.kind not in PRIMITIVE_KINDS or f"_{element.key}" not in data
            ):
                self.issue("required", f"{element.name} is required here", element.name)
        for group, keys in spec.required_choices.items():
            if not any(key in data for key in keys):
                self.issue("required", f"{group}[x] is required here", f"{group}[x]")

    def unknown(self, key: str, spec: TypeSpec) -> None:
        if key == "resourceType":
            self.issue("structure", f"resourceType is not allowed inside a {spec.name}", key)
        elif key == "fhir_comments":
            self.issue(
                "informational",
                "fhir_comments is not part of FHIR R4 JSON; ignored",
                key,
                severity="warning",
            )
        else:
            # Clipped: the name is the client's, and may be anything up to the body's size.
            shown = _clip(key, 64)
            self.issue("structure", f"Unknown element '{shown}' in {spec.name}", shown)

    def value(self, value: Any, element: ElementSpec, depth: int) -> None:
        kind = element.kind
        kind_of_value = type(value)
        if kind in (STRING, BASE64):
            if kind_of_value is not str:
                self.wrong_type(element, value)
            elif not value.strip():
                self.issue("value", "An empty or blank string is not allowed; leave it out")
            elif element.binding is not None and value not in element.binding.codes:
                self.code_not_in(value, element.binding)
            elif kind == BASE64 and not _BASE64.fullmatch(value):
                self.issue("value", "Not base64-encoded data")
        elif kind == COMPLEX:
            if kind_of_value is not dict:
                self.wrong_type(element, value)
            elif not value:
                self.issue("structure", "An empty object is not allowed; leave it out")
            else:
                spec = element.type_spec
                self.object(value, spec, depth + 1)
                if spec.is_reference:
                    self.reference(value, element)
                if element.binding is not None:
                    self.concept(value, element.binding)
        elif kind == BOOLEAN:
            if kind_of_value is not bool:
                self.wrong_type(element, value)
        elif kind == INTEGER:
            if kind_of_value is not int:
                self.wrong_type(element, value)
        elif kind == DECIMAL:
            if kind_of_value is not int and kind_of_value is not float:
                self.wrong_type(element, value)
        elif kind == RESOURCE:
            if kind_of_value is not dict:
                self.wrong_type(element, value)
            elif element.key == "contained":
                container = self.stack[-1] if self.stack else None
                self.resource(value, depth + 1, container=container)
            elif (
                element.key == "resource"
                and self.stack
                and self.stack[-1].resource_type == "Bundle"
            ):
                bundle = self.stack[-1]
                entry = self.path[-2]
                self.resource(
                    value, depth + 1, bundle=bundle, entry=entry if isinstance(entry, int) else 0
                )
            else:
                self.resource(value, depth + 1)
        elif kind == PRIMITIVE_EXTENSION:
            if kind_of_value is not dict:
                self.wrong_type(element, value)
            elif not value:
                self.issue("structure", "An empty object is not allowed; leave it out")
            else:
                self.object(value, element.type_spec, depth + 1)

    def wrong_type(self, element: ElementSpec, value: Any) -> None:
        self.issue("structure", f"Must be {_KIND_WORDS[element.kind]}, not {_json_type(value)}")

    def code_not_in(self, code: str, value_set: ValueSet) -> None:
        self.issue(
            "code-invalid",
            f"'{_clip(code)}' is not in the required value set {value_set.url} "
            f"({value_set.listed()})",
        )

    def concept(self, concept: dict[str, Any], value_set: ValueSet) -> None:
        codings = concept.get("coding")
        matching = 0
        if isinstance(codings, list):
            for index, coding in enumerate(codings):
                if isinstance(coding, dict) and coding.get("system") == value_set.system:
                    matching += 1
                    code = coding.get("code")
                    if isinstance(code, str) and code not in value_set.codes:
                        self.path.extend(("coding", index, "code"))
                        try:
                            self.code_not_in(code, value_set)
                        finally:
                            del self.path[-3:]
        if not matching:
            self.issue(
                "code-invalid",
                f"Needs a coding from {value_set.system} (one of {value_set.listed()})",
                "coding",
            )

    def reference(self, value: dict[str, Any], element: ElementSpec) -> None:
        reference = value.get("reference")
        if isinstance(reference, str) and reference.strip() and self.stack:
            self.found.references.append(
                FoundReference(
                    path=(*self.path, "reference"),
                    reference=reference,
                    targets=element.targets,
                    resource=self.stack[-1],
                )
            )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def walk(data: dict[str, Any], root: str) -> Walk:
    """Check the JSON shape of one resource (and everything in it); `root` is the name its
    expressions start with (its resourceType, or `Parameters.parameter[0].resource`)."""
    walker = _Walker()
    walker.path.append(root)
    try:
        walker.resource(data, 0)
    except TooManyIssues:
        walker.found.truncated = True
    return walker.found
