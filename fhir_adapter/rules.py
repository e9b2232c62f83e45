"""Rules: the checks a caller adds to validation (`validation.validate_resource(rules=...)`).

A rule is a plain function of one resource, by resource type, returning its issues. The
platform's unit rule (`units.measure_units`) is one; the mapping layer adds its business rules
(a known therapy, a patient the center owns, a value in range) the same way, and they run on
every door: create, update, each entry of a transaction, and `$validate`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fhir_core.fhirabstractmodel import FHIRAbstractModel

from fhir_adapter.errors import Issue
from fhir_adapter.schema import Segment, fhirpath


@dataclass(frozen=True, slots=True)
class ResourceAt:
    """A resource as a rule sees it: its JSON (shape already checked), its parsed model, and
    where it sits in the request (for issue expressions and transaction semantics)."""

    resource_type: str
    data: Mapping[str, Any]
    expression: str  # "Observation", or "Bundle.entry[2].resource"
    model: FHIRAbstractModel | None
    full_url: str | None = None
    request: Mapping[str, Any] | None = None  # the Bundle entry's request, in a transaction

    def issue(self, code: str, diagnostics: str, *path: Segment, severity: str = "error") -> Issue:
        """An issue about this resource; `path` continues its expression (`"valueQuantity",
        "code"` -> `Observation.valueQuantity.code`)."""
        return Issue(
            code=code,
            diagnostics=diagnostics,
            severity=severity,
            expression=(fhirpath((self.expression, *path)),),
        )


Rule = Callable[[ResourceAt], Iterable[Issue]]
"""A check on one resource; returns (or yields) its issues, none when it is content."""

RuleSet = Mapping[str, Sequence[Rule]]
"""The rules to run, by resource type."""
