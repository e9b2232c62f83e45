"""The rules every text about follow-up obeys, shared by planning, the check before sending
and texts sent by hand: the state's texting hours, the caps (one text a day and three in any
seven days per phone number), who gets a patient's texts, what a reminder rests on, and its
words. Send times are computed in the recipient's own zone, so that 10:00 stays 10:00 across
daylight-saving changes."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Protocol, cast
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import Visit, VisitStatus
from coordination.followup.protocol import ReminderKind
from coordination.texting.models import (
    LEFT_STATUSES,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
)
from coordination.texting.words import (
    CONFIRMED_REMINDERS,
    MOVED_NOTICES,
    QUESTIONNAIRE_NUDGE,
    REMINDERS,
    TRAVEL_ARRANGED,
    Template,
    format_day,
    format_time,
    render,
)
from core.models import Caregiver, CaregiverLink, Language, PatientStatus, State
from core.phones import display_phone


class VisitFacts(Protocol):
    """What planning reads of a visit (an ORM Visit, or a plain row of its columns)."""

    @property
    def id(self) -> int: ...
    @property
    def patient_id(self) -> int: ...
    @property
    def visit_key(self) -> str: ...
    @property
    def status(self) -> VisitStatus: ...
    @property
    def window_start(self) -> date: ...
    @property
    def window_end(self) -> date: ...
    @property
    def appointment_at(self) -> datetime | None: ...
    @property
    def appointment_zone(self) -> str | None: ...
    @property
    def missed_acknowledged_at(self) -> datetime | None: ...


class PersonFacts(Protocol):
    """What planning reads of a patient or a caregiver."""

    @property
    def id(self) -> int: ...
    @property
    def mobile_phone(self) -> str | None: ...
    @property
    def preferred_language(self) -> Language: ...
    @property
    def time_zone(self) -> str: ...


class PatientFacts(PersonFacts, Protocol):
    @property
    def state_id(self) -> int: ...


class LinkFacts(Protocol):
    @property
    def can_receive_reminders(self) -> bool: ...


# Reminders go out at this local hour (moved into the state's texting hours if outside).
SEND_HOUR = 10
MAX_PER_DAY = 1
MAX_PER_WEEK = 3
# Texts further than this from a candidate cannot share a week with it (a day to spare for
# the zones' offsets).
_CAP_REACH = timedelta(days=8)
# An overdue notice still makes sense this many days after the window closed.
OVERDUE_NOTICE_DAYS = 7
# An appointment reminder is pointless this close to the appointment.
APPOINTMENT_CUTOFF = timedelta(hours=2)
FOLLOWED = (PatientStatus.ENROLLED, PatientStatus.ACTIVE)
# Booked appointments; a confirmed one still gets reminders and still answers "C".
BOOKED = (VisitStatus.SCHEDULED, VisitStatus.RESCHEDULED, VisitStatus.CONFIRMED)
# Purposes bound by consent, texting hours and the caps: a coordinator's reply to a text
# too (invitations and reset codes are not: the person asks for them, at that moment).
CAPPED_PURPOSES = (MessagePurpose.REMINDER, MessagePurpose.ONE_OFF, MessagePurpose.REPLY)
MANUAL_RULE = "manual"
# The text that tells of a moved appointment: an appointment reminder of its own (the check
# before sending treats it as one), planned from the move (`coordination.texting.changes`).
MOVED_RULE = f"{ReminderKind.APPOINTMENT.value}:moved"


# --- texting hours -----------------------------------------------------------------------


@dataclass(frozen=True)
class TextingHours:
    """The local hours texts may arrive (from inclusive, until exclusive)."""

    from_hour: int = 8
    until_hour: int = 21

    @classmethod
    def of(cls, state: State | None) -> TextingHours:
        if state is None:
            return cls()
        return cls(from_hour=state.texts_from_hour, until_hour=state.texts_until_hour)

    def allows(self, moment: datetime, zone: str) -> bool:
        local = moment.astimezone(ZoneInfo(zone))
        return self.from_hour <= local.hour < self.until_hour

    def next_allowed(self, moment: datetime, zone: str) -> datetime:
        """`moment` if texts may arrive then, else the next start of texting hours."""
        if self.allows(moment, zone):
            return moment
        local = moment.astimezone(ZoneInfo(zone))
        day = local.date() if local.hour < self.from_hour else local.date() + timedelta(days=1)
        return self.at(day, zone, self.from_hour)

    def at(self, day: date, zone: str, hour: int) -> datetime:
        """`hour`:00 on `day` in `zone` (kept inside texting hours), in UTC."""
        return local_hour(day, zone, min(max(hour, self.from_hour), self.until_hour - 1))

    def describe(self) -> str:
        return f"{self.from_hour}:00-{self.until_hour}:00"


@lru_cache(maxsize=65536)
def local_hour(day: date, zone: str, hour: int) -> datetime:
    # Planning asks this for the same few days and zones thousands of times.
    return datetime.combine(day, time(hour), tzinfo=ZoneInfo(zone)).astimezone(UTC)


# --- caps --------------------------------------------------------------------------------


def cap_problem(
    sent: Sequence[datetime], candidate: datetime, zone: str, *, day: date | None = None
) -> str | None:
    """Why one more text at `candidate` would break the caps, given the (sorted) times of
    the number's other texts; None when it may go. `day` is the candidate's day in `zone`,
    when the caller knows it.

    Both caps count days of the recipient's calendar: one text a day, and three in any
    seven consecutive days (so that a clock change never makes the eighth day count)."""
    if not sent:
        return None
    tz = ZoneInfo(zone)
    if day is None:
        day = candidate.astimezone(tz).date()
    near = sent[
        bisect.bisect_left(sent, candidate - _CAP_REACH) : bisect.bisect_right(
            sent, candidate + _CAP_REACH
        )
    ]
    days = [moment.astimezone(tz).date() for moment in near]
    if days.count(day) >= MAX_PER_DAY:
        return "cap: already one text that day"
    if len(days) < MAX_PER_WEEK:
        return None
    for back in range(7):
        first = day - timedelta(days=back)
        last = first + timedelta(days=6)
        if sum(1 for other in days if first <= other <= last) >= MAX_PER_WEEK:
            return "cap: already three texts that week"
    return None


def texts_so_far(
    session: Session, *, phones: Collection[str], now: datetime, queued_count: bool
) -> defaultdict[str, list[datetime]]:
    """The (sorted) times of the capped texts each of `phones` got in the days before `now`
    that the caps reach: those that left or are leaving (claimed by a dispatcher), and, when
    `queued_count`, those queued and already due as well. One query for all the numbers.

    Texts by hand count the queued ones: a due text leaves within the minute (another
    coordinator's, or the same one asked twice), and nothing planned for later is counted.
    The check before sending does not: the queued texts are the ones it is judging (it
    counts each one it lets go), and one not judged yet may still be dropped or wait.
    (Planning reads `taken_times`: it looks ahead as well.)"""
    statuses = (MessageStatus.QUEUED, *LEFT_STATUSES) if queued_count else LEFT_STATUSES
    taken: defaultdict[str, list[datetime]] = defaultdict(list)
    if not phones:
        return taken
    rows = session.execute(
        select(
            OutboundMessage.to_phone,
            OutboundMessage.sent_at,
            OutboundMessage.claimed_at,
            OutboundMessage.send_after,
        ).where(
            OutboundMessage.to_phone.in_(phones),
            OutboundMessage.purpose.in_(CAPPED_PURPOSES),
            OutboundMessage.status.in_(statuses),
            OutboundMessage.send_after >= now - _CAP_REACH,
            OutboundMessage.send_after <= now,
        )
    )
    # Each counts when it left (sent, else claimed by a dispatcher), else when it is due.
    for phone, sent_at, claimed_at, send_after in rows:
        taken[phone].append(sent_at or claimed_at or send_after)
    for times in taken.values():
        times.sort()
    return taken


# What `taken_times` reads of a queued reminder's visit, to see whether it is stale.
_STALE_CHECK_COLUMNS = (
    Visit.id,
    Visit.patient_id,
    Visit.visit_key,
    Visit.status,
    Visit.window_start,
    Visit.window_end,
    Visit.appointment_at,
    Visit.appointment_zone,
    Visit.missed_acknowledged_at,
)


def taken_times(
    session: Session, *, lo: datetime, hi: datetime, phones: Collection[str] | None = None
) -> defaultdict[str, list[datetime]]:
    """The (sorted) times of the texts each number (of `phones`, or every number) has
    between `lo` and `hi`: planned or gone, leaving out queued reminders that the check
    before sending will drop (planned on an appointment that moved since, a visit
    completed...), so that they do not crowd out the texts planned in their place.

    Queued texts count, future ones too (unlike `texts_so_far`, which the check before
    sending and texts by hand use): planning looks ahead, and a queued text will go unless
    that check drops it. Failed and dropped texts never count."""
    taken: defaultdict[str, list[datetime]] = defaultdict(list)
    query = (
        select(
            OutboundMessage.to_phone,
            OutboundMessage.send_after,
            OutboundMessage.sent_at,
            # Labelled: the row also carries the visit's own `status` (as a VisitFacts).
            OutboundMessage.status.label("message_status"),
            OutboundMessage.rule,
            OutboundMessage.planned_on,
            *_STALE_CHECK_COLUMNS,
        )
        .outerjoin(Visit, Visit.id == OutboundMessage.visit_id)
        .where(
            OutboundMessage.purpose.in_(CAPPED_PURPOSES),
            OutboundMessage.status.in_((MessageStatus.QUEUED, *LEFT_STATUSES)),
            OutboundMessage.send_after >= lo,
            OutboundMessage.send_after <= hi,
        )
    )
    if phones is not None:
        query = query.where(OutboundMessage.to_phone.in_(phones))
    for row in session.execute(query):
        kind = rule_kind(row.rule)
        if row.message_status is MessageStatus.QUEUED and kind is not None and row.id is not None:
            if stale_reason(kind, row.planned_on, cast(VisitFacts, row)) is None:
                taken[row.to_phone].append(row.send_after)
        else:
            taken[row.to_phone].append(row.sent_at or row.send_after)
    for times in taken.values():
        times.sort()
    return taken


# --- who gets a patient's texts --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recipient:
    """A phone that gets a patient's reminders, in whose language and zone."""

    phone: str
    language: str
    zone: str
    caregiver_id: int | None  # None: the patient's own number

    @property
    def is_caregiver(self) -> bool:
        return self.caregiver_id is not None


def recipients_of(
    patient: PersonFacts, links: Iterable[tuple[LinkFacts, PersonFacts]]
) -> list[Recipient]:
    """The patient's own number, then caregivers who may receive reminders; a number shared
    by several gets one text (the patient's, in the patient's language)."""
    found: dict[str, Recipient] = {}
    if patient.mobile_phone:
        found[patient.mobile_phone] = Recipient(
            patient.mobile_phone, patient.preferred_language.value, patient.time_zone, None
        )
    for link, caregiver in sorted(links, key=lambda pair: pair[1].id):
        if link.can_receive_reminders and caregiver.mobile_phone:
            found.setdefault(
                caregiver.mobile_phone,
                Recipient(
                    caregiver.mobile_phone,
                    caregiver.preferred_language.value,
                    caregiver.time_zone,
                    caregiver.id,
                ),
            )
    return list(found.values())


def reminder_links_of(
    session: Session, patient_ids: Sequence[int]
) -> dict[int, list[tuple[CaregiverLink, Caregiver]]]:
    links: dict[int, list[tuple[CaregiverLink, Caregiver]]] = defaultdict(list)
    for start in range(0, len(patient_ids), 900):
        rows = session.execute(
            select(CaregiverLink, Caregiver)
            .join(Caregiver, Caregiver.id == CaregiverLink.caregiver_id)
            .where(
                CaregiverLink.patient_id.in_(patient_ids[start : start + 900]),
                CaregiverLink.can_receive_reminders.is_(True),
            )
        )
        for link, caregiver in rows:
            links[link.patient_id].append((link, caregiver))
    return links


# --- what a reminder is planned on ----------------------------------------------------------


def rule_label(kind: ReminderKind, key: str) -> str:
    """The outbox's `rule`: the kind and the protocol's key ("appointment:appt-1d")."""
    return f"{kind.value}:{key}"


def rule_kind(rule: str | None) -> ReminderKind | None:
    if not rule or ":" not in rule:
        return None
    try:
        return ReminderKind(rule.split(":", 1)[0])
    except ValueError:
        return None


def instant_label(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def planned_on(kind: ReminderKind, visit: VisitFacts) -> str | None:
    """What a reminder of `kind` rests on, as text; None when the visit does not fit it."""
    if kind is ReminderKind.WINDOW_OPENS:
        return visit.window_start.isoformat() if visit.status is VisitStatus.DUE else None
    if kind is ReminderKind.APPOINTMENT:
        if visit.status in BOOKED and visit.appointment_at is not None:
            return instant_label(visit.appointment_at)
        return None
    if visit.status is VisitStatus.MISSED and visit.missed_acknowledged_at is None:
        return visit.window_end.isoformat()
    return None


def appointment_day(visit: VisitFacts, patient_zone: str) -> date:
    assert visit.appointment_at is not None
    return visit.appointment_at.astimezone(ZoneInfo(visit.appointment_zone or patient_zone)).date()


def still_useful(kind: ReminderKind, visit: VisitFacts, at: datetime, zone: str) -> bool:
    """Would a reminder of `kind` sent at `at` still help?"""
    return useful_on(kind, visit, at, at.astimezone(ZoneInfo(zone)).date())


def useful_on(kind: ReminderKind, visit: VisitFacts, at: datetime, local_day: date) -> bool:
    """`still_useful`, given `at`'s day in the recipient's zone."""
    if kind is ReminderKind.WINDOW_OPENS:
        return local_day < visit.window_start
    if kind is ReminderKind.APPOINTMENT:
        assert visit.appointment_at is not None
        return at < visit.appointment_at - APPOINTMENT_CUTOFF
    return local_day <= visit.window_end + timedelta(days=OVERDUE_NOTICE_DAYS)


@lru_cache(maxsize=256)
def program_phone_text(phone: str) -> str:
    return display_phone(phone)


def program_values(state: State) -> dict[str, str]:
    """What every text names: the state's program and its phone number, as people write it."""
    return {"program": state.program_name, "phone": program_phone_text(state.program_phone)}


def reminder_template(
    kind: ReminderKind, visit: VisitFacts, *, caregiver: bool, moved: bool = False
) -> Template:
    """The words of a reminder of `kind` about `visit` as it stands now: a confirmed
    appointment is never asked to be confirmed again ("is confirmed, see you then"); `moved`
    is the text that tells of a moved appointment."""
    if kind is ReminderKind.APPOINTMENT:
        confirmed = visit.status is VisitStatus.CONFIRMED
        if moved:
            return MOVED_NOTICES[caregiver, confirmed]
        if confirmed:
            return CONFIRMED_REMINDERS[caregiver]
    return REMINDERS[kind, caregiver]


def reminder_body(
    kind: ReminderKind,
    visit: VisitFacts,
    recipient: Recipient,
    state: State,
    patient_zone: str,
    *,
    moved: bool = False,
    travel_arranged: bool = False,
    questionnaire_waiting: bool = False,
) -> str:
    """The reminder's words for `recipient`, filled and folded for GSM-7 (see
    `reminder_template`); an appointment's whose travel is arranged says so, in one
    sentence that tells nothing of what was booked; the questionnaire nudge ends the text
    when one waits for the visit (no name: a questionnaire's title can say too much)."""
    template = reminder_template(kind, visit, caregiver=recipient.is_caregiver, moved=moved)
    language = recipient.language
    values = program_values(state)
    if kind is ReminderKind.WINDOW_OPENS:
        values |= {
            "start": format_day(visit.window_start, language),
            "end": format_day(visit.window_end, language),
        }
    elif kind is ReminderKind.APPOINTMENT:
        assert visit.appointment_at is not None
        local = visit.appointment_at.astimezone(ZoneInfo(visit.appointment_zone or patient_zone))
        values |= {
            "date": format_day(local.date(), language),
            "time": format_time(local, language),
        }
    body = render(template, language, **values)
    if travel_arranged and kind is ReminderKind.APPOINTMENT:
        body = f"{body} {render(TRAVEL_ARRANGED, language)}"
    if questionnaire_waiting:
        body = f"{body} {render(QUESTIONNAIRE_NUDGE, language)}"
    return body


# The reminders that come while a visit's questionnaire may be answered (its window is
# open, or closed lately) and may add the nudge: the "time to book" notice comes before
# the window opens.
NUDGED_KINDS = (ReminderKind.APPOINTMENT, ReminderKind.OVERDUE)


def has_questionnaire_nudge(body: str, language: str) -> bool:
    """The text was planned with the questionnaire nudge (a reworded text keeps it)."""
    return body.endswith(render(QUESTIONNAIRE_NUDGE, language))


def without_questionnaire_nudge(body: str, language: str) -> str:
    """The text without its questionnaire nudge (the questionnaire was answered since)."""
    nudge = f" {render(QUESTIONNAIRE_NUDGE, language)}"
    return body.removesuffix(nudge)


_VISIT_GONE = {
    VisitStatus.COMPLETED: "the visit was completed",
    VisitStatus.CANCELLED: "the visit was cancelled",
    VisitStatus.MISSED: "the visit was missed",
}


def stale_reason(kind: ReminderKind, planned: str | None, visit: VisitFacts) -> str | None:
    """Why a reminder planned on the visit (as `planned`, its `planned_on`) no longer fits
    it; None when it does."""
    anchor = planned_on(kind, visit)
    if anchor == planned:
        return None
    if kind is ReminderKind.OVERDUE:
        if visit.status is VisitStatus.MISSED:
            return "a coordinator already followed up"
        return _VISIT_GONE.get(visit.status, "the visit was booked again")
    if visit.status in _VISIT_GONE:
        return _VISIT_GONE[visit.status]
    if kind is ReminderKind.WINDOW_OPENS:
        return "an appointment was booked" if visit.status in BOOKED else "the visit moved"
    return "the appointment moved" if visit.status in BOOKED else "the appointment was cancelled"
