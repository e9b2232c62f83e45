"""A transaction's references, found once per entry and rewritten along their paths, and
the control-character check that looks at the JSON before walking it."""

from __future__ import annotations

from typing import Any

from fhir_adapter.mapping.common import control_character_issues
from fhir_adapter.transactions import _rewrite, reference_sites

PATIENT = "urn:uuid:3f2a0a9e-3b7b-4a53-9a0c-0d1c2b3a4f50"
PRACTITIONER = "urn:uuid:0b8e3c58-1c3f-4f38-8b2e-1b6a5f0c9d21"


def _observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": PATIENT},
        "performer": [{"reference": "Practitioner/7"}, {"reference": PRACTITIONER}],
        "extension": [{"url": "https://example.org/x", "valueReference": {"reference": PATIENT}}],
    }


def test_every_reference_is_found_with_where_it_is() -> None:
    assert reference_sites(_observation()) == [
        (("subject",), PATIENT),
        (("performer", 0), "Practitioner/7"),
        (("performer", 1), PRACTITIONER),
        (("extension", 0, "valueReference"), PATIENT),
    ]


def test_references_to_written_entries_are_rewritten_and_the_request_is_left_as_sent() -> None:
    resource = _observation()
    written = {PATIENT: ("Patient", 12)}
    rewritten = _rewrite(resource, reference_sites(resource), written)
    assert rewritten["subject"] == {"reference": "Patient/12"}
    assert rewritten["extension"][0]["valueReference"] == {"reference": "Patient/12"}
    assert rewritten["performer"] == [{"reference": "Practitioner/7"}, {"reference": PRACTITIONER}]
    assert resource == _observation()  # the request's own objects are not changed
    assert rewritten["code"] is resource["code"]  # what holds no reference is shared
    assert _rewrite(resource, reference_sites(resource), {}) is resource


def test_a_control_character_is_found_and_a_written_backslash_is_not_one() -> None:
    clean = {"resourceType": "Patient", "name": [{"family": "Pe\\bña", "text": "a\tb\nc"}]}
    assert control_character_issues(clean, "Patient") == []
    broken = {"resourceType": "Patient", "name": [{"family": "Pe\x0cña"}]}
    (issue,) = control_character_issues(broken, "Patient")
    assert issue.expression == ("Patient.name[0].family",)
