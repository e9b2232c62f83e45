"""The coordinator worklist: what needs doing today, for the coordinator's states, in buckets.

A read model: each bucket is one SQL query that yields "items" (a visit, a move request, a
report, a failed text, a patient's action, a text for the care team) in a common shape,
already cut to the coordinator's scope and filters. Counting a bucket counts its items; a
page sorts the items, takes 25, and joins only those to what they display (patient, state,
center, therapy, visit, assigned coordinator, who acted). A page therefore costs the same
number of statements whatever the number of rows: one COUNT per bucket, one for the rows.

"Today" is the date in each patient's state's time zone (``State.time_zone``): the states
in scope are grouped by their local date, so a page builds one condition per distinct date
(usually one), never a filter per row.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Date,
    Integer,
    Select,
    String,
    Subquery,
    and_,
    case,
    cast,
    false,
    func,
    literal_column,
    null,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.orm import Session, aliased

from coordination.followup.models import (
    OPEN_VISIT_STATUSES,
    MoveRequest,
    PatientReport,
    ReportStatus,
    RequestStatus,
    Visit,
    VisitEvent,
    VisitStatus,
)
from coordination.followup.protocol import ProtocolLibrary, shipped_protocols
from coordination.questionnaires.due import overdue_condition as questionnaires_overdue
from coordination.texting.models import InboundMessage, InboxItem, MessageStatus, OutboundMessage
from coordination.travel.models import OPEN_TRAVEL_STATUSES, TravelRequest
from coordination.worklist.models import CareAssignment
from core.audit.service import Actor, record_event
from core.clock import Clock, local_today
from core.db import UTCDateTime
from core.identity.access import scope_patients
from core.identity.models import Role, User
from core.ids import parse_id
from core.models import Patient, PatientStatus, State, Therapy, TreatmentCenter

PER_PAGE = 25
UNCONFIRMED_HORIZON = timedelta(days=7)
ACTIVITY_WINDOW = timedelta(days=14)
MAX_SEARCH_WORDS = 4
# Patients whose follow-up has ended: they are nobody's to chase any more (their reports,
# move requests and activity still show, so that a person closes them).
_FOLLOW_UP_ENDED = (PatientStatus.WITHDRAWN, PatientStatus.DECEASED)
_FINAL_VISITS = (VisitStatus.COMPLETED, VisitStatus.MISSED)


# Aliases built once (an alias's adapted columns are memoized on it).
_MESSAGE = aliased(OutboundMessage, name="message")
_NEWER = aliased(OutboundMessage, name="newer")
_LATEST = aliased(Visit, name="latest")
_BEFORE = aliased(Visit, name="before")
_OTHER = aliased(Visit, name="other")
_CONFIRMER = aliased(User, name="confirmer")
_ASSIGNEE = aliased(User, name="assignee")
_ACTOR = aliased(User, name="actor")


class Bucket(enum.StrEnum):
    """The worklist's tabs, in the order they are shown."""

    OVERDUE = "overdue"  # the window closed, the visit did not happen (or nobody followed up)
    TO_SCHEDULE = "to_schedule"  # the window is open and no appointment is booked
    UNCONFIRMED = "unconfirmed"  # an appointment within 7 days, not confirmed
    MOVE_REQUESTS = "move_requests"  # a patient or caregiver asked to move a visit
    TRAVEL = "travel"  # travel support asked, approved not booked yet, or its visit changed
    REPORTS = "reports"  # a patient or caregiver reported an event, not reviewed yet
    INBOX = "inbox"  # a text for a person of the care team, not handled yet
    UNREACHABLE = "unreachable"  # the latest text to the patient failed
    LTFU_RISK = "ltfu_risk"  # the two latest visits were both missed
    ACTIVITY = "activity"  # what patients and caregivers did in the last 14 days
    # a visit's questionnaire not answered by the end of its window (still answerable)
    QUESTIONNAIRES_OVERDUE = "questionnaires"


class SortOrder(enum.StrEnum):
    DATE_ASC = "date_asc"
    DATE_DESC = "date_desc"
    NAME = "name"


class ItemKind(enum.StrEnum):
    """What a worklist row is about (and so where it links to)."""

    VISIT = "visit"
    MOVE_REQUEST = "move_request"
    REPORT = "report"
    MESSAGE = "message"
    CONFIRMATION = "confirmation"
    INBOX = "inbox"  # an inbox item: a text received for the care team
    TRAVEL_REQUEST = "travel_request"  # a request for travel support to reach a visit


ASSIGNED_ANY = ""
ASSIGNED_MINE = "mine"
ASSIGNED_NOBODY = "unassigned"


def default_sort(bucket: Bucket) -> SortOrder:
    """The most urgent first: oldest for work to do, newest for the activity feed and the
    inbox (a text just received is the one its sender waits on)."""
    return SortOrder.DATE_DESC if bucket in (Bucket.ACTIVITY, Bucket.INBOX) else SortOrder.DATE_ASC


@dataclass(frozen=True)
class WorklistCriteria:
    """What the coordinator asked to see. `assigned` is "" (anybody), "mine",
    "unassigned", or a coordinator's user id as digits. `sort` None means the bucket's
    default order."""

    bucket: Bucket = Bucket.OVERDUE
    text: str | None = None
    state_id: int | None = None
    center_id: int | None = None
    assigned: str = ASSIGNED_ANY
    sort: SortOrder | None = None
    page: int = 1

    @property
    def order(self) -> SortOrder:
        return self.sort or default_sort(self.bucket)


@dataclass(frozen=True)
class WorklistRow:
    """One line of a bucket, with everything the page and the CSV show (no lazy loads)."""

    bucket: Bucket
    kind: ItemKind
    item_id: int  # the visit, move request, report, message, visit event or inbox item
    patient_id: int
    given_name: str
    family_name: str
    medicaid_id: str
    state_code: str
    center_name: str
    zone: str  # the time zone to show instants in (the appointment's, else the state's)
    status: str  # the visit's, request's, report's or message's status value
    visit_id: int | None = None
    label: str | None = None  # the protocol's name of the visit, in the reader's language
    detail: str | None = None  # the report kind, the failed text's purpose, a text received
    on_date: date | None = None  # the row's date: window end, target date, ...
    at: datetime | None = None  # the row's instant: appointment, request, report, ...
    window_start: date | None = None
    window_end: date | None = None
    other_date: date | None = None  # preferred date, date of the event, earlier missed visit
    actor_name: str | None = None  # who did it (activity, requests, reports)
    actor_role: str | None = None
    assigned_user_id: int | None = None
    assigned_to: str | None = None
    phone: str | None = None  # the number a text came from (inbox)

    @property
    def patient_name(self) -> str:
        return f"{self.family_name}, {self.given_name}"

    @property
    def report_id(self) -> int | None:
        return self.item_id if self.kind is ItemKind.REPORT else None


@dataclass(frozen=True)
class WorklistPage:
    criteria: WorklistCriteria
    rows: list[WorklistRow]
    total: int
    page: int
    pages: int
    counts: dict[Bucket, int] = field(default_factory=dict)


# --- building blocks -------------------------------------------------------------------


@dataclass(frozen=True)
class _Today:
    """The local dates of today in the reader's states, and the instants that matter."""

    now: datetime
    # local date -> the states (in scope) where it is that date now
    by_date: dict[date, tuple[int, ...]]

    @classmethod
    def load(cls, session: Session, *, clock: Clock, user: User) -> _Today:
        now = clock.now()
        by_date: dict[date, list[int]] = {}
        if user.state_ids:
            for state_id, zone in session.execute(
                select(State.id, State.time_zone).where(State.id.in_(user.state_ids))
            ):
                by_date.setdefault(local_today(clock, zone), []).append(state_id)
        return cls(now=now, by_date={day: tuple(ids) for day, ids in by_date.items()})

    def per_state(self, condition: Callable[[date], ColumnElement[bool]]) -> ColumnElement[bool]:
        """`condition(today)` for each state's own today, OR-ed (one branch per date)."""
        branches = [
            and_(Patient.state_id.in_(state_ids), condition(day))
            for day, state_ids in self.by_date.items()
        ]
        if not branches:
            return false()
        return branches[0] if len(branches) == 1 else or_(*branches)

    @property
    def latest(self) -> date:
        return max(self.by_date, default=self.now.date())

    @property
    def earliest(self) -> date:
        return min(self.by_date, default=self.now.date())


@dataclass(frozen=True)
class _Ask:
    """One question to the worklist: when, who asks, with which filters."""

    today: _Today
    user: User
    criteria: WorklistCriteria

    @cached_property
    def filters(self) -> list[ColumnElement[bool]]:
        return _filters(self.user, self.criteria)

    def scoped(self, query: Select[Any]) -> Select[Any]:
        """`query` (whose FROM joins Patient) cut to the reader's scope and the filters."""
        if self.criteria.assigned != ASSIGNED_ANY:
            query = query.outerjoin(CareAssignment, CareAssignment.patient_id == Patient.id)
        return query.where(*self.filters)


def _typed_null(type_: Any) -> ColumnElement[Any]:
    return cast(null(), type_)


def _kind(kind: ItemKind) -> ColumnElement[str]:
    # Rendered inline (not a bound parameter) so PostgreSQL knows its type inside a UNION.
    return literal_column(f"'{kind.value}'", String)


def _item(
    *,
    kind: ItemKind,
    item_id: Any,
    sort_key: Any,
    status: Any,
    visit_id: Any = None,
    on_date: Any = None,
    at: Any = None,
    other_date: Any = None,
    detail: Any = None,
    actor_user_id: Any = None,
    phone: Any = None,
) -> list[ColumnElement[Any]]:
    """The columns every bucket's items have, in one order (so that UNION works). The
    item's select joins Patient: the names to sort by come from there."""

    def given(value: Any, type_: Any) -> ColumnElement[Any]:
        return _typed_null(type_) if value is None else value

    return [
        Patient.id.label("patient_id"),
        _kind(kind).label("kind"),
        given(item_id, Integer).label("item_id"),
        given(visit_id, Integer).label("visit_id"),
        given(sort_key, UTCDateTime()).label("sort_key"),
        func.lower(Patient.family_name).label("family_key"),
        func.lower(Patient.given_name).label("given_key"),
        given(on_date, Date).label("on_date"),
        given(at, UTCDateTime()).label("at"),
        given(other_date, Date).label("other_date"),
        given(status, String).label("status"),
        given(detail, String).label("detail"),
        given(actor_user_id, Integer).label("actor_user_id"),
        given(phone, String).label("phone"),
    ]


def _visit_items(*, sort_key: Any, on_date: Any = None, at: Any = None) -> Select[Any]:
    """The items of a bucket of visits: one per visit, with its patient joined."""
    return (
        select(
            *_item(
                kind=ItemKind.VISIT,
                item_id=Visit.id,
                visit_id=Visit.id,
                sort_key=sort_key,
                on_date=on_date,
                at=at,
                status=Visit.status,
            )
        )
        .select_from(Visit)
        .join(Patient, Patient.id == Visit.patient_id)
    )


def _following(query: Select[Any]) -> Select[Any]:
    """Only patients whose follow-up goes on (not withdrawn, not deceased)."""
    return query.where(Patient.status.not_in(_FOLLOW_UP_ENDED))


def _overdue(ask: _Ask) -> Select[Any]:
    today = ask.today
    chased = (*OPEN_VISIT_STATUSES, VisitStatus.MISSED)
    query = _visit_items(sort_key=Visit.window_end, on_date=Visit.window_end).where(
        # The index (status, window_end) narrows; the per-state branches decide.
        Visit.status.in_(chased),
        Visit.window_end < today.latest,
        today.per_state(lambda day: Visit.window_end < day),
        or_(Visit.status != VisitStatus.MISSED, Visit.missed_acknowledged_at.is_(None)),
    )
    return ask.scoped(_following(query))


def _questionnaires_overdue(ask: _Ask) -> Select[Any]:
    query = (
        _visit_items(sort_key=Visit.window_end, on_date=Visit.window_end)
        .join(Therapy, Therapy.id == Patient.therapy_id)
        .where(
            ask.today.per_state(
                lambda day: questionnaires_overdue(library=shipped_protocols(), today=day)
            )
        )
    )
    return ask.scoped(_following(query))


def _to_schedule(ask: _Ask) -> Select[Any]:
    today = ask.today
    # The nearest deadline first.
    query = _visit_items(sort_key=Visit.window_end, on_date=Visit.window_end).where(
        # Due visits whose window has opened are few (the nightly job turns the past
        # ones into missed): the (status, window_start) index drives. The window's end
        # is written so that no index on it is tempting: "window_end >= today" matches
        # every future visit, and a planner without statistics might walk them all.
        Visit.status == VisitStatus.DUE,
        Visit.window_start <= today.latest,
        today.per_state(lambda day: and_(Visit.window_start <= day, _not_indexed(day))),
    )
    return ask.scoped(_following(query))


def _not_indexed(day: date) -> ColumnElement[bool]:
    """`Visit.window_end >= day`, as an expression no index serves (same value)."""
    return func.coalesce(Visit.window_end, Visit.window_end) >= day


def _unconfirmed(ask: _Ask) -> Select[Any]:
    now = ask.today.now
    query = _visit_items(sort_key=Visit.appointment_at, at=Visit.appointment_at).where(
        Visit.status.in_((VisitStatus.SCHEDULED, VisitStatus.RESCHEDULED)),
        Visit.appointment_at >= now,
        Visit.appointment_at <= now + UNCONFIRMED_HORIZON,
    )
    return ask.scoped(_following(query))


def _move_request_items() -> Select[Any]:
    return (
        select(
            *_item(
                kind=ItemKind.MOVE_REQUEST,
                item_id=MoveRequest.id,
                visit_id=MoveRequest.visit_id,
                sort_key=MoveRequest.created_at,
                at=MoveRequest.created_at,
                other_date=MoveRequest.preferred_date,
                status=MoveRequest.status,
                actor_user_id=MoveRequest.requested_by_user_id,
            )
        )
        .select_from(MoveRequest)
        .join(Patient, Patient.id == MoveRequest.patient_id)
    )


def _report_items() -> Select[Any]:
    return (
        select(
            *_item(
                kind=ItemKind.REPORT,
                item_id=PatientReport.id,
                sort_key=PatientReport.reported_at,
                at=PatientReport.reported_at,
                other_date=PatientReport.occurred_on,
                status=PatientReport.status,
                detail=PatientReport.kind,
                actor_user_id=PatientReport.reported_by_user_id,
            )
        )
        .select_from(PatientReport)
        .join(Patient, Patient.id == PatientReport.patient_id)
    )


def _move_requests(ask: _Ask) -> Select[Any]:
    return ask.scoped(_move_request_items().where(MoveRequest.status == RequestStatus.OPEN))


def _travel(ask: _Ask) -> Select[Any]:
    """Travel requests waiting for a coordinator: asked, approved but not arranged, or
    flagged to review because their visit moved or was cancelled (status "to_review")."""
    to_review = TravelRequest.review_needed_at.is_not(None)
    query = (
        select(
            *_item(
                kind=ItemKind.TRAVEL_REQUEST,
                item_id=TravelRequest.id,
                visit_id=TravelRequest.visit_id,
                sort_key=func.coalesce(TravelRequest.review_needed_at, TravelRequest.created_at),
                at=func.coalesce(TravelRequest.review_needed_at, TravelRequest.created_at),
                status=case(
                    (to_review, literal_column("'to_review'", String)),
                    else_=cast(TravelRequest.status, String),
                ),
                actor_user_id=TravelRequest.requested_by_user_id,
            )
        )
        .select_from(TravelRequest)
        .join(Patient, Patient.id == TravelRequest.patient_id)
        .where(or_(TravelRequest.status.in_(OPEN_TRAVEL_STATUSES), to_review))
    )
    return ask.scoped(query)


def _reports(ask: _Ask) -> Select[Any]:
    return ask.scoped(_report_items().where(PatientReport.status == ReportStatus.NEW))


def _inbox(ask: _Ask) -> Select[Any]:
    """Texts for a person of the care team that nobody handled yet, one row per patient the
    text may be about (a number shared by two states' patients shows each state its own).
    Patients whose follow-up ended still show: a person reads what they wrote."""
    query = (
        select(
            *_item(
                kind=ItemKind.INBOX,
                item_id=InboxItem.id,
                sort_key=InboxItem.received_at,
                at=InboxItem.received_at,
                status=InboundMessage.intent,
                detail=InboundMessage.body,
                phone=InboundMessage.from_phone,
            )
        )
        .select_from(InboxItem)
        .join(Patient, Patient.id == InboxItem.patient_id)
        .join(InboundMessage, InboundMessage.id == InboxItem.inbound_message_id)
        .where(InboxItem.handled_at.is_(None))
    )
    return ask.scoped(query)


def _unreachable(ask: _Ask) -> Select[Any]:
    """Patients whose latest text failed (a timeout after all retries, an invalid number,
    undelivered): until a later text reaches them. Texts dropped on purpose (consent, the
    visit changed) neither hide nor clear a failure."""
    now = ask.today.now
    message, newer = _MESSAGE, _NEWER
    # Correlated on the patient (not the message) so that it runs after the scope's cut.
    has_newer = (
        select(newer.id)
        .where(
            newer.patient_id == Patient.id,
            newer.status.in_((MessageStatus.SENT, MessageStatus.DELIVERED)),
            newer.send_after <= now,
            tuple_(newer.send_after, newer.id) > tuple_(message.send_after, message.id),
        )
        .exists()
    )
    attempted = func.coalesce(message.claimed_at, message.send_after)
    query = (
        select(
            *_item(
                kind=ItemKind.MESSAGE,
                item_id=message.id,
                sort_key=attempted,
                at=attempted,
                status=message.status,
                detail=message.purpose,
            )
        )
        .select_from(message)
        .join(Patient, Patient.id == message.patient_id)
        .where(message.status == MessageStatus.FAILED, message.send_after <= now, ~has_newer)
    )
    return ask.scoped(_following(query))


def _ltfu_risk(ask: _Ask) -> Select[Any]:
    """Patients whose two latest final visits (completed or missed) were both missed: the
    latest final visit is missed, and so is the one right before it."""
    latest, before, other = _LATEST, _BEFORE, _OTHER
    # Both checks are correlated on the patient (not only on the visit), so that they run
    # after the scope and the filters have cut the candidates down.
    later_final = (
        select(other.id)
        .where(
            other.patient_id == Patient.id,
            other.status.in_(_FINAL_VISITS),
            tuple_(other.target_date, other.id) > tuple_(latest.target_date, latest.id),
        )
        .exists()
    )
    final_between = (
        select(other.id)
        .where(
            other.patient_id == Patient.id,
            other.status.in_(_FINAL_VISITS),
            other.target_date > before.target_date,
            other.target_date < latest.target_date,
        )
        .exists()
    )
    query = (
        select(
            *_item(
                kind=ItemKind.VISIT,
                item_id=latest.id,
                visit_id=latest.id,
                sort_key=latest.target_date,
                on_date=latest.target_date,
                other_date=before.target_date,
                status=latest.status,
            )
        )
        .select_from(latest)
        .join(Patient, Patient.id == latest.patient_id)
        .join(
            before,
            and_(
                before.patient_id == Patient.id,
                before.status == VisitStatus.MISSED,
                before.target_date < latest.target_date,
            ),
        )
        .where(latest.status == VisitStatus.MISSED, ~later_final, ~final_between)
    )
    return ask.scoped(_following(query))


def _activity(ask: _Ask) -> Select[Any]:
    """Confirmations, move requests and reports by patients and caregivers, 14 days."""
    since = ask.today.now - ACTIVITY_WINDOW
    actor = _CONFIRMER
    confirmations = (
        select(
            *_item(
                kind=ItemKind.CONFIRMATION,
                item_id=VisitEvent.id,
                visit_id=VisitEvent.visit_id,
                sort_key=VisitEvent.at,
                at=VisitEvent.at,
                status=VisitEvent.to_status,
                actor_user_id=VisitEvent.actor_user_id,
            )
        )
        .select_from(VisitEvent)
        .join(Visit, Visit.id == VisitEvent.visit_id)
        # "+ 0": recent events drive this branch, not every visit of every patient in scope
        # (SQLite would otherwise walk patients -> visits -> events to sort a page).
        .join(Patient, Patient.id == Visit.patient_id + 0)
        .join(actor, actor.id == VisitEvent.actor_user_id)
        .where(
            VisitEvent.action == "confirm",
            VisitEvent.at >= since,
            actor.role.in_((Role.PATIENT, Role.CAREGIVER)),
        )
    )
    requests = _move_request_items().where(
        # Every status listed, so that the (status, created_at) index serves the range.
        MoveRequest.status.in_(tuple(RequestStatus)),
        MoveRequest.created_at >= since,
    )
    reports = _report_items().where(
        PatientReport.status.in_(tuple(ReportStatus)),
        PatientReport.reported_at >= since,
    )
    # The scope and filters apply around the union, not in each branch: each branch is
    # bounded by its recent-time range, which is what should drive it (not the scope).
    recent = union_all(confirmations, requests, reports).subquery("activity_union")
    return ask.scoped(
        select(recent).select_from(recent).join(Patient, Patient.id == recent.c.patient_id)
    )


_BUCKET_ITEMS: dict[Bucket, Callable[[_Ask], Select[Any]]] = {
    Bucket.OVERDUE: _overdue,
    Bucket.TO_SCHEDULE: _to_schedule,
    Bucket.UNCONFIRMED: _unconfirmed,
    Bucket.MOVE_REQUESTS: _move_requests,
    Bucket.TRAVEL: _travel,
    Bucket.REPORTS: _reports,
    Bucket.INBOX: _inbox,
    Bucket.UNREACHABLE: _unreachable,
    Bucket.LTFU_RISK: _ltfu_risk,
    Bucket.ACTIVITY: _activity,
    Bucket.QUESTIONNAIRES_OVERDUE: _questionnaires_overdue,
}


def _items(ask: _Ask, bucket: Bucket | None = None) -> Subquery:
    """The bucket's items in scope and matching the filters (one row per worklist row)."""
    bucket = bucket or ask.criteria.bucket
    return _BUCKET_ITEMS[bucket](ask).subquery(f"{bucket.value}_items")


def _count_query(ask: _Ask, bucket: Bucket) -> Select[Any]:
    """COUNT(*) of the bucket's items (its select with only the count as column)."""
    return _BUCKET_ITEMS[bucket](ask).with_only_columns(func.count(), maintain_column_froms=False)


def _like_pattern(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filters(user: User, criteria: WorklistCriteria) -> list[ColumnElement[bool]]:
    """The reader's scope and the chosen filters, over Patient (and CareAssignment)."""
    clauses: list[ColumnElement[bool]] = []
    scope = scope_patients(select(Patient), user).whereclause
    clauses.append(scope if scope is not None else false())
    if criteria.text and criteria.text.strip():
        for word in criteria.text.strip().lower().split()[:MAX_SEARCH_WORDS]:
            pattern = _like_pattern(word)
            clauses.append(
                or_(
                    func.lower(Patient.given_name).like(pattern, escape="\\"),
                    func.lower(Patient.family_name).like(pattern, escape="\\"),
                    func.lower(Patient.medicaid_id).like(pattern, escape="\\"),
                    func.lower(Patient.center_mrn).like(pattern, escape="\\"),
                )
            )
    if criteria.state_id is not None:
        clauses.append(Patient.state_id == criteria.state_id)
    if criteria.center_id is not None:
        clauses.append(Patient.center_id == criteria.center_id)
    if criteria.assigned == ASSIGNED_MINE:
        clauses.append(CareAssignment.coordinator_user_id == user.id)
    elif criteria.assigned == ASSIGNED_NOBODY:
        clauses.append(CareAssignment.patient_id.is_(None))
    elif (coordinator_id := parse_id(criteria.assigned)) is not None:
        clauses.append(CareAssignment.coordinator_user_id == coordinator_id)
    return clauses


def _ordering(columns: Any, order: SortOrder) -> tuple[Any, ...]:
    names = (columns.family_key, columns.given_key)
    match order:
        case SortOrder.NAME:
            return (*names, columns.sort_key, columns.item_id)
        case SortOrder.DATE_DESC:
            return (columns.sort_key.desc(), *names, columns.item_id.desc())
        case _:
            return (columns.sort_key, *names, columns.item_id)


def _rows_query(
    items: Subquery, *, order: SortOrder, limit: int | None = None, offset: int = 0
) -> Select[Any]:
    """The rows to show: the page is chosen among the items first, and only its rows are
    joined to what they display (patient, state, center, visit, assigned coordinator)."""
    if limit is not None:
        chosen = (
            select(items).order_by(*_ordering(items.c, order)).limit(limit).offset(offset)
        ).subquery("page")
    else:
        chosen = items
    assignee, actor = _ASSIGNEE, _ACTOR
    columns: list[Any] = [
        chosen.c.kind,
        chosen.c.item_id,
        chosen.c.patient_id,
        chosen.c.visit_id,
        chosen.c.on_date,
        chosen.c.at,
        chosen.c.other_date,
        chosen.c.status,
        chosen.c.detail,
        chosen.c.phone,
        Patient.given_name,
        Patient.family_name,
        Patient.medicaid_id,
        State.code.label("state_code"),
        State.time_zone.label("state_zone"),
        TreatmentCenter.name.label("center_name"),
        Therapy.code.label("therapy_code"),
        Visit.visit_key,
        Visit.protocol_version,
        Visit.window_start,
        Visit.window_end,
        Visit.appointment_zone,
        assignee.id.label("assigned_user_id"),
        assignee.display_name.label("assigned_to"),
        actor.display_name.label("actor_name"),
        actor.role.label("actor_role"),
    ]
    return (
        select(*columns)
        .select_from(chosen)
        .join(Patient, Patient.id == chosen.c.patient_id)
        .join(State, State.id == Patient.state_id)
        .join(TreatmentCenter, TreatmentCenter.id == Patient.center_id)
        .join(Therapy, Therapy.id == Patient.therapy_id)
        .outerjoin(Visit, Visit.id == chosen.c.visit_id)
        .outerjoin(CareAssignment, CareAssignment.patient_id == Patient.id)
        .outerjoin(assignee, assignee.id == CareAssignment.coordinator_user_id)
        .outerjoin(actor, actor.id == chosen.c.actor_user_id)
        .order_by(*_ordering(chosen.c, order))
    )


class _Labels:
    """Visit labels from the protocols, in one language, looked up once per visit kind."""

    def __init__(self, library: ProtocolLibrary, language: str) -> None:
        self.library, self.language = library, language
        self.known: dict[tuple[str, int, str], str] = {}

    def __call__(self, therapy: str, version: int | None, key: str | None) -> str | None:
        if key is None:
            return None
        found = self.known.get((therapy, version or 0, key))
        if found is None:
            visit = self.library.visit_of(therapy, version, key)
            found = visit.label.text(self.language) if visit is not None else key
            self.known[(therapy, version or 0, key)] = found
        return found


def _value(value: Any) -> str | None:
    if value is None:
        return None
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


def _to_row(bucket: Bucket, record: Any, labels: _Labels) -> WorklistRow:
    return WorklistRow(
        bucket=bucket,
        kind=ItemKind(record.kind),
        item_id=record.item_id,
        patient_id=record.patient_id,
        given_name=record.given_name,
        family_name=record.family_name,
        medicaid_id=record.medicaid_id,
        state_code=record.state_code,
        center_name=record.center_name,
        zone=record.appointment_zone or record.state_zone,
        status=_value(record.status) or "",
        visit_id=record.visit_id,
        label=labels(record.therapy_code, record.protocol_version, record.visit_key),
        detail=_value(record.detail),
        on_date=record.on_date,
        at=record.at,
        window_start=record.window_start,
        window_end=record.window_end,
        other_date=record.other_date,
        actor_name=record.actor_name,
        actor_role=_value(record.actor_role),
        assigned_user_id=record.assigned_user_id,
        assigned_to=record.assigned_to,
        phone=record.phone,
    )


# --- the public read model -------------------------------------------------------------


def _ask(session: Session, *, clock: Clock, user: User, criteria: WorklistCriteria) -> _Ask:
    return _Ask(today=_Today.load(session, clock=clock, user=user), user=user, criteria=criteria)


def _counts(session: Session, ask: _Ask, buckets: Sequence[Bucket]) -> dict[Bucket, int]:
    return {bucket: session.scalar(_count_query(ask, bucket)) or 0 for bucket in buckets}


def bucket_counts(
    session: Session,
    *,
    clock: Clock,
    user: User,
    criteria: WorklistCriteria,
    buckets: Sequence[Bucket] = tuple(Bucket),
) -> dict[Bucket, int]:
    """How many rows each bucket has under `criteria`'s filters (one COUNT per bucket)."""
    ask = _ask(session, clock=clock, user=user, criteria=criteria)
    return _counts(session, ask, buckets)


def worklist_page(
    session: Session,
    *,
    clock: Clock,
    user: User,
    criteria: WorklistCriteria,
    language: str,
    actor: Actor,
    per_page: int = PER_PAGE,
    open_first_with_rows: bool = False,
) -> WorklistPage:
    """One page of one bucket for `user` (a coordinator: their states, and center if set),
    with the count of every bucket under the same filters. A page past the end shows the
    last page. Visit labels are in `language`. With `open_first_with_rows`, the bucket
    shown is the first that has rows (overdue when none has), whatever `criteria` says.
    Audited (which bucket and page, how many rows shown, whether it was a search; never
    the search's words)."""
    ask = _ask(session, clock=clock, user=user, criteria=criteria)
    counts = _counts(session, ask, tuple(Bucket))
    if open_first_with_rows:
        first = next((bucket for bucket in Bucket if counts[bucket]), Bucket.OVERDUE)
        criteria = replace(criteria, bucket=first)
        ask = replace(ask, criteria=criteria)
    total = counts[criteria.bucket]
    pages = max(1, (total + per_page - 1) // per_page)
    page = min(max(criteria.page, 1), pages)
    query = _rows_query(
        _items(ask), order=criteria.order, limit=per_page, offset=(page - 1) * per_page
    )
    labels = _Labels(shipped_protocols(), language)
    rows = [_to_row(criteria.bucket, record, labels) for record in session.execute(query)]
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="worklist.view",
        detail={
            "bucket": criteria.bucket.value,
            "page": page,
            "shown": len(rows),
            "searched": criteria.text is not None,
        },
    )
    return WorklistPage(
        criteria=criteria, rows=rows, total=total, page=page, pages=pages, counts=counts
    )


def count_rows(session: Session, *, clock: Clock, user: User, criteria: WorklistCriteria) -> int:
    """How many rows `criteria`'s bucket has (all pages)."""
    return bucket_counts(
        session, clock=clock, user=user, criteria=criteria, buckets=(criteria.bucket,)
    )[criteria.bucket]


def start_export(
    session: Session, *, clock: Clock, actor: Actor, user: User, criteria: WorklistCriteria
) -> int:
    """Before a bucket's CSV export streams: how many rows it will hold, audited (the
    caller commits the event before a byte leaves)."""
    total = count_rows(session, clock=clock, user=user, criteria=criteria)
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="worklist.export",
        detail={
            "bucket": criteria.bucket.value,
            "rows": total,
            "searched": criteria.text is not None,
        },
    )
    return total


def iter_rows(
    session: Session,
    *,
    clock: Clock,
    user: User,
    criteria: WorklistCriteria,
    language: str,
    batch: int = 500,
) -> Iterator[WorklistRow]:
    """Every row of `criteria`'s bucket (all pages, in its order), fetched in batches:
    for the CSV export, which streams them."""
    ask = _ask(session, clock=clock, user=user, criteria=criteria)
    query = _rows_query(_items(ask), order=criteria.order)
    labels = _Labels(shipped_protocols(), language)
    for record in session.execute(query.execution_options(yield_per=batch)):
        yield _to_row(criteria.bucket, record, labels)
