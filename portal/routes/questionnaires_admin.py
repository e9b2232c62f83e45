"""Admin page: the questionnaires loaded (who loaded each, when, its status), uploading a
FHIR R4 Questionnaire file (refused item by item when it goes beyond the supported subset),
retiring one or making it active again."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from coordination.questionnaires.items import QuestionnaireRefused
from coordination.questionnaires.loading import (
    FILE_MAX_BYTES,
    list_questionnaires,
    load_questionnaire,
    parse_file,
    set_questionnaire_status,
)
from coordination.questionnaires.models import Questionnaire, QuestionnaireStatus
from core.identity.access import Permission
from core.identity.models import User
from core.ids import PathId
from core.text import N_
from portal import i18n
from portal.deps import ContextDep, PageNotFound, SessionDep, actor_for, require
from portal.routes.pages import page_router
from portal.web import redirect, render

router = page_router()
PAGE = "/admin/questionnaires"
TEMPLATE = "portal/admin_questionnaires.html"
QuestionnairesAdmin = Annotated[User, Depends(require(Permission.QUESTIONNAIRES_MANAGE))]
_ = i18n.gettext

# Shown after a redirect; keys in the URL.
NOTICES = {
    "loaded": N_("The questionnaire is loaded."),
    "unchanged": N_("This questionnaire was loaded before: nothing changed."),
    "retired": N_("The questionnaire is retired: no new answers start."),
    "active": N_("The questionnaire is active again."),
}


def _page(
    request: Request,
    session: Session,
    *,
    notice: str | None = None,
    errors: dict[str, str] | None = None,
    refusals: list[str] | None = None,
    filename: str = "",
    status_code: int = 200,
) -> Response:
    context: dict[str, Any] = {
        "questionnaires": list_questionnaires(session),
        "notice": notice,
        "errors": errors or {},
        "refusals": refusals or [],
        "filename": filename,
        "max_mb": FILE_MAX_BYTES // 1_000_000,
    }
    return render(request, TEMPLATE, context, block="questionnaires", status_code=status_code)


@router.get(PAGE, name="admin_questionnaires")
def questionnaires_page(
    request: Request,
    session: SessionDep,
    user: QuestionnairesAdmin,
    done: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    return _page(request, session, notice=_(NOTICES[done]) if done in NOTICES else None)


@router.post(PAGE, name="admin_questionnaire_upload")
async def questionnaire_upload(
    request: Request, session: SessionDep, context: ContextDep, user: QuestionnairesAdmin
) -> Response:
    """Load an uploaded Questionnaire; a refused file lists every reason, item by item."""
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        errors = {"file": _("Choose a questionnaire file (FHIR JSON).")}
        return _page(request, session, errors=errors, status_code=400)
    raw = await upload.read(FILE_MAX_BYTES + 1)
    filename = upload.filename[:200]
    try:
        result = load_questionnaire(
            session, clock=context.clock, actor=actor_for(request, user), resource=parse_file(raw)
        )
    except QuestionnaireRefused as refused:
        # The reasons name the file's items (linkIds, FHIR element names), as written.
        return _page(request, session, refusals=refused.errors, filename=filename, status_code=400)
    return redirect(request, f"{PAGE}?done={'loaded' if result.created else 'unchanged'}")


@router.post(PAGE + "/{questionnaire_id}/status", name="admin_questionnaire_status")
async def questionnaire_status(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: QuestionnairesAdmin,
    questionnaire_id: PathId,
) -> Response:
    """Retire a questionnaire (with its other languages) or make it active again."""
    questionnaire = session.get(Questionnaire, questionnaire_id)
    if questionnaire is None:
        raise PageNotFound()
    form = await request.form()
    try:
        status = QuestionnaireStatus(str(form.get("status", "")))
    except ValueError:
        errors = {"": _("Choose to retire the questionnaire or make it active.")}
        return _page(request, session, errors=errors, status_code=400)
    set_questionnaire_status(
        session,
        clock=context.clock,
        actor=actor_for(request, user),
        questionnaire=questionnaire,
        status=status,
    )
    return redirect(request, f"{PAGE}?done={status.value}")
