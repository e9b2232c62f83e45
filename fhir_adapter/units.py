"""The units of the measures the platform records (`coordination.outcomes.MEASURES`): an
Observation coded as one of them must carry its value in that measure's UCUM unit, so that
hemoglobin (LOINC 718-7) is in g/dL and fetal hemoglobin (4576-5) in %, and a 12 never means
12 g/L. The platform does not convert units: a center's system knows its own units best, and
a silent conversion would hide a mis-coded result.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from coordination.followup.outcomes import MEASURES, Measure
from fhir_adapter.errors import Issue
from fhir_adapter.rules import ResourceAt
from fhir_adapter.schema import Segment

UCUM = "http://unitsofmeasure.org"

# (code system, code) -> the measure, for the measures whose value is a quantity or a count.
_MEASURED: dict[tuple[str, str], Measure] = {
    (measure.code_system, measure.code): measure
    for measure in MEASURES
    if measure.kind in ("quantity", "count") and measure.unit
}
_VALUE_KEYS = (
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueRange",
    "valueRatio",
    "valueSampledData",
    "valueTime",
    "valueDateTime",
    "valuePeriod",
)


def measure_units(resource: ResourceAt) -> Iterator[Issue]:
    """Rule for Observations: the value of a platform measure is a Quantity in its UCUM unit
    (a count may also be a valueInteger)."""
    data: Mapping[str, Any] = resource.data
    yield from _check(resource, data, ())
    components = data.get("component")
    for index, component in enumerate(components if isinstance(components, list) else ()):
        if isinstance(component, dict):
            yield from _check(resource, component, ("component", index))


def _check(
    resource: ResourceAt, holder: Mapping[str, Any], at: tuple[Segment, ...]
) -> Iterator[Issue]:
    measure = _measure_of(holder.get("code"))
    if measure is None:
        return
    named = f"{measure.display} ({measure.code})"
    quantity = holder.get("valueQuantity")
    if isinstance(quantity, dict):
        if quantity.get("system") != UCUM or quantity.get("code") != measure.unit:
            given = quantity.get("code") or quantity.get("unit") or "no unit"
            yield resource.issue(
                "business-rule",
                f"{named} is recorded in {measure.unit}: give valueQuantity.system "
                f"{UCUM} and valueQuantity.code '{measure.unit}' (got '{given}')",
                *at,
                "valueQuantity",
                "code" if quantity.get("system") == UCUM else "system",
            )
        return
    if measure.kind == "count" and "valueInteger" in holder:
        return
    for key in _VALUE_KEYS:
        if key in holder:
            yield resource.issue(
                "business-rule",
                f"{named} needs a valueQuantity in {measure.unit}, not a {key}",
                *at,
                key,
            )
            return


def _measure_of(code: Any) -> Measure | None:
    if not isinstance(code, dict):
        return None
    codings = code.get("coding")
    for coding in codings if isinstance(codings, list) else ():
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str) and (system, code) in _MEASURED:
                return _MEASURED[(system, code)]
    return None
