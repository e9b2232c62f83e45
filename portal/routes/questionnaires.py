"""Answering a questionnaire: one page per top-level group (phone-first), plain forms that
work without JavaScript, each page saved as it is sent, a review, then submit. A patient
answers for themself; a caregiver for a patient whose link lets them answer questionnaires for them.

URLs carry ids only (the patient's, the response's, a page number), never an answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from coordination.followup.models import Visit
from coordination.followup.protocol import shipped_protocols
from coordination.questionnaires.due import NotDue, visit_to_answer_for
from coordination.questionnaires.engine import (
    depends_on_page,
    enabled_items,
    form_values,
    page_applies,
    shown_answers,
)
from coordination.questionnaires.items import Form, Item
from coordination.questionnaires.loading import form_of, in_language
from coordination.questionnaires.models import (
    Questionnaire,
    QuestionnaireResponse,
    ResponseStatus,
)
from coordination.questionnaires.responses import (
    Author,
    PageErrors,
    QuestionnaireUnavailable,
    ResponseClosed,
    get_response,
    previous_page,
    resume_page,
    save_page,
    start_response,
    submit_response,
)
from core.identity.access import Permission, caregiver_link
from core.identity.models import Role
from core.ids import PathId, parse_id
from core.models import Language
from core.text import N_
from portal import i18n
from portal.context import AppContext
from portal.deps import ContextDep, PageNotFound, PatientAccess, SessionDep, require_patient
from portal.routes.pages import page_router
from portal.web import redirect, render

router = page_router()
AnswerAccess = Annotated[PatientAccess, Depends(require_patient(Permission.QUESTIONNAIRE_ANSWER))]
TEMPLATE = "portal/questionnaire_page.html"
_ = i18n.gettext
NOT_AVAILABLE = N_("This questionnaire is no longer offered. Your care team can tell you more.")
CHOOSE_ONE = N_("Choose a questionnaire on your home page.")
NOT_DUE = N_(
    "This questionnaire is not open for that visit. See your home page for the ones to answer."
)
# The longest a form's field may be (a text item takes 5,000 characters; the rest is noise).
VALUE_LIMIT = 10_000


def _base(access: PatientAccess, response_id: int) -> str:
    return f"/care/{access.patient.id}/questionnaires/{response_id}"


def _response_or_404(
    session: Session, access: PatientAccess, response_id: int
) -> QuestionnaireResponse:
    response = get_response(session, patient_id=access.patient.id, response_id=response_id)
    if response is None:
        raise PageNotFound()
    return response


def _shown_form(session: Session, response: QuestionnaireResponse) -> Form:
    """The questionnaire in the reader's language when that version has it."""
    language = i18n.current_language()
    return form_of(in_language(session, questionnaire=response.questionnaire, language=language))


def _common(access: PatientAccess, form: Form, response: QuestionnaireResponse) -> dict[str, Any]:
    enabled = enabled_items(form, response.answers)
    applying = [page for page in form.pages if page_applies(page, enabled)]
    return {
        "patient": access.patient,
        "for_self": access.user.role is Role.PATIENT,
        "form": form,
        "response": response,
        "base": _base(access, response.id),
        "page_count": len(applying),
        "enabled": enabled,
    }


def _visit_sent(
    session: Session,
    context: AppContext,
    access: PatientAccess,
    questionnaire: Questionnaire,
    sent: object,
) -> Visit | None:
    """The visit a due questionnaire is started for (None when none is named); NotDue
    when it is not open to answers for that visit."""
    if not isinstance(sent, str) or not sent.strip():
        return None
    visit_id = parse_id(sent)
    if visit_id is None:
        raise NotDue()
    return visit_to_answer_for(
        session,
        clock=context.clock,
        library=shipped_protocols(),
        patient=access.patient,
        questionnaire=questionnaire,
        visit_id=visit_id,
    )


@router.post("/care/{patient_id}/questionnaires", name="questionnaire_start")
async def questionnaire_start(
    request: Request, session: SessionDep, context: ContextDep, access: AnswerAccess
) -> Response:
    """Start (or carry on with) the patient's response to the questionnaire chosen (for
    the visit named, when the protocol asks for it there)."""
    posted = await request.form()
    sent = posted.get("questionnaire_id")
    questionnaire_id = parse_id(sent if isinstance(sent, str) else None)
    questionnaire = session.get(Questionnaire, questionnaire_id) if questionnaire_id else None
    if questionnaire is None:
        return render(
            request,
            "portal/error.html",
            {"title": _("Questionnaire"), "message": _(CHOOSE_ONE), "back": "/home"},
            status_code=400,
        )
    try:
        response = start_response(
            session,
            clock=context.clock,
            actor=access.actor,
            patient=access.patient,
            questionnaire=questionnaire,
            visit=_visit_sent(session, context, access, questionnaire, posted.get("visit_id")),
        )
    except NotDue:
        return render(
            request,
            "portal/error.html",
            {"title": _("Questionnaire"), "message": _(NOT_DUE), "back": "/home"},
            status_code=400,
        )
    except QuestionnaireUnavailable:
        return render(
            request,
            "portal/error.html",
            {"title": _("Questionnaire"), "message": _(NOT_AVAILABLE)},
            status_code=409,
        )
    return redirect(request, _base(access, response.id))


@router.get("/care/{patient_id}/questionnaires/{response_id}", name="questionnaire_resume")
def questionnaire_resume(
    request: Request, session: SessionDep, access: AnswerAccess, response_id: PathId
) -> Response:
    """Where the person left off: the first page not saved, else the review; a submitted
    response shows its thank-you page."""
    response = _response_or_404(session, access, response_id)
    form = _shown_form(session, response)
    if response.status is ResponseStatus.COMPLETED:
        return render(
            request,
            "portal/questionnaire_done.html",
            _common(access, form, response),
            block="questionnaire",
        )
    page = resume_page(form, response)
    target = _base(access, response.id) + (f"/pages/{page + 1}" if page is not None else "/review")
    return redirect(request, target)


def _page_context(
    access: PatientAccess,
    form: Form,
    response: QuestionnaireResponse,
    number: int,
    *,
    values: dict[str, list[str]],
    errors: dict[str, str],
) -> dict[str, Any]:
    page = form.pages[number]
    context = _common(access, form, response)
    enabled = context["enabled"]
    applying = [one.index for one in form.pages if page_applies(one, enabled)]
    later: set[str] = {
        item.link_id
        for top in page.items
        for item in top.walk()
        if depends_on_page(form, page, item)
    }
    # What the page shows: what applies with the answers so far, and what depends on an
    # answer of this very page (shown with a note; decided when the page is sent).
    context.update(
        page=page,
        position=applying.index(number) + 1 if number in applying else 1,
        shown={link_id for link_id in form.by_link_id if link_id in enabled or link_id in later},
        depends_here=later,
        values=values,
        errors=errors,
        error_fields={form.fields[link_id]: message for link_id, message in errors.items()},
        back=previous_page(form, response.answers, number),
    )
    return context


def _page_number(form: Form, number: int) -> int:
    """A page number from the URL (1-based) as an index; 404 beyond the questionnaire."""
    if not 1 <= number <= len(form.pages):
        raise PageNotFound()
    return number - 1


@router.get(
    "/care/{patient_id}/questionnaires/{response_id}/pages/{number}", name="questionnaire_page"
)
def questionnaire_page(
    request: Request, session: SessionDep, access: AnswerAccess, response_id: PathId, number: PathId
) -> Response:
    response = _response_or_404(session, access, response_id)
    if response.status is not ResponseStatus.IN_PROGRESS:
        return redirect(request, _base(access, response.id))
    form = _shown_form(session, response)
    index = _page_number(form, number)
    context = _page_context(
        access,
        form,
        response,
        index,
        values=form_values(form, response.answers),
        errors={},
    )
    return render(request, TEMPLATE, context, block="questionnaire")


@router.post(
    "/care/{patient_id}/questionnaires/{response_id}/pages/{number}",
    name="questionnaire_page_save",
)
async def questionnaire_page_save(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: AnswerAccess,
    response_id: PathId,
    number: PathId,
) -> Response:
    """Save the page; on to the next page that applies, or the review."""
    response = _response_or_404(session, access, response_id)
    form = _shown_form(session, response)
    index = _page_number(form, number)
    sent = await request.form()
    posted: dict[str, list[str]] = {}
    for name in {key for key in sent if key.startswith("q")}:
        posted[name] = [
            value[:VALUE_LIMIT] for value in sent.getlist(name) if isinstance(value, str)
        ]
    try:
        following = save_page(
            session, clock=context.clock, response=response, page=index, posted=posted
        )
    except ResponseClosed:
        return redirect(request, _base(access, response.id))
    except PageErrors as problem:
        page_context = _page_context(
            access,
            form,
            response,
            index,
            values=posted,
            errors=i18n.translate_errors(problem.errors),
        )
        return render(request, TEMPLATE, page_context, block="questionnaire", status_code=400)
    target = _base(access, response.id) + (
        f"/pages/{following + 1}" if following is not None else "/review"
    )
    return redirect(request, target)


def review_rows(form: Form, response: QuestionnaireResponse) -> list[dict[str, Any]]:
    """Each page that applies with its questions and answers, for the review."""
    enabled = enabled_items(form, response.answers)
    rows = []
    for page in form.pages:
        if not page_applies(page, enabled):
            continue
        questions: list[tuple[Item, list[str | bool]]] = [
            (item, shown_answers(item, response.answers.get(item.link_id, [])))
            for top in page.items
            for item in top.walk()
            if item.is_question and item.link_id in enabled
        ]
        rows.append({"page": page, "questions": questions})
    return rows


@router.get("/care/{patient_id}/questionnaires/{response_id}/review", name="questionnaire_review")
def questionnaire_review(
    request: Request, session: SessionDep, access: AnswerAccess, response_id: PathId
) -> Response:
    response = _response_or_404(session, access, response_id)
    if response.status is not ResponseStatus.IN_PROGRESS:
        return redirect(request, _base(access, response.id))
    form = _shown_form(session, response)
    context = _common(access, form, response)
    context["rows"] = review_rows(form, response)
    context["missing"] = resume_page(form, response)
    return render(request, "portal/questionnaire_review.html", context, block="questionnaire")


@router.post("/care/{patient_id}/questionnaires/{response_id}/submit", name="questionnaire_submit")
def questionnaire_submit(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: AnswerAccess,
    response_id: PathId,
) -> Response:
    response = _response_or_404(session, access, response_id)
    try:
        submit_response(
            session,
            clock=context.clock,
            actor=access.actor,
            response=response,
            author=Author(
                user_id=access.user.id,
                link=caregiver_link(session, user=access.user, patient_id=access.patient.id),
            ),
            language=Language(i18n.current_language()),
        )
    except ResponseClosed:
        pass
    except PageErrors as problem:
        return redirect(request, _base(access, response.id) + f"/pages/{problem.page + 1}")
    return redirect(request, _base(access, response.id))
