"""Calendar export: one visit as an `.ics` file, and private subscription feeds that phone
calendars follow (a secret URL, revocable).

What leaves here may be read on a lock screen or a shared calendar: the summary names the
program and never a diagnosis, a therapy or a result. Services do not know the reader's
language: wording is marked with `N_` and passed through the caller's `translate`, and
dates are written with Babel in the `language` the caller gives."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date
from icalendar import Alarm, Calendar, Event, vDuration
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from coordination.followup.models import CalendarFeed, Visit, VisitStatus
from coordination.followup.protocol import ProtocolLibrary, shipped_protocols
from coordination.followup.schedule import visits_for_patient
from core.audit.service import Actor, record_event
from core.clock import Clock, local_today
from core.identity.access import Permission, may_access_patient
from core.identity.models import Role, User
from core.identity.passwords import new_token, token_digest
from core.models import Language, Patient
from core.phones import display_phone
from core.text import N_

Translate = Callable[[str], str]

PRODID = "-//cgt-access//Follow-up visits//EN"
# Appointments have a start time only; calendars get an hour-long entry.
APPOINTMENT_LENGTH = timedelta(hours=1)
# Completed visits stay in a subscription feed this long.
FEED_HISTORY_DAYS = 365
# How often a subscribed calendar should look again (a hint; phones choose themselves).
FEED_REFRESH = timedelta(hours=6)
# Who may hold a feed: the people the schedule is for, not staff (a feed skips the second factor).
FEED_ROLES = (Role.PATIENT, Role.CAREGIVER)


class FeedNotAllowed(ValueError):
    """This user may not have a calendar subscription for this patient."""


def _keep(message: str) -> str:
    return str(message)


def visit_label(
    visit: Visit, *, therapy_code: str, language: str, library: ProtocolLibrary | None = None
) -> str:
    """The visit's name from its protocol in `language` (e.g. "Day 100 check-up")."""
    library = library or shipped_protocols()
    protocol_visit = library.visit_of(therapy_code, visit.protocol_version, visit.visit_key)
    return protocol_visit.label.text(language) if protocol_visit is not None else visit.visit_key


def _day(value: date, language: str) -> str:
    return format_date(value, format="long", locale=Locale.parse(language))


def visit_summary(*, program_name: str, translate: Translate = _keep) -> str:
    """The calendar entry's title: the program's name and nothing about health."""
    return translate(N_("Follow-up visit – %(program)s", program=program_name))


def _description(
    visit: Visit,
    *,
    label: str,
    program_name: str,
    program_phone: str,
    language: str,
    translate: Translate,
) -> str:
    window = {
        "start": _day(visit.window_start, language),
        "end": _day(visit.window_end, language),
    }
    lines = [label]
    if visit.status is VisitStatus.COMPLETED:
        done_on = _day(visit.completed_on or visit.target_date, language)
        lines.append(translate(N_("Done on %(date)s.", date=done_on)))
    elif visit.appointment_at is not None:
        lines.append(translate(N_("Your visit window: between %(start)s and %(end)s.", **window)))
    else:
        lines.append(
            translate(
                N_(
                    "No appointment is booked yet. The visit can be on any day between "
                    "%(start)s and %(end)s; this entry is on the target day.",
                    **window,
                )
            )
        )
    lines.append(
        translate(
            N_(
                "Questions, or need to change it? Call %(program)s at %(phone)s.",
                program=program_name,
                phone=display_phone(program_phone),
            )
        )
    )
    return "\n".join(lines)


def _visit_event(
    visit: Visit,
    *,
    stamp: datetime,
    patient_zone: str,
    label: str,
    program_name: str,
    program_phone: str,
    location: str | None,
    uid_domain: str,
    language: str,
    translate: Translate,
) -> Event:
    summary = visit_summary(program_name=program_name, translate=translate)
    event = Event()
    event.add("uid", f"visit-{visit.id}@{uid_domain}")
    event.add("dtstamp", stamp)
    event.add("last-modified", visit.updated_at)
    event.add("summary", summary)
    event.add(
        "description",
        _description(
            visit,
            label=label,
            program_name=program_name,
            program_phone=program_phone,
            language=language,
            translate=translate,
        ),
    )
    if visit.appointment_at is not None:
        # The wall-clock time in the zone it was booked in: 9:00 stays 9:00 across DST.
        zone = ZoneInfo(visit.appointment_zone or patient_zone)
        start = visit.appointment_at.astimezone(zone)
        event.add("dtstart", start)
        event.add("dtend", start + APPOINTMENT_LENGTH)  # wall-clock arithmetic in `zone`
        if location:
            event.add("location", location)
        if visit.status.is_open:
            alarm = Alarm()
            alarm.add("action", "DISPLAY")
            alarm.add("trigger", timedelta(days=-1))
            alarm.add("description", summary)
            event.add_component(alarm)
    else:
        # No appointment: an all-day entry on the target day (the window is in the text).
        day = (
            visit.completed_on
            if visit.status is VisitStatus.COMPLETED and visit.completed_on
            else visit.target_date
        )
        event.add("dtstart", day)
        event.add("dtend", day + timedelta(days=1))
        event.add("transp", "TRANSPARENT")
    if visit.status is VisitStatus.CONFIRMED:
        event.add("status", "CONFIRMED")
    elif visit.status is VisitStatus.CANCELLED:
        event.add("status", "CANCELLED")
    return event


def _new_calendar(name: str | None = None) -> Calendar:
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    if name:
        calendar.add("x-wr-calname", name)
    return calendar


def _event_days(visits: Iterable[Visit]) -> list[date]:
    days = []
    for visit in visits:
        days.append(visit.appointment_at.date() if visit.appointment_at else visit.target_date)
    return days


def _finish(calendar: Calendar, visits: list[Visit]) -> bytes:
    """Add the VTIMEZONE of every zone the entries use (a year around them), serialize."""
    days = _event_days(visits)
    if days:
        calendar.add_missing_timezones(
            first_date=min(days) - timedelta(days=366), last_date=max(days) + timedelta(days=366)
        )
    return bytes(calendar.to_ical())


def visit_ics(
    visit: Visit,
    *,
    clock: Clock,
    patient_zone: str,
    label: str,
    program_name: str,
    program_phone: str,
    location: str | None,
    uid_domain: str,
    language: str = "en",
    translate: Translate = _keep,
) -> bytes:
    """One visit as an iCalendar file.

    A booked appointment is a timed event in the appointment's zone (with its VTIMEZONE)
    and a reminder the day before; a visit without one is an all-day event on the target
    day, its window said in the description. The UID (`visit-<id>@<domain>`) stays the
    same, so importing the file again updates the entry instead of adding another."""
    calendar = _new_calendar()
    calendar.add_component(
        _visit_event(
            visit,
            stamp=clock.now(),
            patient_zone=patient_zone,
            label=label,
            program_name=program_name,
            program_phone=program_phone,
            location=location,
            uid_domain=uid_domain,
            language=language,
            translate=translate,
        )
    )
    return _finish(calendar, [visit])


# --- subscription feeds ------------------------------------------------------------------


def _audit(
    session: Session, *, clock: Clock, actor: Actor | None, action: str, feed: CalendarFeed
) -> None:
    if actor is not None:
        # The feed's id, never its token.
        record_event(
            session,
            clock=clock,
            actor=actor,
            action=action,
            patient_id=feed.patient_id,
            target=f"calendar_feed:{feed.id}",
        )


def active_feed(session: Session, *, user_id: int, patient_id: int) -> CalendarFeed | None:
    """The user's live subscription for this patient, if any."""
    return session.scalar(
        select(CalendarFeed)
        .where(
            CalendarFeed.user_id == user_id,
            CalendarFeed.patient_id == patient_id,
            CalendarFeed.revoked_at.is_(None),
        )
        .order_by(CalendarFeed.created_at.desc(), CalendarFeed.id.desc())
        .limit(1)
    )


def revoke_feed(
    session: Session, *, clock: Clock, user: User, patient: Patient, actor: Actor | None = None
) -> int:
    """Stop the user's subscription for this patient (its URL answers 404 from now on).
    Returns how many feeds were live."""
    live = list(
        session.scalars(
            select(CalendarFeed).where(
                CalendarFeed.user_id == user.id,
                CalendarFeed.patient_id == patient.id,
                CalendarFeed.revoked_at.is_(None),
            )
        )
    )
    for feed in live:
        feed.revoked_at = clock.now()
        _audit(session, clock=clock, actor=actor, action="calendar_feed.revoke", feed=feed)
    session.flush()
    return len(live)


def create_feed(
    session: Session, *, clock: Clock, user: User, patient: Patient, actor: Actor | None = None
) -> str:
    """Start a subscription for `user` to `patient`'s visits and return its secret token.

    The token is shown once: the database keeps only its SHA-256. A user has one live feed
    per patient, so a new one replaces (revokes) the old one. Only the patient and their
    caregivers with the right to see the schedule may have one."""
    if not _may_follow(session, user=user, patient=patient):
        raise FeedNotAllowed(N_("Calendar subscriptions are for patients and their caregivers."))
    session.execute(
        update(CalendarFeed)
        .where(
            CalendarFeed.user_id == user.id,
            CalendarFeed.patient_id == patient.id,
            CalendarFeed.revoked_at.is_(None),
        )
        .values(revoked_at=clock.now())
    )
    token = new_token()
    feed = CalendarFeed(
        token_hash=token_digest(token),
        user_id=user.id,
        patient_id=patient.id,
        created_at=clock.now(),
    )
    session.add(feed)
    session.flush()
    _audit(session, clock=clock, actor=actor, action="calendar_feed.create", feed=feed)
    return token


def feed_by_token(session: Session, *, token: str) -> CalendarFeed | None:
    """The live feed behind a secret URL; None when unknown or revoked."""
    if not token or len(token) > 128:
        return None
    return session.scalar(
        select(CalendarFeed).where(
            CalendarFeed.token_hash == token_digest(token), CalendarFeed.revoked_at.is_(None)
        )
    )


def _may_follow(session: Session, *, user: User, patient: Patient) -> bool:
    return (
        user.is_active
        and user.role in FEED_ROLES
        and may_access_patient(
            session, user=user, patient=patient, permission=Permission.SCHEDULE_VIEW
        )
    )


def _in_feed(visit: Visit, *, since: date) -> bool:
    if visit.status.is_open:
        return True
    return visit.status is VisitStatus.COMPLETED and (
        (visit.completed_on or visit.target_date) >= since
    )


@dataclass(frozen=True)
class FeedOwner:
    """Whose feed it is, as the route needs it (the language to write it in)."""

    user: User
    patient: Patient


def feed_owner(session: Session, *, feed: CalendarFeed) -> FeedOwner | None:
    """The feed's user and patient, if the user may still see the schedule: an active
    account with the right today (a revoked proxy right or a deactivated account stops
    the feed at once, without anybody revoking it)."""
    user = session.get(User, feed.user_id)
    patient = session.get(Patient, feed.patient_id)
    if user is None or patient is None or not _may_follow(session, user=user, patient=patient):
        return None
    return FeedOwner(user=user, patient=patient)


def feed_ics(
    session: Session,
    *,
    clock: Clock,
    feed: CalendarFeed,
    uid_domain: str,
    translator: Callable[[Language], Translate] = lambda _language: _keep,
    library: ProtocolLibrary | None = None,
) -> bytes | None:
    """The feed's calendar: every open visit of its patient, and the visits completed in
    the last year, written in the owner's language (`translator(language)` translates).

    Whether the owner may still see the schedule is checked now, at every fetch. When they
    may not (a proxy right removed, the account deactivated), the answer is None and the
    feed is revoked for good: giving the right back later does not revive an old URL."""
    owner = feed_owner(session, feed=feed)
    if owner is None:
        feed.revoked_at = clock.now()
        session.flush()
        return None
    user, patient = owner.user, owner.patient
    language = user.preferred_language
    translate = translator(language)
    library = library or shipped_protocols()
    since = local_today(clock, patient.time_zone) - timedelta(days=FEED_HISTORY_DAYS)
    visits = [
        visit
        for visit in visits_for_patient(session, patient_id=patient.id)
        if _in_feed(visit, since=since)
    ]
    program = patient.state.program_name
    if user.role is Role.CAREGIVER:
        name = translate(
            N_(
                "Follow-up visits of %(name)s – %(program)s",
                name=patient.given_name,
                program=program,
            )
        )
    else:
        name = translate(N_("Follow-up visits – %(program)s", program=program))
    calendar = _new_calendar(name)
    calendar.add("refresh-interval", FEED_REFRESH, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", vDuration(FEED_REFRESH))
    stamp = clock.now()
    for visit in visits:
        calendar.add_component(
            _visit_event(
                visit,
                stamp=stamp,
                patient_zone=patient.time_zone,
                label=visit_label(
                    visit,
                    therapy_code=patient.therapy.code,
                    language=language.value,
                    library=library,
                ),
                program_name=program,
                program_phone=patient.state.program_phone,
                location=visit.location,
                uid_domain=uid_domain,
                language=language.value,
                translate=translate,
            )
        )
    feed.last_fetched_at = stamp
    session.flush()
    return _finish(calendar, visits)
