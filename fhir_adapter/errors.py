"""What goes wrong at the FHIR API, in FHIR's words: every refusal is a `FhirError` carrying
the HTTP status and the issues of the OperationOutcome the client gets back (never an HTML
page, never a bare 500)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One `OperationOutcome.issue`: severity, code (from the FHIR `issue-type` value set),
    what went wrong in words, and where (FHIRPath expressions such as `Patient.gender`)."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


def operation_outcome(issues: list[Issue] | tuple[Issue, ...]) -> dict[str, Any]:
    """An OperationOutcome resource (JSON) with these issues; at least one is required by
    FHIR, so an empty list becomes a single informational 'all ok'."""
    listed = list(issues) or [
        Issue(code="informational", diagnostics="All OK", severity="information")
    ]
    return {"resourceType": "OperationOutcome", "issue": [issue.as_json() for issue in listed]}


@dataclass
class FhirError(Exception):
    """A refusal: `status` is the HTTP status (400 bad content, 401/403 auth, 404, 409/412
    conflicts, 422 a business rule), `issues` what the OperationOutcome says. `headers`
    are added to the response (e.g. `WWW-Authenticate` on a 401)."""

    status: int
    issues: list[Issue]
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.status, "; ".join(issue.diagnostics for issue in self.issues))

    @classmethod
    def single(
        cls,
        status: int,
        code: str,
        diagnostics: str,
        *,
        expression: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
    ) -> FhirError:
        return cls(
            status=status,
            issues=[Issue(code=code, diagnostics=diagnostics, expression=expression)],
            headers=headers or {},
        )

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)
