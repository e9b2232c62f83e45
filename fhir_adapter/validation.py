"""Validating a FHIR resource as a treatment center sends it: the one entry point for `$validate`,
create, update and transactions.

`validate_resource(json)` checks, in this order and all in one call:

1. the JSON shape (`structure.walk`): JSON types, null/empty values, unknown elements,
   cardinality, required elements, one value per choice, and the codes of the required
   bindings the platform relies on (`terminology.REQUIRED_BINDINGS`);
2. the model parse into `fhir.resources` R4B (formats of dates, ids, decimals...), its errors
   translated into issues with FHIRPath expressions
   (`Observation.component[0].valueQuantity.value`);
3. Bundle invariants and transaction requests (`bundles.check_bundle`);
4. references (`references.check_references`): inside the Bundle, to contained resources, and
   through the caller's resolver to the client's own resources;
5. rules the caller passes (`RuleSet`: per resource type, plain functions returning issues),
   run on each resource (the top one and, for a Bundle, each entry's) that has no error so far.
   The platform's own rules (units of the measures it maps, `units.measure_units`) are in
   `DEFAULT_RULES`; the mapping layer adds its business rules (a known therapy, a patient the
   center owns, a value in range) the same way.

The result carries the model (when the content is valid), every issue (errors and warnings)
and the HTTP status a refusal gets: 400 for content that is not valid FHIR, 422 when valid
FHIR breaks this server's rules (a rule or the resolver said no).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fhir.resources.R4B.bundle import BundleEntry
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydantic import TypeAdapter, ValidationError

from fhir_adapter.bundles import check_bundle
from fhir_adapter.errors import FhirError, Issue, operation_outcome
from fhir_adapter.references import LocalReference, ReferenceResolver, check_references
from fhir_adapter.rules import ResourceAt, Rule, RuleSet
from fhir_adapter.schema import Segment, fhirpath, resource_model
from fhir_adapter.structure import FoundResource, walk
from fhir_adapter.units import measure_units

__all__ = [
    "DEFAULT_RULES",
    "LocalReference",
    "ReferenceResolver",
    "ResourceAt",
    "Rule",
    "RuleSet",
    "ValidationResult",
    "parse_resource",
    "validate_resource",
]

log = logging.getLogger("cgt_access.fhir")

ERROR_SEVERITIES = frozenset({"error", "fatal"})
Model = TypeVar("Model", bound=FHIRAbstractModel)


@dataclass(frozen=True)
class ValidationResult:
    """What validation found. `model` is set only when there is no error."""

    resource_type: str | None
    data: dict[str, Any] | None
    model: FHIRAbstractModel | None
    issues: tuple[Issue, ...]
    status: int  # 200 when valid, else the status a refusal carries (400 or 422)

    @property
    def errors(self) -> tuple[Issue, ...]:
        return tuple(issue for issue in self.issues if issue.severity in ERROR_SEVERITIES)

    @property
    def warnings(self) -> tuple[Issue, ...]:
        return tuple(issue for issue in self.issues if issue.severity not in ERROR_SEVERITIES)

    @property
    def ok(self) -> bool:
        """True when nothing is an error (warnings allowed)."""
        return self.status == 200

    def outcome(self) -> dict[str, Any]:
        """The OperationOutcome: every issue, or a single 'all OK' when there is none."""
        return operation_outcome(self.issues)

    def raise_if_invalid(self) -> None:
        """Refuse the request (FhirError with every issue) when there is an error."""
        if not self.ok:
            raise FhirError(status=self.status, issues=list(self.issues))


# The platform's own rules, which every door (create, update, transaction, $validate) applies.
DEFAULT_RULES: RuleSet = {"Observation": (measure_units,)}


def validate_resource(
    data: Any,
    *,
    expected_type: str | None = None,
    rules: RuleSet = DEFAULT_RULES,
    resolve: ReferenceResolver | None = None,
    local_base: str | None = None,
    keep_model: bool = True,
) -> ValidationResult:
    """Validate parsed JSON as an R4 resource (see the module's docstring for the steps).

    `expected_type`: the type the URL names; another type is an error. `rules`: checks by
    resource type (default: the platform's units). `resolve`: answers which references to
    this server outside the request are the client's own (none: they are not judged).
    `local_base`: this server's FHIR base URL, so absolute references to it count as local.
    `keep_model=False`: the caller needs no model of a Bundle (a transaction writes from the
    JSON), so its envelope is checked without building one (see `_envelope_valid`) and the
    result's model is None; the checks are the same."""
    if not isinstance(data, dict):
        return _refused("structure", "A FHIR resource is a JSON object")
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str):
        return _refused(
            "required", "The JSON object has no resourceType, so it is not a FHIR resource"
        )
    model_class = resource_model(resource_type)
    if model_class is None:
        return _refused("not-supported", f"'{resource_type[:64]}' is not an R4 resource type")
    if expected_type is not None and resource_type != expected_type:
        return _refused("invalid", f"Expected a {expected_type} resource, not a {resource_type}")

    found = walk(data, resource_type)
    issues = list(found.issues)
    model: FHIRAbstractModel | None = None
    entry_models: dict[int, FHIRAbstractModel] = {}
    if not found.unparseable and not found.truncated:
        shape_ok = not any(issue.severity in ERROR_SEVERITIES for issue in found.issues)
        if resource_type == "Bundle" and isinstance(data.get("entry"), list):
            model, parse_issues, entry_models = _parse_bundle(
                model_class, data, shape_ok=shape_ok, keep_model=keep_model
            )
        else:
            model, parse_issues = _parse_model(model_class, data, resource_type, shape_ok=shape_ok)
        issues.extend(_without_repeats(parse_issues, found.issues))
        _mark_entries(found.resources, parse_issues)
    for resource in found.resources:
        if resource.resource_type == "Bundle":
            bundle_issues = check_bundle(resource)
            if bundle_issues:
                resource.errors += len(bundle_issues)
            issues.extend(bundle_issues)
    reference_issues, refused = check_references(found, resolve=resolve, local_base=local_base)
    issues.extend(reference_issues)
    content_error = any(issue.severity in ERROR_SEVERITIES for issue in issues)
    broken = list(refused)
    if found.resources and not found.truncated:
        for target in _rule_targets(found.resources, model, entry_models):
            for rule in rules.get(target.resource_type, ()):
                broken.extend(rule(target))
    issues.extend(broken)
    rule_error = any(issue.severity in ERROR_SEVERITIES for issue in broken)
    if found.truncated:
        issues.append(
            Issue(code="too-costly", diagnostics="Too many errors: only the first ones are listed")
        )
    status = 400 if content_error or found.truncated else 422 if rule_error else 200
    return ValidationResult(
        resource_type=resource_type,
        data=data,
        model=model if status == 200 else None,
        issues=tuple(issues),
        status=status,
    )


def parse_resource(
    data: Any,
    model: type[Model],
    *,
    rules: RuleSet = DEFAULT_RULES,
    resolve: ReferenceResolver | None = None,
    local_base: str | None = None,
) -> Model:
    """The resource as its R4B model (`parse_resource(body, Patient)`), or a FhirError (400 or
    422) with every issue. For the create, update and transaction handlers."""
    result = validate_resource(
        data,
        expected_type=model.get_resource_type(),
        rules=rules,
        resolve=resolve,
        local_base=local_base,
    )
    result.raise_if_invalid()
    assert isinstance(result.model, model)
    return result.model


def _refused(code: str, diagnostics: str) -> ValidationResult:
    return ValidationResult(
        resource_type=None,
        data=None,
        model=None,
        issues=(Issue(code=code, diagnostics=diagnostics),),
        status=400,
    )


# --- the model parse ----------------------------------------------------------------------

_VALUE_PREFIX = "Value error, "
_SPEC_REGEX = re.compile(r"(\w+) value string does not match spec regex\.?")
_STRUCTURE_ERRORS = frozenset({"model_validation_format", "json_invalid", "model_attributes_type"})


def _parse_model(
    model_class: type[FHIRAbstractModel],
    data: dict[str, Any],
    root: str,
    *,
    shape_ok: bool,
    at: tuple[Segment, ...] = (),
) -> tuple[FHIRAbstractModel | None, list[Issue]]:
    """The model of `data` (None when it is not valid), with the parse's issues; `at` is
    where `data` sits in the request (an entry's resource: ("Bundle", "entry", 3,
    "resource")), for their expressions."""
    try:
        return model_class.model_validate(data), []
    except ValidationError as problem:
        return None, [
            _issue_from(error, root, at=at)
            for error in problem.errors(include_url=False)
            # The walk reports every unknown element itself, from the same models' fields.
            if error["type"] != "extra_forbidden"
        ]
    except Exception:
        # fhir.resources raises TypeError or KeyError on some malformed shapes (a list where
        # a url goes). When the walk has already named the fault, that is expected and its
        # issues say it all; otherwise it is a gap in the walk, worth a look in the log, and
        # the client still gets a 400 that says the content was not read.
        if shape_ok:
            log.exception("the R4B model parse of a %s failed unexpectedly", root)
            return None, [
                Issue(code="structure", diagnostics=f"The {root} could not be read as FHIR R4")
            ]
        return None, []


def _parse_bundle(
    model_class: type[FHIRAbstractModel],
    data: dict[str, Any],
    *,
    shape_ok: bool,
    keep_model: bool = True,
) -> tuple[FHIRAbstractModel | None, list[Issue], dict[int, FHIRAbstractModel]]:
    """A Bundle parsed as its envelope, then each entry's resource with its own model: the
    same checks as the Bundle's model parse, without what fhir.resources adds for a resource
    held in an entry (it looks up the resource's class by import for each entry, which
    costs as much as half the parse of a transaction). Also returns the entries' resource
    models by entry index (for the rules). `keep_model=False`: no Bundle model is built
    when the envelope is valid (`_envelope_valid`); the first element is then None."""
    resources: dict[int, tuple[type[FHIRAbstractModel], dict[str, Any]]] = {}
    entries: list[Any] = []
    for index, entry in enumerate(data["entry"]):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        type_name = resource.get("resourceType") if isinstance(resource, dict) else None
        entry_class = resource_model(type_name) if isinstance(type_name, str) else None
        if entry_class is not None and isinstance(resource, dict):
            resources[index] = (entry_class, resource)
            entry = {key: value for key, value in entry.items() if key != "resource"}
        entries.append(entry)
    envelope = {**data, "entry": entries}
    model: FHIRAbstractModel | None = None
    issues: list[Issue] = []
    if keep_model or not _envelope_valid(model_class, envelope):
        # The envelope's own parse: its model, or its issues at their exact paths.
        model, issues = _parse_model(model_class, envelope, "Bundle", shape_ok=shape_ok)
    parsed: dict[int, FHIRAbstractModel] = {}
    for index, (entry_class, resource) in resources.items():
        entry_model, entry_issues = _parse_model(
            entry_class,
            resource,
            entry_class.get_resource_type(),
            shape_ok=shape_ok,
            at=("Bundle", "entry", index, "resource"),
        )
        issues.extend(entry_issues)
        if entry_model is not None:
            parsed[index] = entry_model
    if issues or (keep_model and model is None):
        return None, issues, {}  # as the Bundle's parse: no model for any of its resources
    if model is not None:
        entry_models = getattr(model, "entry", None) or []
        for index, entry_model in parsed.items():
            # Set as the Bundle's parse would have: the entry's resource, already validated.
            entry_models[index].__dict__["resource"] = entry_model
            entry_models[index].__pydantic_fields_set__.add("resource")
    return model, issues, parsed


def _envelope_valid(model_class: type[FHIRAbstractModel], envelope: dict[str, Any]) -> bool:
    """Whether a Bundle's envelope (its entries without their resources) parses, checked
    without a model per entry: a transaction's entries differ in their fullUrl and are
    otherwise few shapes (`{"request": {"method": "POST", "url": "Observation"}}`), so each
    distinct entry but for its fullUrl is parsed once, in a Bundle as the envelope's parse
    would, and the fullUrls together as the entry's model types them. An entry's checks
    are its own elements' (no rule of the R4B models relates an entry's fullUrl to anything
    else), so this says yes exactly when the envelope's parse would; on no, that parse
    runs, for its issues."""
    distinct: dict[bytes, dict[str, Any]] = {}
    full_urls: list[Any] = []
    try:
        for entry in envelope["entry"]:
            if type(entry) is not dict or "fullUrl" not in entry:
                return False
            full_urls.append(entry["fullUrl"])
            rest = {key: value for key, value in entry.items() if key != "fullUrl"}
            distinct.setdefault(orjson.dumps(rest, option=orjson.OPT_SORT_KEYS), rest)
        model_class.model_validate({**envelope, "entry": list(distinct.values())})
        _FULL_URLS.validate_python(full_urls)
    except Exception:  # invalid, or not plain JSON: the envelope's own parse judges it
        return False
    return True


# The fullUrls of a Bundle's entries, typed as the R4B entry model types one.
_FULL_URL_TYPE: Any = BundleEntry.model_fields["fullUrl"].annotation
_FULL_URLS: TypeAdapter[list[Any]] = TypeAdapter(
    list[_FULL_URL_TYPE],
    config=BundleEntry.model_config,
)


def _issue_from(error: Any, root: str, *, at: tuple[Segment, ...] = ()) -> Issue:
    kind: str = error["type"]
    location: list[Segment] = list(at) if at else [root]
    for part in error["loc"]:
        if isinstance(part, int):
            location.append(part)
        elif part == "resource_type":
            location.append("resourceType")
        elif re.fullmatch(r"_?[A-Za-z][A-Za-z0-9]*", part) and part != "root":
            location.append(part.removeprefix("_"))
    message = str(error["msg"]).removeprefix(_VALUE_PREFIX)
    if kind in ("missing", "model_field_validation.missing"):
        code, message = "required", f"{location[-1]} is required here"
    elif kind in _STRUCTURE_ERRORS or kind.endswith("_type"):
        code = "structure"
    else:
        code = "value"
        spec = _SPEC_REGEX.fullmatch(message)
        shown = error.get("input")
        if spec is not None:
            type_name = spec.group(1)
            message = f"{_show(shown)} is not a valid FHIR {type_name[:1].lower()}{type_name[1:]}"
        elif isinstance(shown, str | int | float):
            message = f"{message} (got {_show(shown)})"
    return Issue(code=code, diagnostics=message, expression=(fhirpath(location),))


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 80 else text[:79] + "…"


def _without_repeats(parse_issues: list[Issue], walk_issues: list[Issue]) -> list[Issue]:
    """The model's issues that the walk did not already report (at the same element, inside
    it, or, for the model's whole-object checks such as one value per choice, under it)."""
    reported = {issue.expression[0] for issue in walk_issues if issue.expression}
    around = set(reported)
    for expression in reported:
        for cut in re.finditer(r"[.\[]", expression):
            around.add(expression[: cut.start()])
    kept = []
    for issue in parse_issues:
        expression = issue.expression[0] if issue.expression else ""
        if expression in around:
            continue
        if any(expression[: cut.start()] in reported for cut in re.finditer(r"[.\[]", expression)):
            continue
        kept.append(issue)
    return kept


def _mark_entries(resources: list[FoundResource], parse_issues: list[Issue]) -> None:
    """Count the model parse's errors against the resource they are in (the top one and, in a
    Bundle, the entry), so that rules skip what is broken."""
    if not parse_issues:
        return
    top = resources[0]
    top.errors += len(parse_issues)
    if top.resource_type != "Bundle":
        return
    entries = {
        resource.entry: resource
        for resource in resources[1:]
        if resource.bundle is top and resource.entry is not None
    }
    for issue in parse_issues:
        match = _ENTRY.match(issue.expression[0] if issue.expression else "")
        if match is not None and int(match.group(1)) in entries:
            entries[int(match.group(1))].errors += 1


_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]\.resource\b")


def _rule_targets(
    resources: list[FoundResource],
    model: FHIRAbstractModel | None,
    entry_models: dict[int, FHIRAbstractModel],
) -> Iterable[ResourceAt]:
    """The top resource and, for a Bundle, its entries' resources (with their models by
    entry index), when free of errors."""
    top = resources[0]
    if top.errors == 0:
        yield ResourceAt(top.resource_type, top.data, top.expression, model)
    if top.resource_type != "Bundle":
        return
    raw_entries = top.data.get("entry") or []
    for resource in resources[1:]:
        if resource.bundle is not top or resource.entry is None or resource.errors:
            continue
        entry = raw_entries[resource.entry]
        request = entry.get("request")
        full_url = entry.get("fullUrl")
        yield ResourceAt(
            resource.resource_type,
            resource.data,
            resource.expression,
            entry_models.get(resource.entry),
            full_url=full_url if isinstance(full_url, str) else None,
            request=request if isinstance(request, dict) else None,
        )
