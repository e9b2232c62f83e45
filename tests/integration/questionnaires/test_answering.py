"""Answering a questionnaire (the services): the draft is saved page by page and resumed at
the first page not saved, enableWhen follow-ups apply only when they should, out-of-range
and missing answers are refused in words, and submitting stores a QuestionnaireResponse
that the R4B model accepts and the score as an Observation. SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse as FhirResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.questionnaires.loading import form_of
from coordination.questionnaires.models import (
    Questionnaire,
    QuestionnaireResponse,
    QuestionnaireStatus,
    ResponseStatus,
)
from coordination.questionnaires.responses import (
    SCORE_SYSTEM,
    Author,
    PageErrors,
    QuestionnaireUnavailable,
    ResponseClosed,
    available_questionnaires,
    get_response,
    resume_page,
    save_page,
    score_code,
    start_response,
    submit_response,
)
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.models import CaregiverLink, Language, Observation, Patient
from tests.conftest import CAREGIVER_MD, PATIENT_MD, T0, user_by_login

CHECK_IN = "https://cgt-access.example/fhir/Questionnaire/living-after-gene-therapy"
# The check-in's pages: pain, energy, school and work, hospital stays.
PAIN, ENERGY, DAILY, HOSPITAL = range(4)


def _maya(session: Session) -> Patient:
    patient = session.scalar(select(Patient).where(Patient.given_name == "Maya"))
    assert patient is not None
    return patient


def _check_in(session: Session, language: Language = Language.EN) -> Questionnaire:
    found = session.scalar(
        select(Questionnaire).where(
            Questionnaire.url == CHECK_IN, Questionnaire.language == language
        )
    )
    assert found is not None
    return found


def _actor(session: Session, login: str = PATIENT_MD) -> Actor:
    user = user_by_login(session, login)
    return Actor(user_id=user.id, label=login, role=user.role.value)


def _start(session: Session, clock: FrozenClock) -> QuestionnaireResponse:
    return start_response(
        session,
        clock=clock,
        actor=_actor(session),
        patient=_maya(session),
        questionnaire=_check_in(session),
    )


def _field(response: QuestionnaireResponse, link_id: str) -> str:
    return form_of(response.questionnaire).fields[link_id]


def _answer_all(
    session: Session, clock: FrozenClock, response: QuestionnaireResponse, *, stay: bool
) -> None:
    pages = {
        PAIN: {_field(response, "pain-days"): ["3"]},
        ENERGY: {_field(response, "fatigue"): ["2"]},  # "Somewhat tired": ordinal 2
        DAILY: {_field(response, "missed-days"): ["1"]},
        HOSPITAL: {
            _field(response, "hospital-stay"): ["true" if stay else "false"],
            _field(response, "hospital-nights"): ["4"],
        },
    }
    for page, posted in pages.items():
        save_page(session, clock=clock, response=response, page=page, posted=posted)


def test_the_check_in_is_offered_in_the_readers_language(session: Session) -> None:
    english = available_questionnaires(session, language=Language.EN)
    spanish = available_questionnaires(session, language=Language.ES)
    assert [row.url for row in english] == [CHECK_IN] == [row.url for row in spanish]
    assert english[0].language is Language.EN and spanish[0].language is Language.ES


def test_the_draft_is_saved_per_page_and_resumed_at_the_first_page_not_saved(
    session: Session, clock: FrozenClock
) -> None:
    response = _start(session, clock)
    form = form_of(response.questionnaire)
    assert resume_page(form, response) == PAIN
    next_page = save_page(
        session,
        clock=clock,
        response=response,
        page=PAIN,
        posted={_field(response, "pain-days"): ["3"]},
    )
    assert next_page == ENERGY
    session.commit()
    # Another device: the same draft (started again, in Spanish), resumed on page two.
    again = start_response(
        session,
        clock=clock,
        actor=_actor(session),
        patient=_maya(session),
        questionnaire=_check_in(session, Language.ES),
    )
    assert again.id == response.id
    assert again.answers == {"pain-days": [{"value": 3}]}
    assert resume_page(form, again) == ENERGY


def test_out_of_range_and_missing_answers_are_refused_with_the_range(
    session: Session, clock: FrozenClock
) -> None:
    response = _start(session, clock)
    for sent, message in [
        (["8"], "Enter a number from 0 to 7."),
        (["-1"], "Enter a number from 0 to 7."),
        (["three"], "Enter a number from 0 to 7."),
        ([""], "Answer this question."),
    ]:
        with pytest.raises(PageErrors) as refused:
            save_page(
                session,
                clock=clock,
                response=response,
                page=PAIN,
                posted={_field(response, "pain-days"): sent},
            )
        assert refused.value.errors == {"pain-days": message}
    assert response.answers == {} and response.saved_pages == []


def test_the_follow_up_applies_only_after_yes_and_a_changed_answer_drops_it(
    session: Session, clock: FrozenClock
) -> None:
    response = _start(session, clock)
    stay, nights = _field(response, "hospital-stay"), _field(response, "hospital-nights")
    with pytest.raises(PageErrors) as refused:
        save_page(session, clock=clock, response=response, page=HOSPITAL, posted={stay: ["true"]})
    assert refused.value.errors == {"hospital-nights": "Answer this question."}
    save_page(
        session,
        clock=clock,
        response=response,
        page=HOSPITAL,
        posted={stay: ["true"], nights: ["4"]},
    )
    assert response.answers["hospital-nights"] == [{"value": 4}]
    save_page(
        session,
        clock=clock,
        response=response,
        page=HOSPITAL,
        posted={stay: ["false"], nights: ["4"]},
    )
    assert "hospital-nights" not in response.answers


def test_submitting_stores_a_valid_questionnaire_response_and_the_score(
    session: Session, clock: FrozenClock
) -> None:
    response = _start(session, clock)
    _answer_all(session, clock, response, stay=True)
    user = user_by_login(session, PATIENT_MD)
    submit_response(
        session,
        clock=clock,
        actor=_actor(session),
        response=response,
        author=Author(user_id=user.id),
    )
    assert response.status is ResponseStatus.COMPLETED and response.authored_at == T0
    resource = response.resource
    assert resource is not None
    FhirResponse.model_validate(resource)
    assert resource["questionnaire"] == f"{CHECK_IN}|1.0.0"
    assert resource["subject"] == {"reference": f"Patient/{response.patient_id}"}
    assert resource["author"] == {"reference": f"Patient/{response.patient_id}"}
    # Nested like the questionnaire: the follow-up inside the hospital group.
    hospital = next(item for item in resource["item"] if item["linkId"] == "hospital")
    assert [item["linkId"] for item in hospital["item"]] == ["hospital-stay", "hospital-nights"]
    assert hospital["item"][1]["answer"] == [{"valueInteger": 4}]
    energy = next(item for item in resource["item"] if item["linkId"] == "energy")
    assert energy["item"][0]["answer"][0]["valueCoding"]["code"] == "somewhat"
    # The score: the ordinal value of the one option chosen.
    assert response.score == Decimal(2)
    observation = session.get(Observation, response.observation_id)
    assert observation is not None
    assert (observation.code_system, observation.code) == (SCORE_SYSTEM, score_code(CHECK_IN))
    assert observation.code.startswith("living-after-gene-therapy-")
    assert observation.extra == {
        "questionnaire": f"{CHECK_IN}|1.0.0",
        "questionnaire_response_id": response.id,
    }
    assert observation.value_quantity == Decimal(2)
    assert observation.patient_id == response.patient_id
    actions = session.scalars(
        select(AuditEvent.action).where(
            AuditEvent.target == f"questionnaire_response:{response.id}"
        )
    ).all()
    assert sorted(actions) == ["questionnaire_response.start", "questionnaire_response.submit"]
    with pytest.raises(ResponseClosed):
        save_page(session, clock=clock, response=response, page=PAIN, posted={})


def test_a_caregiver_answering_is_the_author_as_a_related_person(
    session: Session, clock: FrozenClock
) -> None:
    denise = user_by_login(session, CAREGIVER_MD)
    link = session.scalar(
        select(CaregiverLink).where(
            CaregiverLink.caregiver_id == denise.caregiver_id,
            CaregiverLink.patient_id == _maya(session).id,
        )
    )
    assert link is not None
    response = start_response(
        session,
        clock=clock,
        actor=_actor(session, CAREGIVER_MD),
        patient=_maya(session),
        questionnaire=_check_in(session),
    )
    _answer_all(session, clock, response, stay=False)
    submit_response(
        session,
        clock=clock,
        actor=_actor(session, CAREGIVER_MD),
        response=response,
        author=Author(user_id=denise.id, link=link),
        language=Language.ES,
    )
    assert response.resource is not None
    assert response.resource["author"] == {"reference": f"RelatedPerson/{link.id}"}
    assert response.resource["language"] == "es"
    assert response.author_caregiver_id == denise.caregiver_id
    hospital = next(item for item in response.resource["item"] if item["linkId"] == "hospital")
    assert [item["linkId"] for item in hospital["item"]] == ["hospital-stay"]


def test_submitting_with_a_page_left_sends_the_person_back_to_it(
    session: Session, clock: FrozenClock
) -> None:
    response = _start(session, clock)
    save_page(
        session,
        clock=clock,
        response=response,
        page=PAIN,
        posted={_field(response, "pain-days"): ["0"]},
    )
    with pytest.raises(PageErrors) as refused:
        submit_response(
            session,
            clock=clock,
            actor=_actor(session),
            response=response,
            author=Author(user_id=None),
        )
    assert refused.value.page == ENERGY
    assert response.status is ResponseStatus.IN_PROGRESS


def test_a_retired_questionnaire_starts_no_response_and_another_patient_gets_none(
    session: Session, clock: FrozenClock
) -> None:
    response = _start(session, clock)
    andre = session.scalar(select(Patient).where(Patient.given_name == "Andre"))
    assert andre is not None
    assert get_response(session, patient_id=andre.id, response_id=response.id) is None
    questionnaire = _check_in(session)
    questionnaire.status = QuestionnaireStatus.RETIRED
    with pytest.raises(QuestionnaireUnavailable):
        start_response(
            session,
            clock=clock,
            actor=_actor(session),
            patient=andre,
            questionnaire=questionnaire,
        )
