"""The patient's and caregiver's home, and the reports placeholder (the account page is in
`account.py`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import Response

from coordination.followup.schedule import visits_for_patients
from coordination.questionnaires.responses import available_questionnaires, open_responses
from core.identity.access import Permission, linked_patients
from core.identity.models import User
from core.models import ProxyRight
from portal import i18n
from portal.deps import ContextDep, SessionDep, require
from portal.routes.pages import page_router
from portal.routes.questionnaires_due import ready_lines
from portal.routes.schedule import NOTICES as SCHEDULE_NOTICES
from portal.routes.schedule import person_summary
from portal.web import render

router = page_router()
_ = i18n.gettext
# Shown after a redirect back home (the confirm button on the home page).
HOME_NOTICES = {"confirmed": SCHEDULE_NOTICES["confirmed"]}


@router.get("/home", name="home")
def home(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Annotated[User, Depends(require(Permission.PORTAL_HOME))],
    done: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    """A patient sees their own follow-up; a caregiver, each patient they help: the next
    visit (with the right to see the schedule) and what they may do."""
    linked = linked_patients(session, user=user)
    # Everyone's visits in one query; person_summary decides what the link lets the reader see.
    visits = visits_for_patients(session, patient_ids=[patient.id for patient, _link in linked])
    people = [
        person_summary(session, patient=patient, link=link, visits=visits[patient.id])
        for patient, link in linked
    ]
    # The questionnaires each person may answer (the patient; a caregiver with the right to
    # answer for them): first those their protocol asks for now (with their drafts); then,
    # in a list of their own, the others loaded, with the drafts started from it (one query
    # for everyone's drafts). A questionnaire is offered once: never in both.
    offered = available_questionnaires(session, language=i18n.current_language())

    def may_answer(person: dict[str, Any]) -> bool:
        rights = person["rights"]
        return rights is None or ProxyRight.ANSWER_QUESTIONNAIRES in rights

    ready = ready_lines(
        session,
        clock=context.clock,
        people=[(person["patient"], may_answer(person)) for person in people],
    )
    answering = [person for person in people if offered and may_answer(person)]
    drafts = open_responses(session, patient_ids=[person["patient"].id for person in answering])
    for person in people:
        person["due"] = ready.get(person["patient"].id, [])
        asked_now = {line.item.url for line in person["due"]}
        person["questionnaires"] = (
            [questionnaire for questionnaire in offered if questionnaire.url not in asked_now]
            if person in answering
            else []
        )
        person["drafts"] = {
            (draft.questionnaire.url, draft.questionnaire.version): draft
            for draft in drafts.get(person["patient"].id, [])
        }
    notice = _(HOME_NOTICES[done]) if done in HOME_NOTICES else None
    return render(request, "portal/home.html", {"people": people, "notice": notice})


@router.get("/reports", name="reports")
def reports(
    request: Request, user: Annotated[User, Depends(require(Permission.REPORTS_VIEW))]
) -> Response:
    return render(request, "portal/reports.html", {})
