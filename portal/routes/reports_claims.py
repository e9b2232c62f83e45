"""Medicaid claims (T-MSIS extracts): admins and state analysts upload a state's claims file
(`/reports/claims`, multipart, works without JavaScript), see what came of it (loaded,
unchanged, replaced, unmatched rows by line; every malformed row by line when the file is
refused) and the past loads of their states. The command `cgt-access claims import` does
the same from a shell."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from core.identity.access import Permission, claims_state_ids
from core.identity.models import User
from core.ids import QueryId, parse_id
from core.models import State
from core.reference import list_states
from core.text import N_
from portal import i18n
from portal.deps import (
    UNSAFE_METHODS,
    ContextDep,
    PageNotFound,
    SessionDep,
    actor_for,
    check_csrf,
    refuse_nul,
    require,
)
from portal.routes.pages import page_setup
from portal.web import redirect, render
from reporting.claims import (
    COLUMNS,
    UNMATCHED_NO_PATIENT,
    ClaimLoad,
    LoadOutcome,
    get_load,
    list_loads,
    load_claims,
)
from reporting.models import ClaimFile

# An upload larger than this is refused before it is read (the command has no limit).
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
# Unmatched rows shown on a load's page (all are counted; the first 5,000 are kept).
UNMATCHED_SHOWN = 500
_ = i18n.gettext

TOO_LARGE = N_(
    "The file is larger than 64 MB. Split it into smaller files, or load it with the command "
    "“cgt-access claims import”."
)
NOTICES = {
    "loaded": N_("The file is loaded."),
    "already_loaded": N_("This file was loaded before: nothing changed."),
}
UNMATCHED_REASONS = {
    UNMATCHED_NO_PATIENT: N_("No patient of this state has this Medicaid ID."),
}


async def refuse_large_upload(request: Request) -> None:
    """Refuse a body announced larger than the limit before reading it (a body without a
    length is measured once read, see `claims_upload`)."""
    if request.method not in UNSAFE_METHODS:
        return
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > MAX_UPLOAD_BYTES + 64 * 1024:
        raise HTTPException(status_code=413, detail=TOO_LARGE)


async def upload_form(request: Request) -> FormData:
    """The posted form, files included (read once: the CSRF check read it already)."""
    return await request.form()


# The size check comes before the form is read (by the NUL and CSRF checks).
router = APIRouter(
    dependencies=[
        Depends(page_setup),
        Depends(refuse_large_upload),
        Depends(refuse_nul),
        Depends(check_csrf),
    ]
)
Loader = Annotated[User, Depends(require(Permission.CLAIMS_LOAD))]


def _page(
    request: Request,
    session: Session,
    user: User,
    *,
    selected: ClaimFile | None = None,
    refused: ClaimLoad | None = None,
    errors: dict[str, str] | None = None,
    chosen_state: int | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    state_ids = claims_state_ids(user)
    states = list_states(session, state_ids=state_ids)
    by_id = {state.id: state for state in list_states(session)}
    context: dict[str, Any] = {
        "states": states,
        "states_by_id": by_id,
        "loads": list_loads(session, state_ids=state_ids),
        "selected": selected,
        "selected_state": by_id.get(selected.state_id) if selected else None,
        "unmatched": _unmatched_rows(selected),
        "refused": refused,
        "problems": [
            (problem.line, i18n.translate(problem.message)) for problem in refused.problems
        ]
        if refused
        else [],
        "errors": errors or {},
        "chosen_state": chosen_state or (selected.state_id if selected else None),
        "notice": notice,
        "columns": COLUMNS,
        "max_mb": MAX_UPLOAD_BYTES // (1024 * 1024),
    }
    return render(request, "portal/claims.html", context, block="claims", status_code=status_code)


def _unmatched_rows(load: ClaimFile | None) -> list[tuple[int, str]]:
    if load is None:
        return []
    return [
        (int(row["line"]), _(UNMATCHED_REASONS.get(str(row.get("reason")), "")) or "")
        for row in (load.unmatched or [])[:UNMATCHED_SHOWN]
    ]


@router.get("/reports/claims", name="claims")
def claims_page(
    request: Request,
    session: SessionDep,
    user: Loader,
    load: QueryId = None,
    done: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    """The upload form, the past loads of the user's states, and one load's result
    (`?load=<id>`, where the upload redirects)."""
    selected = None
    if load is not None:
        selected = get_load(session, file_id=load, state_ids=claims_state_ids(user))
        if selected is None:
            raise PageNotFound()
    notice = _(NOTICES[done]) if done in NOTICES and selected is not None else None
    return _page(request, session, user, selected=selected, notice=notice)


@router.post("/reports/claims", name="claims_upload")
def claims_upload(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Loader,
    form: Annotated[FormData, Depends(upload_form)],
) -> Response:
    """Load the uploaded file for the chosen state: a load (or a file loaded before) goes to
    its result; a refused file is shown with every problem, and nothing is loaded."""
    errors: dict[str, str] = {}
    raw_state = form.get("state")
    state_id = parse_id(raw_state) if isinstance(raw_state, str) else None
    state = session.get(State, state_id) if state_id is not None else None
    if state is None:
        errors["state"] = _("Choose the state the file is for.")
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        errors["file"] = _("Choose a claims file (CSV).")
    elif (upload.size or 0) > MAX_UPLOAD_BYTES:
        errors["file"] = _(TOO_LARGE)
    if errors or state is None or not isinstance(upload, UploadFile):
        return _page(request, session, user, errors=errors, chosen_state=state_id, status_code=400)
    upload.file.seek(0)
    result = load_claims(
        session,
        clock=context.clock,
        actor=actor_for(request, user),
        state=state,
        filename=upload.filename or "claims.csv",
        data=upload.file,
        allowed_state_ids=claims_state_ids(user),
    )
    if result.outcome is LoadOutcome.REFUSED or result.file is None:
        return _page(request, session, user, refused=result, chosen_state=state.id, status_code=422)
    return redirect(request, f"/reports/claims?load={result.file.id}&done={result.outcome.value}")
