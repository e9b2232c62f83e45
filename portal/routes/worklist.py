"""The coordinator worklist: what to do today, in buckets with counts, filters, search,
sort and pages, and bulk actions (assign, export CSV, send a reminder now).

Filters live in the URL (bucket, state, center, assigned, sort, page); a name or ID typed
into the search box never does: searching is a POST, like the patient list."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response, StreamingResponse

from coordination.worklist.assignments import (
    AssignmentError,
    assign_patients,
    assignable_coordinators,
    unassign,
)
from coordination.worklist.buckets import (
    ASSIGNED_ANY,
    ASSIGNED_MINE,
    ASSIGNED_NOBODY,
    Bucket,
    ItemKind,
    SortOrder,
    WorklistCriteria,
    WorklistRow,
    iter_rows,
    start_export,
    worklist_page,
)
from coordination.worklist.texts_page import PatientReminder, TextsError, remind_patients
from core.db import after_commit
from core.identity.access import Permission
from core.identity.models import User
from core.ids import parse_id
from core.phones import display_phone
from core.reference import list_centers, list_states
from core.text import N_
from portal import i18n
from portal.deps import ContextDep, SessionDep, actor_for, require
from portal.routes.pages import page_router
from portal.web import is_htmx, render
from portal.words import translated, word

router = page_router()
_ = i18n.gettext

Coordinator = Annotated[User, Depends(require(Permission.WORKLIST))]
MAX_CHOSEN = 500

BUCKET_TITLES = {
    Bucket.OVERDUE: N_("Overdue"),
    Bucket.TO_SCHEDULE: N_("To schedule"),
    Bucket.UNCONFIRMED: N_("Unconfirmed"),
    Bucket.MOVE_REQUESTS: N_("Move requests"),
    Bucket.TRAVEL: N_("Travel requests"),
    Bucket.REPORTS: N_("Reported events"),
    Bucket.INBOX: N_("Inbox"),
    Bucket.UNREACHABLE: N_("Unreachable"),
    Bucket.LTFU_RISK: N_("Loss-to-follow-up risk"),
    Bucket.ACTIVITY: N_("Recent activity"),
    Bucket.QUESTIONNAIRES_OVERDUE: N_("Questionnaires overdue"),
}
BUCKET_HINTS = {
    Bucket.OVERDUE: N_("The visit window closed and the visit did not happen."),
    Bucket.TO_SCHEDULE: N_("The visit window is open and no appointment is booked."),
    Bucket.UNCONFIRMED: N_("An appointment in the next 7 days that nobody confirmed."),
    Bucket.MOVE_REQUESTS: N_("A patient or caregiver asked to move a visit."),
    Bucket.TRAVEL: N_(
        "Travel support to approve, decline or arrange, and arranged travel whose visit moved "
        "or was cancelled."
    ),
    Bucket.REPORTS: N_("Events that patients or caregivers reported, not reviewed yet."),
    Bucket.INBOX: N_(
        "Texts from patients and caregivers that a person of the care team was promised to "
        "read, not handled yet. Open one to reply or mark it handled."
    ),
    Bucket.UNREACHABLE: N_("The latest text to the patient could not be delivered."),
    Bucket.LTFU_RISK: N_("The last two visits were both missed."),
    Bucket.ACTIVITY: N_("What patients and caregivers did in the last 14 days."),
    Bucket.QUESTIONNAIRES_OVERDUE: N_(
        "The visit window closed and the patient has not answered its questionnaire yet."
    ),
}
DATE_HEADINGS = {
    Bucket.OVERDUE: N_("Window closed"),
    Bucket.TO_SCHEDULE: N_("Window"),
    Bucket.UNCONFIRMED: N_("Appointment"),
    Bucket.MOVE_REQUESTS: N_("Asked on"),
    Bucket.TRAVEL: N_("Asked on, or changed on"),
    Bucket.REPORTS: N_("Reported on"),
    Bucket.INBOX: N_("Received"),
    Bucket.UNREACHABLE: N_("Last attempt"),
    Bucket.LTFU_RISK: N_("Missed visits"),
    Bucket.ACTIVITY: N_("When"),
    Bucket.QUESTIONNAIRES_OVERDUE: N_("Window closed"),
}
SORT_LABELS = {
    SortOrder.DATE_ASC: N_("Date, earliest first"),
    SortOrder.DATE_DESC: N_("Date, latest first"),
    SortOrder.NAME: N_("Patient name"),
}
# The words of each kind of row's status (one set for every page: portal/words.py).
STATUS_WORDS = {
    ItemKind.VISIT: "visit_status",
    ItemKind.CONFIRMATION: "visit_status",
    ItemKind.MOVE_REQUEST: "request_status",
    ItemKind.REPORT: "report_status",
    ItemKind.MESSAGE: "message_status",
    ItemKind.INBOX: "inbox_reason",
    ItemKind.TRAVEL_REQUEST: "travel_status",
}
NO_VISIT = N_("no open visit to remind of")


# --- reading the request ----------------------------------------------------------------


def _criteria(
    *,
    bucket: str,
    text: str = "",
    state: str,
    center: str,
    assigned: str,
    sort: str,
    page: int,
) -> WorklistCriteria:
    try:
        chosen_bucket = Bucket(bucket) if bucket else Bucket.OVERDUE
    except ValueError:
        chosen_bucket = Bucket.OVERDUE
    try:
        chosen_sort = SortOrder(sort) if sort else None
    except ValueError:
        chosen_sort = None
    assigned = assigned.strip()
    if assigned not in (ASSIGNED_MINE, ASSIGNED_NOBODY) and parse_id(assigned) is None:
        assigned = ASSIGNED_ANY
    return WorklistCriteria(
        bucket=chosen_bucket,
        text=text.strip() or None,
        state_id=parse_id(state),
        center_id=parse_id(center),
        assigned=assigned,
        sort=chosen_sort,
        page=page,
    )


def _url(criteria: WorklistCriteria, **changes: Any) -> str:
    """The GET address of these criteria (never the search text)."""
    chosen = replace(criteria, **changes)
    values = {
        "bucket": chosen.bucket.value,
        "state": chosen.state_id or "",
        "center": chosen.center_id or "",
        "assigned": chosen.assigned,
        "sort": chosen.sort.value if chosen.sort else "",
        "page": chosen.page if chosen.page > 1 else "",
    }
    return "/worklist?" + urlencode({key: value for key, value in values.items() if value})


# --- words, shared by the page and the CSV ---------------------------------------------


class Words:
    """What a row says, in the reader's language (translated once, when built)."""

    def __init__(self) -> None:
        self.status = {kind: translated(words) for kind, words in STATUS_WORDS.items()}
        self.report_kinds = translated("report_kind")
        self.purposes = translated("message_purpose")
        self.roles = translated("recipient_role")
        self.confirmed = _("Confirmed: %(visit)s")
        self.move = _("Asked to move: %(visit)s")
        self.travel = _("Travel support: %(visit)s")
        self.failed = _("Text not delivered: %(purpose)s")
        self.received = _("Text from %(phone)s: %(body)s")
        self.visit = _("Visit")

    def status_of(self, row: WorklistRow) -> str:
        return self.status.get(row.kind, {}).get(row.status, row.status)

    def what(self, row: WorklistRow) -> str:
        """The row's subject: the visit, the kind of event, the text that failed."""
        visit = row.label or self.visit
        if row.kind is ItemKind.REPORT:
            return self.report_kinds.get(row.detail or "", row.detail or "")
        if row.kind is ItemKind.MESSAGE:
            return self.failed % {"purpose": self.purposes.get(row.detail or "", row.detail)}
        if row.kind is ItemKind.INBOX:
            phone = display_phone(row.phone) if row.phone else ""
            return self.received % {"phone": phone, "body": row.detail or ""}
        if row.kind is ItemKind.CONFIRMATION:
            return self.confirmed % {"visit": visit}
        if row.kind is ItemKind.TRAVEL_REQUEST:
            return self.travel % {"visit": visit}
        if row.kind is ItemKind.MOVE_REQUEST and row.bucket is Bucket.ACTIVITY:
            return self.move % {"visit": visit}
        return visit

    def by(self, row: WorklistRow) -> str:
        if not row.actor_name:
            return ""
        role = self.roles.get(row.actor_role or "")
        return f"{row.actor_name} ({role})" if role else row.actor_name


# --- the page ---------------------------------------------------------------------------


def _page(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: User,
    criteria: WorklistCriteria,
    *,
    notice: str | None = None,
    details: list[str] | None = None,
    errors: list[str] | None = None,
    status_code: int = 200,
    open_first_with_rows: bool = False,
) -> Response:
    result = worklist_page(
        session,
        clock=context.clock,
        user=user,
        criteria=criteria,
        language=i18n.current_language().value,
        actor=actor_for(request, user),
        open_first_with_rows=open_first_with_rows,
    )
    criteria = replace(result.criteria, page=result.page)
    tabs = [
        {
            "bucket": bucket.value,
            "title": _(BUCKET_TITLES[bucket]),
            "count": result.counts[bucket],
            "url": _url(criteria, bucket=bucket, page=1),
            "current": bucket is criteria.bucket,
        }
        for bucket in Bucket
    ]
    coordinators = assignable_coordinators(session, user=user)
    return render(
        request,
        "portal/worklist.html",
        {
            "result": result,
            "criteria": criteria,
            "tabs": tabs,
            "title": _(BUCKET_TITLES[criteria.bucket]),
            "hint": _(BUCKET_HINTS[criteria.bucket]),
            "date_heading": _(DATE_HEADINGS[criteria.bucket]),
            "prev_url": _url(criteria, page=result.page - 1),
            "next_url": _url(criteria, page=result.page + 1),
            "states": list_states(session, state_ids=user.state_ids),
            "centers": list_centers(session, state_ids=user.state_ids),
            "coordinators": coordinators,
            "sorts": [(order.value, _(label)) for order, label in SORT_LABELS.items()],
            "words": Words(),
            "notice": notice,
            "details": details or [],
            "errors": errors or [],
        },
        block="results",
        status_code=status_code,
    )


@router.get("/worklist", name="worklist")
def worklist(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Coordinator,
    bucket: Annotated[str, Query(max_length=20)] = "",
    state: Annotated[str, Query(max_length=12)] = "",
    center: Annotated[str, Query(max_length=12)] = "",
    assigned: Annotated[str, Query(max_length=12)] = "",
    sort: Annotated[str, Query(max_length=12)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    """One bucket of the worklist, filtered; safe to keep in a URL. Without a bucket it
    opens on the first one with something to do (a coordinator's start page)."""
    criteria = _criteria(
        bucket=bucket, state=state, center=center, assigned=assigned, sort=sort, page=page
    )
    return _page(request, session, context, user, criteria, open_first_with_rows=not bucket)


@router.post("/worklist/search", name="worklist_search")
def worklist_search(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Coordinator,
    q: Annotated[str, Form(max_length=100)] = "",
    bucket: Annotated[str, Form(max_length=20)] = "",
    state: Annotated[str, Form(max_length=12)] = "",
    center: Annotated[str, Form(max_length=12)] = "",
    assigned: Annotated[str, Form(max_length=12)] = "",
    sort: Annotated[str, Form(max_length=12)] = "",
    page: Annotated[int, Form(ge=1, le=100_000)] = 1,
) -> Response:
    """Searching by name or Medicaid ID is a POST, so that names never reach URLs or logs."""
    criteria = _criteria(
        bucket=bucket,
        text=q,
        state=state,
        center=center,
        assigned=assigned,
        sort=sort,
        page=page,
    )
    return _page(request, session, context, user, criteria)


# --- bulk actions -----------------------------------------------------------------------


@router.post("/worklist/bulk", name="worklist_bulk")
def worklist_bulk(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Coordinator,
    action: Annotated[str, Form(max_length=12)] = "",
    patient: Annotated[list[str], Form(max_length=MAX_CHOSEN)] = [],  # noqa: B006
    coordinator: Annotated[str, Form(max_length=12)] = "",
    q: Annotated[str, Form(max_length=100)] = "",
    bucket: Annotated[str, Form(max_length=20)] = "",
    state: Annotated[str, Form(max_length=12)] = "",
    center: Annotated[str, Form(max_length=12)] = "",
    assigned: Annotated[str, Form(max_length=12)] = "",
    sort: Annotated[str, Form(max_length=12)] = "",
    page: Annotated[int, Form(ge=1, le=100_000)] = 1,
) -> Response:
    """Assign the chosen patients, export the bucket as CSV, or send them a reminder now.

    The answer is the worklist as it was (with its search), plus a notice or an error."""
    criteria = _criteria(
        bucket=bucket,
        text=q,
        state=state,
        center=center,
        assigned=assigned,
        sort=sort,
        page=page,
    )
    # htmx swaps only 2xx answers: a refused action still answers it with 200 and the alert.
    refused = 200 if is_htmx(request) else 400
    if action == "export":
        return _export(request, session, context, user, criteria)
    if action == "remind":
        return _remind(request, session, context, user, criteria, patient, refused)
    if action != "assign":
        return _page(
            request,
            session,
            context,
            user,
            criteria,
            errors=[_("Choose what to do with the chosen patients.")],
            status_code=refused,
        )
    patient_ids = sorted({id_ for value in patient if (id_ := parse_id(value)) is not None})
    actor = actor_for(request, user)
    try:
        if coordinator == "none":
            unassign(session, clock=context.clock, actor=actor, patient_ids=patient_ids)
            notice = i18n.ngettext(
                "%(num)d patient has no assigned coordinator now.",
                "%(num)d patients have no assigned coordinator now.",
                len(patient_ids),
            ) % {"num": len(patient_ids)}
        elif (coordinator_id := parse_id(coordinator)) is not None:
            assign_patients(
                session,
                clock=context.clock,
                actor=actor,
                patient_ids=patient_ids,
                coordinator_user_id=coordinator_id,
            )
            chosen = session.get(User, coordinator_id)
            notice = i18n.ngettext(
                "%(num)d patient is now followed by %(name)s.",
                "%(num)d patients are now followed by %(name)s.",
                len(patient_ids),
            ) % {"num": len(patient_ids), "name": chosen.display_name if chosen else ""}
        else:
            raise AssignmentError(N_("Choose a coordinator from the list."))
    except AssignmentError as problem:
        return _page(
            request,
            session,
            context,
            user,
            criteria,
            errors=[i18n.translate(str(problem))],
            status_code=refused,
        )
    return _page(request, session, context, user, criteria, notice=notice)


def _remind(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: User,
    criteria: WorklistCriteria,
    chosen: list[str],
    refused: int,
) -> Response:
    """ "Send reminder now" for each chosen patient; a summary with each refusal's reason."""
    patient_ids = [id_ for value in chosen if (id_ := parse_id(value)) is not None]
    try:
        reminded = remind_patients(
            session,
            clock=context.clock,
            actor=actor_for(request, user),
            user=user,
            patient_ids=patient_ids,
        )
    except TextsError as problem:
        return _page(
            request,
            session,
            context,
            user,
            criteria,
            errors=[i18n.translate(str(problem))],
            status_code=refused,
        )
    if any(item.queued for item in reminded):
        # Sent right after the commit; the dispatcher job would pick them up anyway.
        after_commit(session, context.wake_dispatcher)
    notice, details = _remind_summary(reminded)
    return _page(request, session, context, user, criteria, notice=notice, details=details)


def _remind_summary(reminded: list[PatientReminder]) -> tuple[str, list[str]]:
    queued = sum(item.queued for item in reminded)
    refusals = sum(len(item.refused) for item in reminded)
    idle = [item for item in reminded if not item.outcomes]
    notice = i18n.ngettext(
        "Reminders queued for %(num)d number.", "Reminders queued for %(num)d numbers.", queued
    ) % {"num": queued}
    if refusals:
        notice += " " + i18n.ngettext("%(num)d refused:", "%(num)d refused:", refusals) % {
            "num": refusals
        }
    if idle:
        notice += " " + i18n.ngettext(
            "%(num)d patient has no visit to remind of.",
            "%(num)d patients have no visit to remind of.",
            len(idle),
        ) % {"num": len(idle)}
    details = [
        _("%(patient)s, %(phone)s (%(who)s): %(reason)s")
        % {
            "patient": item.name,
            "phone": display_phone(outcome.phone),
            "who": word("recipient_role", "caregiver" if outcome.is_caregiver else "patient"),
            "reason": i18n.translate(outcome.reason or ""),
        }
        for item in reminded
        for outcome in item.refused
    ]
    details += [
        _("%(patient)s: %(reason)s") % {"patient": item.name, "reason": _(NO_VISIT)}
        for item in idle
    ]
    return notice, details


def _csv_cell(value: object) -> str:
    """A cell a spreadsheet shows as text (never runs as a formula)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _local(instant: datetime | None, zone: str) -> str:
    if instant is None:
        return ""
    return instant.astimezone(ZoneInfo(zone)).isoformat(timespec="minutes")


def _export(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: User,
    criteria: WorklistCriteria,
) -> Response:
    """The bucket under the current filters and search, every page, as a streamed CSV.

    The audit event (with the row count) is written and committed before a byte leaves;
    the rows are then read in batches in a session of the stream's own."""
    start_export(
        session, clock=context.clock, actor=actor_for(request, user), user=user, criteria=criteria
    )
    words = Words()
    language = i18n.current_language().value
    header = [
        _("Patient ID"),
        _("Patient"),
        _("Medicaid ID"),
        _("State"),
        _("Center"),
        _("What"),
        _("Date"),
        _("Window opens"),
        _("Window closes"),
        _("Other date"),
        _("Status"),
        _("By"),
        _("Assigned to"),
    ]
    factory, clock, user_id = context.factory, context.clock, user.id

    def line(row: WorklistRow) -> list[str]:
        main = row.on_date.isoformat() if row.on_date else _local(row.at, row.zone)
        return [
            _csv_cell(value)
            for value in (
                row.patient_id,
                row.patient_name,
                row.medicaid_id,
                row.state_code,
                row.center_name,
                words.what(row),
                main,
                row.window_start.isoformat() if row.window_start else "",
                row.window_end.isoformat() if row.window_end else "",
                row.other_date.isoformat() if row.other_date else "",
                words.status_of(row),
                words.by(row),
                row.assigned_to or "",
            )
        ]

    def chunks() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        buffer.write("\ufeff")  # a BOM, so that spreadsheets read the accents right
        writer.writerow(header)
        with factory() as reader_session:
            reader = reader_session.get(User, user_id)
            assert reader is not None
            for number, row in enumerate(
                iter_rows(
                    reader_session, clock=clock, user=reader, criteria=criteria, language=language
                ),
                start=1,
            ):
                writer.writerow(line(row))
                if number % 200 == 0:
                    yield _drain(buffer)
        yield _drain(buffer)

    filename = f"worklist-{criteria.bucket.value}-{clock.now().date().isoformat()}.csv"
    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate(0)
    return text
