"""Twilio's webhooks: inbound texts and delivery-status callbacks.

Public routes (no session cookie, no CSRF): every request must carry a valid
`X-Twilio-Signature` computed over PUBLIC_BASE_URL + path and the form, or it is refused
with 403. Answers are TwiML."""

from __future__ import annotations

from typing import Annotated
from xml.sax.saxutils import escape

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response
from twilio.request_validator import RequestValidator

from coordination.texting.inbound import NotAPhoneNumber, handle_inbound, record_delivery
from portal.deps import ContextDep, SessionDep

router = APIRouter()

SIGNATURE_HEADER = "X-Twilio-Signature"
TWIML = "application/xml"


def twiml(message: str = "") -> Response:
    body = (
        f"<Response><Message>{escape(message)}</Message></Response>" if message else "<Response/>"
    )
    return Response('<?xml version="1.0" encoding="UTF-8"?>' + body, media_type=TWIML)


async def signed_form(request: Request, context: ContextDep) -> dict[str, str] | Response:
    """The posted form when Twilio signed it; otherwise the refusal to send back."""
    try:
        form = await request.form()
    except Exception:  # a body that is not a form at all
        return PlainTextResponse("malformed form", status_code=400)
    params = {key: value for key, value in form.items() if isinstance(value, str)}
    token = context.settings.twilio_auth_token
    signature = request.headers.get(SIGNATURE_HEADER, "")
    url = context.settings.public_base_url + request.url.path
    if token is None or not signature:
        return PlainTextResponse("forbidden", status_code=403)
    if not RequestValidator(token.get_secret_value()).validate(url, params, signature):
        return PlainTextResponse("forbidden", status_code=403)
    return params


SignedForm = Annotated[dict[str, str] | Response, Depends(signed_form)]


def _missing(form: dict[str, str], *names: str) -> Response | None:
    absent = [name for name in names if not form.get(name, "").strip()]
    if absent:
        return PlainTextResponse("missing " + ", ".join(absent), status_code=400)
    return None


@router.post("/sms/inbound", include_in_schema=False)
def sms_inbound(form: SignedForm, session: SessionDep, context: ContextDep) -> Response:
    """A text from a phone: store it, act on it, answer with TwiML."""
    if isinstance(form, Response):
        return form
    if (problem := _missing(form, "MessageSid", "From")) is not None:
        return problem
    try:
        reply = handle_inbound(
            session,
            clock=context.clock,
            message_sid=form["MessageSid"].strip(),
            from_phone=form["From"],
            to_phone=form.get("To", ""),
            body=form.get("Body", ""),
            default_program_name=context.settings.program_name,
        )
    except NotAPhoneNumber as problem:
        return PlainTextResponse(str(problem), status_code=400)
    return twiml(reply)


@router.post("/sms/status", include_in_schema=False)
def sms_status(form: SignedForm, session: SessionDep, context: ContextDep) -> Response:
    """A delivery-status callback for a text we sent."""
    if isinstance(form, Response):
        return form
    if (problem := _missing(form, "MessageSid", "MessageStatus")) is not None:
        return problem
    try:
        record_delivery(
            session,
            clock=context.clock,
            message_sid=form["MessageSid"].strip(),
            status=form["MessageStatus"],
            error_code=form.get("ErrorCode"),
            to_phone=form.get("To"),
        )
    except NotAPhoneNumber as problem:
        return PlainTextResponse(str(problem), status_code=400)
    return twiml()
