"""Admin page: the therapies and the codes that name each one in a center's FHIR data
(the infusion Procedure or MedicationAdministration): add and remove codes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from core.errors import FieldErrors
from core.identity.access import Permission
from core.identity.models import User
from core.therapy_codes import (
    KNOWN_SYSTEMS,
    PLATFORM_SYSTEM,
    TherapyCodeInput,
    add_therapy_code,
    remove_therapy_code,
    therapies_with_codes,
)
from portal import i18n
from portal.deps import ContextDep, SessionDep, actor_for, require
from portal.routes.pages import page_router
from portal.web import redirect, render

router = page_router()
TEMPLATE = "portal/admin_therapies.html"
PAGE = "/admin/therapies"

TherapiesAdmin = Annotated[User, Depends(require(Permission.ADMIN_THERAPIES))]


class CodeForm(BaseModel):
    therapy_id: str = Field("", max_length=12)
    system: str = Field("", max_length=400)
    code: str = Field("", max_length=200)
    display: str = Field("", max_length=400)


def _page(session: Session, **values: Any) -> dict[str, Any]:
    return {
        "therapies": therapies_with_codes(session),
        "known_systems": KNOWN_SYSTEMS,
        "known_names": {system.uri: system.name for system in KNOWN_SYSTEMS},
        "platform_system": PLATFORM_SYSTEM,
        "form": TherapyCodeInput(),
        **values,
    }


@router.get(PAGE, name="admin_therapies")
def therapies_page(request: Request, session: SessionDep, user: TherapiesAdmin) -> Response:
    return render(request, TEMPLATE, _page(session), block="therapies")


@router.post(PAGE + "/codes", name="admin_therapy_code_add")
def code_add(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: TherapiesAdmin,
    data: Annotated[CodeForm, Form()],
) -> Response:
    """Add a code that names a therapy (refused when another therapy has it)."""
    form = TherapyCodeInput(**data.model_dump())
    try:
        add_therapy_code(session, clock=context.clock, actor=actor_for(request, user), data=form)
    except FieldErrors as problem:
        return render(
            request,
            TEMPLATE,
            _page(session, form=form, errors=i18n.translate_errors(problem.errors)),
            block="therapies",
            status_code=400,
        )
    return redirect(request, PAGE)


@router.post(PAGE + "/codes/remove", name="admin_therapy_code_remove")
def code_remove(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: TherapiesAdmin,
    code_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """Remove a configured code (the platform's own codes cannot be removed)."""
    try:
        remove_therapy_code(
            session, clock=context.clock, actor=actor_for(request, user), code_id=code_id
        )
    except FieldErrors as problem:
        return render(
            request,
            TEMPLATE,
            _page(session, remove_errors=i18n.translate_errors(problem.errors)),
            block="therapies",
            status_code=400,
        )
    return redirect(request, PAGE)
