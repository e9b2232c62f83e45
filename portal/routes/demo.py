"""Demo mode only: the console SMS gateway's page (what the demo texted, is about to text,
did not text, and received) and its form to answer as the patient. Public in demo mode (the
demo has fictional people only) so an invited patient can open their link; absent (404)
otherwise, forms included."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.ids import QueryId
from core.models import State
from portal import i18n
from portal.context import AppContext
from portal.deps import ContextDep, PageNotFound, SessionDep
from portal.dev.demo_sms import (
    DEMO_TEXTING_NUMBER,
    KEYWORDS,
    DemoAnswer,
    answer_as_patient,
    console,
    demo_numbers,
)
from portal.routes.pages import page_router
from portal.web import is_htmx, redirect, render

_ = i18n.gettext

TEMPLATE = "portal/demo_messages.html"
# The last answer, for the page after the form's redirect: signed, for this page only.
ANSWER_COOKIE = "cgt_demo_answer"
MAX_TEXT = 320  # two segments
POLL_SECONDS = 5


def demo_only(context: ContextDep) -> None:
    """Every route here exists only in demo mode (checked before the CSRF token)."""
    if not context.settings.demo_mode:
        raise PageNotFound()


router = page_router()
router.dependencies.insert(0, Depends(demo_only))


def _serializer(context: AppContext) -> URLSafeSerializer:
    return URLSafeSerializer(context.settings.secret, salt="cgt-access.demo-answer")


def _page(
    session: Session,
    context: AppContext,
    *,
    answer: DemoAnswer | None = None,
    phone: str = "",
    text: str = "",
    errors: dict[str, str] | None = None,
    with_form: bool = True,
) -> dict[str, Any]:
    # htmx's polling asks for the lists only: the form's numbers are not needed then.
    numbers = demo_numbers(session) if with_form else []
    return {
        "console": console(session, now=context.clock.now()),
        "numbers": numbers,
        "keywords": KEYWORDS,
        "selected": phone or (answer.phone if answer else (numbers[0].phone if numbers else "")),
        "text": text,
        "answer": answer,
        "errors": errors or {},
        "states": list(session.scalars(select(State).order_by(State.name))),
        "dispatch_seconds": context.settings.dispatch_interval_seconds,
        "planning_minutes": context.settings.reminder_planning_minutes,
        "poll_seconds": POLL_SECONDS,
    }


@router.get("/demo/messages", name="demo_messages")
def console_messages(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    answered: QueryId = None,
) -> Response:
    """The outbox and the replies; polled by htmx (the `messages` block)."""
    answer = None
    cookie = request.cookies.get(ANSWER_COOKIE)
    if answered is not None and cookie:
        try:
            answer = DemoAnswer.from_json(_serializer(context).loads(cookie))
        except (BadSignature, KeyError, TypeError, ValueError):
            answer = None
        if answer is not None and answer.inbound_id != answered:
            answer = None
    values = _page(session, context, answer=answer, with_form=not is_htmx(request))
    return render(request, TEMPLATE, values, block="messages")


@router.post("/demo/messages/answer", name="demo_answer")
def answer(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    phone: Annotated[str, Form(max_length=32)] = "",
    keyword: Annotated[str, Form(max_length=16)] = "",
    text: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Text `keyword` (a button) or `text` from `phone`, as the person would."""
    body = keyword if keyword in KEYWORDS else text.strip()
    errors: dict[str, str] = {}
    if phone not in {number.phone for number in demo_numbers(session)}:
        errors["phone"] = _("Choose one of the demo numbers.")
    if not body:
        errors["text"] = _("Type a text, or use one of the buttons.")
    elif len(body) > MAX_TEXT:
        errors["text"] = _("Use at most 320 characters (two text messages).")
    if errors:
        values = _page(session, context, phone=phone, text=text, errors=errors)
        return render(request, TEMPLATE, values, block="answer", status_code=400)
    result = answer_as_patient(
        session,
        clock=context.clock,
        phone=phone,
        body=body,
        texting_number=context.settings.twilio_from_number or DEMO_TEXTING_NUMBER,
        program_name=context.settings.program_name,
    )
    if is_htmx(request):
        # The list below refreshes at once (the reply shows among the texts received).
        values = _page(session, context, answer=result)
        return render(
            request, TEMPLATE, values, block="answer", headers={"HX-Trigger": "demo-answered"}
        )
    response = redirect(request, f"/demo/messages?answered={result.inbound_id}#answer")
    response.set_cookie(
        ANSWER_COOKIE,
        _serializer(context).dumps(result.to_json()),
        max_age=600,
        path="/demo/messages",
        httponly=True,
        samesite="lax",
        secure=context.settings.uses_tls,
    )
    return response
