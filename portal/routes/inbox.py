"""A text in the worklist's inbox, for coordinators: what was written, by whom on the
patient's record, and the two ways to close it: reply by text (to the number that wrote,
within consent, texting hours and the caps) or mark it handled, with an optional note.

The item belongs to one patient: another patient's item, or one out of scope, answers 404
like a missing one, and the page names nobody else who shares the number."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Form, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from coordination.texting.by_hand import REPLY_ENDING
from coordination.texting.inbox import (
    NOTE_MAX,
    REPLY_MAX,
    InboxError,
    ReplyWordsError,
    item_of,
    item_view,
    mark_handled,
    reply_to_item,
)
from coordination.texting.models import InboxItem
from core.db import after_commit
from core.identity.access import Permission
from core.text import N_
from portal import i18n
from portal.deps import ContextDep, PageNotFound, PatientAccess, SessionDep, require_patient
from portal.routes.pages import page_router
from portal.web import redirect, render

router = page_router()
_ = i18n.gettext

Reader = Annotated[PatientAccess, Depends(require_patient(Permission.WORKLIST))]
# Answering a text is outreach, like the texts page's messages.
Texter = Annotated[PatientAccess, Depends(require_patient(Permission.NOTES_WRITE))]
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]

NOTICES = {
    "replied": N_("The reply is queued: it goes out now. The message is handled."),
    "handled": N_("The message is marked handled."),
}


def _item(session: Session, access: PatientAccess, item_id: int) -> InboxItem:
    item = item_of(session, item_id=item_id, patient_id=access.patient.id)
    if item is None:
        raise PageNotFound()
    return item


def _url(access: PatientAccess, item: InboxItem, done: str | None = None) -> str:
    url = f"/patients/{access.patient.id}/inbox/{item.id}"
    return f"{url}?done={done}" if done else url


def item_page(
    request: Request,
    session: Session,
    context: ContextDep,
    access: PatientAccess,
    item: InboxItem,
    *,
    notice: str | None = None,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    """The whole page, or (htmx) the actions' block."""
    patient = access.patient
    view = item_view(session, clock=context.clock, item=item, patient=patient)
    language = view.senders[0].language if view.senders else patient.preferred_language.value
    values: dict[str, Any] = {
        "patient": patient,
        "view": view,
        "notice": notice,
        "errors": errors or {},
        "form": form or {"reply": "", "note": ""},
        "refusal": i18n.translate(view.refusal) if view.refusal else None,
        "program": patient.state.program_name,
        "ending": REPLY_ENDING["es" if language == "es" else "en"],
        "reply_language": language,
        "zone": patient.state.time_zone,
        "note_max": NOTE_MAX,
    }
    return render(
        request, "portal/inbox_item.html", values, block="actions", status_code=status_code
    )


@router.get("/patients/{patient_id}/inbox/{item_id}", name="inbox_item")
def inbox_item(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: Reader,
    item_id: ItemId,
    done: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    """One text of the inbox (reading it is audited like reading the record)."""
    item = _item(session, access, item_id)
    notice = _(NOTICES[done]) if done in NOTICES else None
    return item_page(request, session, context, access, item, notice=notice)


@router.post("/patients/{patient_id}/inbox/{item_id}/handled", name="inbox_handled")
def inbox_handled(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: Texter,
    item_id: ItemId,
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Mark the text handled (who and when are recorded, with the optional note)."""
    item = _item(session, access, item_id)
    try:
        mark_handled(
            session,
            clock=context.clock,
            actor=access.actor,
            user=access.user,
            item=item,
            note=note,
        )
    except InboxError as problem:
        field = "handled-note" if len(note.strip()) > NOTE_MAX else ""
        return item_page(
            request,
            session,
            context,
            access,
            item,
            errors={field: i18n.translate(problem.args[0])},
            form={"reply": "", "note": "", "handled_note": note},
            status_code=400,
        )
    return redirect(request, _url(access, item, "handled"))


@router.post("/patients/{patient_id}/inbox/{item_id}/reply", name="inbox_reply")
def inbox_reply(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: Texter,
    item_id: ItemId,
    reply: Annotated[str, Form(max_length=REPLY_MAX * 2)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Answer the text by text, to the number that wrote; once it is queued, the text is
    handled. A refusal (the words, consent, texting hours, the caps) says why and keeps
    what was typed."""
    item = _item(session, access, item_id)
    form = {"reply": reply, "note": note}
    errors: dict[str, str] = {}
    if len(reply) > REPLY_MAX:
        errors["reply"] = _("Use at most %(max)d characters.") % {"max": REPLY_MAX}
    elif len(note.strip()) > NOTE_MAX:
        errors["note"] = _("Use at most 500 characters.")
    else:
        try:
            outcome = reply_to_item(
                session,
                clock=context.clock,
                actor=access.actor,
                user=access.user,
                item=item,
                patient=access.patient,
                text=reply,
                note=note,
            )
        except ReplyWordsError as problem:
            errors["reply"] = i18n.translate(problem.args[0])
        except InboxError as problem:
            errors[""] = i18n.translate(problem.args[0])
        else:
            if not outcome.queued:
                errors[""] = _("The reply was not sent: %(reason)s") % {
                    "reason": i18n.translate(outcome.reason or "")
                }
    if errors:
        return item_page(
            request, session, context, access, item, errors=errors, form=form, status_code=400
        )
    # Sent right after the commit; the dispatcher job would pick it up anyway.
    after_commit(session, context.wake_dispatcher)
    return redirect(request, _url(access, item, "replied"))
