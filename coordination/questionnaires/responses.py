"""Answering a questionnaire: a draft response saved page by page, resumed on any device at
the first page not yet saved, reviewed, then submitted as a FHIR R4 QuestionnaireResponse
with, where the answer options carry ordinal values, their sum as an Observation.

Plain keyword-only functions over a Session; they flush and never commit. No answer value
goes to the audit log or a URL: responses are named by their ids."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.questionnaireresponse import (
    QuestionnaireResponse as FhirQuestionnaireResponse,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from coordination.followup.models import Visit
from coordination.questionnaires.engine import (
    enabled_items,
    missing_required,
    page_applies,
    read_page,
    response_items,
    score,
)
from coordination.questionnaires.items import Form
from coordination.questionnaires.loading import form_of, in_language
from coordination.questionnaires.models import (
    Questionnaire,
    QuestionnaireResponse,
    QuestionnaireStatus,
    ResponseStatus,
)
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.errors import FieldErrors
from core.models import (
    CaregiverLink,
    Language,
    Observation,
    ObservationSource,
    ObservationStatus,
    Patient,
)
from core.text import N_

# The platform's own code system for the scores of its questionnaires: no LOINC code names
# a score of a questionnaire a program wrote itself.
SCORE_SYSTEM = "https://cgt-access.example/fhir/CodeSystem/pro-score"
SCORE_CODE_MAX = 64


class ResponseClosed(Exception):
    """The response was submitted: it cannot change any more."""


class QuestionnaireUnavailable(Exception):
    """The questionnaire is retired: no new response starts."""


class PageErrors(FieldErrors):
    """What to fix on a page: messages by linkId ("" for the page), and which page."""

    def __init__(self, errors: dict[str, str], *, page: int) -> None:
        super().__init__(errors)
        self.page = page


@dataclass(frozen=True)
class Author:
    """Who answers: the patient, or a caregiver acting for them (their link to the patient)."""

    user_id: int | None
    link: CaregiverLink | None = None


def available_questionnaires(session: Session, *, language: Language) -> list[Questionnaire]:
    """The active questionnaires a patient may answer, one per url (its newest version
    loaded), in `language` where that version has it."""
    rows = session.scalars(
        select(Questionnaire)
        .where(Questionnaire.status == QuestionnaireStatus.ACTIVE)
        .order_by(Questionnaire.url, Questionnaire.loaded_at.desc(), Questionnaire.id.desc())
    ).all()
    newest: dict[str, str] = {}
    chosen: dict[str, Questionnaire] = {}
    for row in rows:
        version = newest.setdefault(row.url, row.version)
        if row.version != version:
            continue
        if row.url not in chosen or row.language is language:
            chosen[row.url] = row
    return sorted(chosen.values(), key=lambda row: row.title)


def open_responses(
    session: Session, *, patient_ids: Sequence[int]
) -> dict[int, list[QuestionnaireResponse]]:
    """The responses not yet submitted of each patient (oldest first), with their
    questionnaires, in one query whatever the number of patients (a caregiver's home)."""
    found: dict[int, list[QuestionnaireResponse]] = {patient_id: [] for patient_id in patient_ids}
    if not patient_ids:
        return found
    rows = session.scalars(
        select(QuestionnaireResponse)
        .where(
            QuestionnaireResponse.patient_id.in_(patient_ids),
            QuestionnaireResponse.status == ResponseStatus.IN_PROGRESS,
        )
        .options(joinedload(QuestionnaireResponse.questionnaire))
        .order_by(QuestionnaireResponse.id)
    )
    for response in rows:
        found[response.patient_id].append(response)
    return found


def _same_version_ids(session: Session, questionnaire: Questionnaire) -> list[int]:
    return list(
        session.scalars(
            select(Questionnaire.id).where(
                Questionnaire.url == questionnaire.url,
                Questionnaire.version == questionnaire.version,
            )
        )
    )


def start_response(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    questionnaire: Questionnaire,
    visit: Visit | None = None,
) -> QuestionnaireResponse:
    """The patient's draft response to `questionnaire` (for `visit`, when it is asked for
    one): the one in progress, in whichever language it was started, else a new one.
    Raises QuestionnaireUnavailable for a retired questionnaire."""
    existing = session.scalar(
        select(QuestionnaireResponse)
        .where(
            QuestionnaireResponse.patient_id == patient.id,
            QuestionnaireResponse.questionnaire_id.in_(_same_version_ids(session, questionnaire)),
            QuestionnaireResponse.status == ResponseStatus.IN_PROGRESS,
            (
                QuestionnaireResponse.visit_id == visit.id
                if visit is not None
                else QuestionnaireResponse.visit_id.is_(None)
            ),
        )
        .order_by(QuestionnaireResponse.id)
        .limit(1)
    )
    if existing is not None:
        return existing
    if questionnaire.status is not QuestionnaireStatus.ACTIVE:
        raise QuestionnaireUnavailable()
    now = clock.now()
    response = QuestionnaireResponse(
        patient_id=patient.id,
        questionnaire_id=questionnaire.id,
        visit_id=visit.id if visit is not None else None,
        status=ResponseStatus.IN_PROGRESS,
        answers={},
        saved_pages=[],
        started_by_user_id=actor.user_id,
        started_at=now,
        updated_at=now,
    )
    session.add(response)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="questionnaire_response.start",
        patient_id=patient.id,
        target=f"questionnaire_response:{response.id}",
    )
    return response


def get_response(
    session: Session, *, patient_id: int, response_id: int
) -> QuestionnaireResponse | None:
    """A response of this patient (None for another patient's: the caller answers 404)."""
    response = session.get(QuestionnaireResponse, response_id)
    return response if response is not None and response.patient_id == patient_id else None


def resume_page(form: Form, response: QuestionnaireResponse) -> int | None:
    """The first page that applies and was not saved yet, or one that applies but misses
    a required answer (an earlier answer made it apply); None: on to the review."""
    answers = response.answers
    enabled = enabled_items(form, answers)
    for page in form.pages:
        if not page_applies(page, enabled):
            continue
        if page.index not in response.saved_pages or missing_required(form, page, answers, enabled):
            return page.index
    return None


def next_page(form: Form, answers: Mapping[str, Any], after: int) -> int | None:
    """The next page after `after` that applies with these answers (None: the review)."""
    enabled = enabled_items(form, dict(answers))
    for page in form.pages[after + 1 :]:
        if page_applies(page, enabled):
            return page.index
    return None


def previous_page(form: Form, answers: Mapping[str, Any], before: int) -> int | None:
    enabled = enabled_items(form, dict(answers))
    for page in reversed(form.pages[:before]):
        if page_applies(page, enabled):
            return page.index
    return None


def save_page(
    session: Session,
    *,
    clock: Clock,
    response: QuestionnaireResponse,
    page: int,
    posted: Mapping[str, list[str]],
) -> int | None:
    """Keep one page's answers in the draft; returns the next page that applies (None: the
    review). Raises PageErrors (nothing saved) when an answer needs fixing, ResponseClosed
    for a submitted response."""
    if response.status is not ResponseStatus.IN_PROGRESS:
        raise ResponseClosed()
    form = form_of(response.questionnaire)
    if not 0 <= page < len(form.pages):
        raise PageErrors({"": N_("This page does not exist.")}, page=0)
    answers, errors = read_page(form, form.pages[page], posted, response.answers)
    if errors:
        raise PageErrors(errors, page=page)
    response.answers = answers
    response.saved_pages = sorted({*response.saved_pages, page})
    response.updated_at = clock.now()
    session.flush()
    return next_page(form, answers, page)


def score_code(url: str) -> str:
    """The score's code in SCORE_SYSTEM for a questionnaire url: the url when it fits the
    column, else its last segment and a short hash of it (readable, and still unique)."""
    if len(url) <= SCORE_CODE_MAX:
        return url
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f"{url.rstrip('/').rsplit('/', 1)[-1][: SCORE_CODE_MAX - 13]}-{digest}"


def questionnaire_response_resource(
    response: QuestionnaireResponse, *, form: Form, author_reference: str, authored: datetime
) -> dict[str, Any]:
    """The FHIR R4 QuestionnaireResponse of a response (checked with the R4B model)."""
    enabled = enabled_items(form, response.answers)
    resource: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "id": str(response.id),
        "language": form.language.value,
        "questionnaire": f"{form.url}|{form.version}",
        "status": ResponseStatus.COMPLETED.value,
        "subject": {"reference": f"Patient/{response.patient_id}"},
        "authored": authored.isoformat(),
        "author": {"reference": author_reference},
        "source": {"reference": author_reference},
        "item": response_items(form, response.answers, enabled),
    }
    if not resource["item"]:
        del resource["item"]
    FhirQuestionnaireResponse.model_validate(resource)
    return resource


def submit_response(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    response: QuestionnaireResponse,
    author: Author,
    language: Language | None = None,
) -> QuestionnaireResponse:
    """Submit a draft: every page that applies must have its required answers (else
    PageErrors naming the first such page). Stores the QuestionnaireResponse (completed),
    and the score as an Observation when the questionnaire defines one (audited)."""
    if response.status is not ResponseStatus.IN_PROGRESS:
        raise ResponseClosed()
    questionnaire = response.questionnaire
    form = form_of(questionnaire)
    missing = resume_page(form, response)
    if missing is not None:
        raise PageErrors({"": N_("Some questions still need an answer.")}, page=missing)
    # Answers to questions that no longer apply (a "yes" changed to "no") are not kept.
    enabled = enabled_items(form, response.answers)
    response.answers = {key: value for key, value in response.answers.items() if key in enabled}
    now = clock.now()
    if author.link is not None:
        reference = f"RelatedPerson/{author.link.id}"
        response.author_caregiver_id = author.link.caregiver_id
    else:
        reference = f"Patient/{response.patient_id}"
    response.author_user_id = author.user_id
    shown = form
    if language is not None and language is not form.language:
        shown = form_of(in_language(session, questionnaire=questionnaire, language=language))
    response.resource = questionnaire_response_resource(
        response, form=shown, author_reference=reference, authored=now
    )
    response.status = ResponseStatus.COMPLETED
    response.authored_at = now
    response.updated_at = now
    total = score(form, response.answers, enabled)
    if total is not None:
        response.score = total
        response.observation_id = _record_score(
            session,
            clock=clock,
            response=response,
            questionnaire=questionnaire,
            total=total,
            user_id=author.user_id,
        ).id
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="questionnaire_response.submit",
        patient_id=response.patient_id,
        target=f"questionnaire_response:{response.id}",
    )
    return response


def _record_score(
    session: Session,
    *,
    clock: Clock,
    response: QuestionnaireResponse,
    questionnaire: Questionnaire,
    total: Decimal,
    user_id: int | None,
) -> Observation:
    """The score in the shared record: an Observation the patient reported, coded in the
    platform's own system, pointing back at the questionnaire and the response."""
    now = clock.now()
    observation = Observation(
        patient_id=response.patient_id,
        code_system=SCORE_SYSTEM,
        code=score_code(questionnaire.url),
        display=f"Score: {questionnaire.title}"[:200],
        value_quantity=total,
        value_unit="{score}",
        effective_at=now,
        source=ObservationSource.PATIENT,
        recorded_by_user_id=user_id,
        extra={
            "questionnaire": questionnaire.canonical,
            "questionnaire_response_id": response.id,
        },
        status=ObservationStatus.FINAL,
        created_at=now,
    )
    session.add(observation)
    session.flush()
    return observation


def read_response_for_staff(
    session: Session, *, clock: Clock, actor: Actor, patient: Patient, response_id: int
) -> QuestionnaireResponse | None:
    """A response of the patient for a staff member to read (the read is audited)."""
    response = get_response(session, patient_id=patient.id, response_id=response_id)
    if response is not None:
        record_event(
            session,
            clock=clock,
            actor=actor,
            action="questionnaire_response.read",
            patient_id=patient.id,
            target=f"questionnaire_response:{response.id}",
        )
    return response


def responses_of_patient(session: Session, *, patient_id: int) -> list[QuestionnaireResponse]:
    """Every response of the patient, the newest first (drafts and submitted ones)."""
    return list(
        session.scalars(
            select(QuestionnaireResponse)
            .where(QuestionnaireResponse.patient_id == patient_id)
            .order_by(QuestionnaireResponse.updated_at.desc(), QuestionnaireResponse.id.desc())
        )
    )
