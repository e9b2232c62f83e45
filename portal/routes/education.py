"""What patients and caregivers read: their modules (`/learn`), a module section by section
(resuming where they stopped, on any device), and the knowledge check that completes it.

Only patients and caregivers read modules; a caregiver's reading is their own. A module that
is not offered to the reader answers 404, like one that does not exist."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from core.identity.access import Permission
from core.identity.models import User
from core.ids import parse_int
from education.assignments import readers_of_patient
from education.content import ModuleLibrary, shipped_modules
from education.offer import (
    CHECK,
    READER_ROLES,
    OfferedModule,
    Reader,
    ReadingStatus,
    offered_module,
    offered_modules,
    reader_of,
)
from education.progress import (
    CheckOutcome,
    CheckState,
    answer_questions,
    dump_check_state,
    load_check_state,
    record_section_read,
)
from education.readings import patient_education
from education.rendering import KEY_PATTERN
from portal import i18n
from portal.context import AppContext
from portal.deps import (
    ContextDep,
    Forbidden,
    PageNotFound,
    PatientAccess,
    SessionDep,
    require,
    require_patient,
)
from portal.routes.pages import page_router
from portal.web import is_htmx, redirect, render

router = page_router()

ModuleKey = Annotated[str, Path(pattern=KEY_PATTERN, max_length=64)]
SectionId = Annotated[str, Path(pattern=KEY_PATTERN, max_length=64)]
CHECK_STATE_FIELD = "check_state"
ANSWER_PREFIX = "q-"


def require_reader() -> Callable[..., User]:
    """`require(EDUCATION_VIEW)`, for patients and caregivers only: coordinators hold the
    permission to see a patient's progress, not to read modules as someone."""
    role_check = require(Permission.EDUCATION_VIEW)

    def check(user: User = Depends(role_check)) -> User:
        if user.role not in READER_ROLES:
            raise Forbidden()
        return user

    check.permission = Permission.EDUCATION_VIEW  # type: ignore[attr-defined]
    check.readers_only = True  # type: ignore[attr-defined]
    return check


def module_library() -> ModuleLibrary:
    """The modules the pages serve (tests override this dependency with their own)."""
    return shipped_modules()


ReaderUser = Annotated[User, Depends(require_reader())]
LibraryDep = Annotated[ModuleLibrary, Depends(module_library)]


def _reader(session: Session, context: AppContext, user: User) -> Reader:
    reader = reader_of(session, user=user, clock=context.clock)
    if reader is None:  # not linked to any patient yet: nothing is offered
        raise PageNotFound()
    return reader


def _offered(
    session: Session, context: AppContext, reader: Reader, library: ModuleLibrary, key: str
) -> OfferedModule:
    offered = offered_module(
        session,
        reader=reader,
        clock=context.clock,
        key=key,
        library=library,
        language=i18n.current_language().value,
    )
    if offered is None:
        raise PageNotFound()
    return offered


def _url(key: str, part: str | None = None) -> str:
    return f"/learn/{key}" if part is None else f"/learn/{key}/{part}"


# --- the list --------------------------------------------------------------------------------


@router.get("/learn", name="learn")
def learn(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ReaderUser,
    library: LibraryDep,
    view: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    """Every module offered to the reader. htmx asking for `view=summary` gets the short
    list of what is assigned or started (the home page's card)."""
    modules = offered_modules(
        session,
        user=user,
        clock=context.clock,
        library=library,
        language=i18n.current_language().value,
    )
    if view == "summary" and is_htmx(request):
        pending = [
            item
            for item in modules
            if item.status is ReadingStatus.IN_PROGRESS
            or (item.assigned and item.status is not ReadingStatus.COMPLETED)
        ]
        return render(request, "portal/_partials/learn_summary.html", {"pending": pending})
    return render(request, "portal/learn.html", {"modules": modules})


# --- the knowledge check (before the section routes: "check" is not a section) --------------


def _check_page(
    request: Request,
    context: AppContext,
    reader: Reader,
    offered: OfferedModule,
    *,
    state: CheckState,
    chosen: dict[str, int] | None = None,
    outcome: CheckOutcome | None = None,
    just_completed: bool = False,
) -> Response:
    module = offered.module
    completion = outcome.completion if outcome is not None else None
    if completion is None and offered.status is ReadingStatus.COMPLETED:
        completion = offered.completion
    values: dict[str, Any] = {
        "item": offered,
        "text": offered.text,
        "state": state,
        "state_token": dump_check_state(
            state, secret=context.settings.secret, user_id=reader.user_id, module=module
        ),
        "chosen": chosen or {},
        "checked": outcome.checked if outcome is not None else {},
        "completion": completion,
        "just_completed": just_completed
        or (outcome is not None and outcome.completion is not None),
        "current_path": _url(module.key, CHECK),
    }
    return render(request, "portal/learn_check.html", values, block="check")


@router.get("/learn/{module_key}/check", name="learn_check")
def learn_check(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ReaderUser,
    library: LibraryDep,
    module_key: ModuleKey,
    done: Annotated[str, Query(max_length=1)] = "",
) -> Response:
    reader = _reader(session, context, user)
    offered = _offered(session, context, reader, library, module_key)
    return _check_page(
        request,
        context,
        reader,
        offered,
        state=CheckState(),
        just_completed=done == "1" and offered.status is ReadingStatus.COMPLETED,
    )


@router.post("/learn/{module_key}/check", name="learn_check_answer")
async def learn_check_answer(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ReaderUser,
    library: LibraryDep,
    module_key: ModuleKey,
) -> Response:
    """One question's answer (its own button; htmx) or all of them (no JavaScript): each
    checked answer gets its feedback; wrong ones may be tried again."""
    reader = _reader(session, context, user)
    offered = _offered(session, context, reader, library, module_key)
    form = await request.form()
    module = offered.module
    state = load_check_state(
        _text(form.get(CHECK_STATE_FIELD)),
        secret=context.settings.secret,
        user_id=reader.user_id,
        module=module,
    )
    chosen: dict[str, int] = {}
    for question in module.en.questions:
        # A choice's index; anything else counts as no answer.
        choice = parse_int(_text(form.get(ANSWER_PREFIX + question.id)), low=0, high=99)
        if choice is not None:
            chosen[question.id] = choice
    only = _text(form.get("check"))
    if offered.status is ReadingStatus.COMPLETED and not state.first:
        # Completed already (another tab): show the record, do not re-score.
        return _check_page(request, context, reader, offered, state=state)
    outcome = answer_questions(
        session,
        clock=context.clock,
        reader=reader,
        offered=offered,
        state=state,
        answers=chosen,
        only=only if only in {q.id for q in module.en.questions} else None,
    )
    if outcome.completion is not None and not is_htmx(request):
        return redirect(request, _url(module.key, CHECK) + "?done=1")
    return _check_page(
        request, context, reader, offered, state=outcome.state, chosen=chosen, outcome=outcome
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


# --- sections --------------------------------------------------------------------------------


@router.get("/learn/{module_key}", name="learn_module")
def learn_module(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ReaderUser,
    library: LibraryDep,
    module_key: ModuleKey,
) -> Response:
    """Where the reader stopped (on whatever device), or the first section."""
    reader = _reader(session, context, user)
    offered = _offered(session, context, reader, library, module_key)
    return redirect(request, _url(module_key, offered.resume_at))


def _section_page(
    request: Request,
    offered: OfferedModule,
    section_id: str,
    *,
    headers: dict[str, str] | None = None,
) -> Response:
    ids = offered.module.section_ids
    index = ids.index(section_id)
    section = offered.text.sections[index]
    values = {
        "item": offered,
        "text": offered.text,
        "section": section,
        "number": index + 1,
        "count": len(ids),
        "previous": ids[index - 1] if index > 0 else None,
        "is_last": index == len(ids) - 1,
        "current_path": _url(offered.key, section_id),
    }
    return render(request, "portal/learn_module.html", values, block="section", headers=headers)


@router.get("/learn/{module_key}/{section_id}", name="learn_section")
def learn_section(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ReaderUser,
    library: LibraryDep,
    module_key: ModuleKey,
    section_id: SectionId,
) -> Response:
    reader = _reader(session, context, user)
    offered = _offered(session, context, reader, library, module_key)
    if section_id not in offered.module.section_ids:
        raise PageNotFound()
    return _section_page(request, offered, section_id)


@router.post("/learn/{module_key}/{section_id}", name="learn_section_read")
def learn_section_read(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: ReaderUser,
    library: LibraryDep,
    module_key: ModuleKey,
    section_id: SectionId,
) -> Response:
    """ "Next": the section is read; on to the next one (htmx swaps it in and updates the
    address) or, after the last, to the knowledge check."""
    reader = _reader(session, context, user)
    offered = _offered(session, context, reader, library, module_key)
    if section_id not in offered.module.section_ids:
        raise PageNotFound()
    following = record_section_read(
        session, clock=context.clock, reader=reader, offered=offered, section_id=section_id
    )
    if following is None:
        return redirect(request, _url(module_key, CHECK))
    if is_htmx(request):
        return _section_page(
            request, offered, following, headers={"HX-Push-Url": _url(module_key, following)}
        )
    return redirect(request, _url(module_key, following))


# --- what a caregiver with the right sees of the patient's reading -------------------------

EducationViewer = Annotated[PatientAccess, Depends(require_patient(Permission.EDUCATION_VIEW))]


@router.get("/care/{patient_id}/learning", name="care_learning")
def care_learning(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: EducationViewer,
    library: LibraryDep,
) -> Response:
    """The patient's own reading (not a caregiver's), for the patient and for caregivers who
    have the right to see their education (a staff member's look is audited)."""
    patient = access.patient
    own = [
        choice for choice in readers_of_patient(session, patient=patient) if not choice.is_caregiver
    ]
    education = patient_education(
        session,
        clock=context.clock,
        patient=patient,
        library=library,
        language=i18n.current_language().value,
        readers=own,
    )
    return render(
        request,
        "portal/learn_patient.html",
        {"patient": patient, "education": education, "zone": patient.time_zone},
    )
