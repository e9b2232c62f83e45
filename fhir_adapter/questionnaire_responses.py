"""QuestionnaireResponse over FHIR: what patients submitted (drafts are not resources yet),
read by id, searched (patient/subject, questionnaire, authored, status), in a patient's
`$everything` and in a bulk `$export`, always within the caller's center like every other
type. The resource is the one stored at submission (checked then with the R4B model), with
its `meta`; the registries of reads, searches and exports name the functions here."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy.orm import Session

from coordination.followup.protocol import ProtocolLibrary
from coordination.questionnaires.models import (
    Questionnaire,
    QuestionnaireResponse,
    ResponseStatus,
)
from core.models import Patient
from fhir_adapter.resources import JSON, meta, timestamp_version
from fhir_adapter.search_values import parse_reference, unescape

if TYPE_CHECKING:
    from fhir_adapter.search_types import Render, Where

TYPE = "QuestionnaireResponse"
STATUS_SYSTEM = "http://hl7.org/fhir/questionnaire-answers-status"
# Only what was submitted is a resource: a draft is the patient's, not yet the record's.
SERVED = QuestionnaireResponse.status == ResponseStatus.COMPLETED
STATUSES: dict[str, Sequence[ResponseStatus]] = {"completed": [ResponseStatus.COMPLETED]}


def questionnaire_response_resource(response: Any) -> JSON:
    """The stored QuestionnaireResponse of a submitted response, with its meta."""
    stored: JSON = dict(response.resource or {})
    stored["id"] = str(response.id)
    stored["meta"] = meta(timestamp_version(response.updated_at), response.updated_at)
    return stored


def read(session: Session, center_id: int, local_id: int, _lib: ProtocolLibrary) -> JSON | None:
    """`GET /fhir/QuestionnaireResponse/[id]`: a submitted response of the center's patient."""
    response = session.get(QuestionnaireResponse, local_id)
    if response is None or response.status is not ResponseStatus.COMPLETED:
        return None
    patient = session.get(Patient, response.patient_id)
    if patient is None or patient.center_id != center_id:
        return None
    return questionnaire_response_resource(response)


def questionnaire_condition(_where: Where, value: str, _modifier: str | None) -> Any:
    """`questionnaire=url` or `url|version` (the canonical; a `Questionnaire/` id too)."""
    sent = unescape(value)
    url, _bar, version = sent.partition("|")
    loaded = select(Questionnaire.id).where(Questionnaire.url == url)
    if version:
        loaded = loaded.where(Questionnaire.version == version)
    by_id = parse_reference(sent) if sent.startswith("Questionnaire/") else None
    condition: ColumnElement[bool] = QuestionnaireResponse.questionnaire_id.in_(loaded)
    if by_id is not None:
        condition = or_(condition, QuestionnaireResponse.questionnaire_id == by_id)
    return condition


def render(_render: Render, rows: Sequence[Any]) -> list[JSON]:
    return [questionnaire_response_resource(row) for row in rows]


# --- bulk $export -------------------------------------------------------------------------

_responses = QuestionnaireResponse.__table__.c
_patients = Patient.__table__.c


def export_rows(center_id: int, since: datetime | None) -> Select[Any]:
    """The center's submitted responses (changed after `since`), by patient then id."""
    changed = [] if since is None else [_responses.updated_at > since]
    return (
        select(_responses.id, _responses.updated_at, _responses.resource)
        .where(
            _responses.status == ResponseStatus.COMPLETED,
            _responses.patient_id.in_(select(_patients.id).where(_patients.center_id == center_id)),
            *changed,
        )
        .order_by(_responses.patient_id, _responses.id)
    )


def export_resources(rows: Iterator[Any]) -> Iterator[JSON]:
    for row in rows:
        yield questionnaire_response_resource(row)
