"""The rules every text obeys, without a database: one a day and three in any seven days
per number (on the recipient's own calendar, across daylight-saving changes), the state's
texting hours in the recipient's zone, and who gets a patient's reminders."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from coordination.texting.rules import (
    MAX_PER_WEEK,
    Recipient,
    TextingHours,
    cap_problem,
    recipients_of,
)
from core.models import Caregiver, CaregiverLink, Language, Patient

NEW_YORK = "America/New_York"
DENVER = "America/Denver"
HONOLULU = "Pacific/Honolulu"
DAY_CAP = "cap: already one text that day"
WEEK_CAP = "cap: already three texts that week"


def local(day: date, at: time, zone: str) -> datetime:
    return datetime.combine(day, at, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def at_ten(days: list[date], zone: str = NEW_YORK) -> list[datetime]:
    return sorted(local(day, time(10), zone) for day in days)


D0 = date(2026, 12, 7)  # a Monday, far from any clock change


def day(n: int) -> date:
    return D0 + timedelta(days=n)


# --- one a day -----------------------------------------------------------------------------


def test_the_first_text_may_go() -> None:
    assert cap_problem([], local(D0, time(10), NEW_YORK), NEW_YORK) is None


def test_a_second_text_the_same_local_day_is_refused() -> None:
    sent = [local(D0, time(8, 5), NEW_YORK)]
    assert cap_problem(sent, local(D0, time(20, 55), NEW_YORK), NEW_YORK) == DAY_CAP
    assert cap_problem(sent, local(day(1), time(8), NEW_YORK), NEW_YORK) is None


def test_the_day_is_the_recipients_day_not_utcs() -> None:
    # 20:30 in Honolulu is already tomorrow in UTC; 8:00 the next morning is another day there.
    evening = local(D0, time(20, 30), HONOLULU)
    next_morning = local(day(1), time(8), HONOLULU)
    assert evening.date() == next_morning.date()  # one UTC day...
    assert cap_problem([evening], next_morning, HONOLULU) is None  # ...two local days
    # And two instants on two UTC days can be one local day.
    morning = local(D0, time(9), HONOLULU)
    late = local(D0, time(19), HONOLULU)
    assert morning.date() != late.date()
    assert cap_problem([morning], late, HONOLULU) == DAY_CAP


# --- three in any seven days -------------------------------------------------------------------


def test_a_fourth_text_within_seven_days_is_refused() -> None:
    sent = at_ten([day(0), day(2), day(4)])
    assert MAX_PER_WEEK == 3
    assert cap_problem(sent, local(day(6), time(10), NEW_YORK), NEW_YORK) == WEEK_CAP
    # Before the three, too: a window that starts earlier holds four as well.
    assert cap_problem(sent, local(day(-1), time(10), NEW_YORK), NEW_YORK) == WEEK_CAP
    assert cap_problem(sent, local(day(3), time(10), NEW_YORK), NEW_YORK) == WEEK_CAP


def test_the_eighth_day_starts_a_new_week() -> None:
    sent = at_ten([day(0), day(2), day(4)])
    assert cap_problem(sent, local(day(7), time(10), NEW_YORK), NEW_YORK) is None
    assert cap_problem(sent, local(day(-3), time(10), NEW_YORK), NEW_YORK) is None


def test_texts_far_apart_do_not_count() -> None:
    sent = at_ten([day(-30), day(-20), day(-10), day(10), day(20)])
    assert cap_problem(sent, local(D0, time(10), NEW_YORK), NEW_YORK) is None


@pytest.mark.parametrize("zone", [NEW_YORK, DENVER])
def test_the_week_is_counted_in_local_days_across_the_spring_change(zone: str) -> None:
    # Clocks go forward on Sunday 2027-03-14: 10:00 on the 15th is 6 days 23 hours after
    # 10:00 on the 8th, yet the 15th is the eighth day on the recipient's calendar.
    sent = at_ten([date(2027, 3, 8), date(2027, 3, 10), date(2027, 3, 12)], zone)
    assert cap_problem(sent, local(date(2027, 3, 15), time(10), zone), zone) is None
    assert cap_problem(sent, local(date(2027, 3, 14), time(10), zone), zone) == WEEK_CAP


@pytest.mark.parametrize("zone", [NEW_YORK, DENVER])
def test_the_week_is_counted_in_local_days_across_the_autumn_change(zone: str) -> None:
    # Clocks go back on Sunday 2027-11-07: 9:00 on the 8th is more than 7x24 hours after
    # 10:00 on the 1st... and the 8th is the eighth day; 20:00 on the 7th is the seventh.
    sent = at_ten([date(2027, 11, 1), date(2027, 11, 3), date(2027, 11, 5)], zone)
    assert cap_problem(sent, local(date(2027, 11, 8), time(9), zone), zone) is None
    assert cap_problem(sent, local(date(2027, 11, 7), time(20), zone), zone) == WEEK_CAP


# --- texting hours -----------------------------------------------------------------------------


def test_texting_hours_are_from_inclusive_until_exclusive() -> None:
    hours = TextingHours()
    assert hours.describe() == "8:00-21:00"
    assert hours.allows(local(D0, time(8), NEW_YORK), NEW_YORK)
    assert hours.allows(local(D0, time(20, 59), NEW_YORK), NEW_YORK)
    assert not hours.allows(local(D0, time(7, 59), NEW_YORK), NEW_YORK)
    assert not hours.allows(local(D0, time(21), NEW_YORK), NEW_YORK)


def test_texting_hours_are_the_recipients() -> None:
    # 22:30 in Baltimore is 17:30 in Honolulu.
    moment = local(D0, time(22, 30), NEW_YORK)
    hours = TextingHours()
    assert not hours.allows(moment, NEW_YORK)
    assert hours.allows(moment, HONOLULU)
    assert hours.next_allowed(moment, HONOLULU) == moment
    assert hours.next_allowed(moment, NEW_YORK) == local(day(1), time(8), NEW_YORK)


def test_before_texting_hours_waits_for_the_same_morning() -> None:
    moment = local(D0, time(6, 15), DENVER)
    assert TextingHours().next_allowed(moment, DENVER) == local(D0, time(8), DENVER)


@pytest.mark.parametrize(
    ("evening", "morning_utc"),
    [
        # Saturday 22:00 EST; Sunday 8:00 is EDT (UTC-4) after the spring change.
        (datetime(2027, 3, 13, 22, 0), datetime(2027, 3, 14, 12, 0, tzinfo=UTC)),
        # Saturday 22:00 EDT; Sunday 8:00 is EST (UTC-5) after the autumn change.
        (datetime(2027, 11, 6, 22, 0), datetime(2027, 11, 7, 13, 0, tzinfo=UTC)),
    ],
)
def test_the_next_morning_is_eight_local_across_a_clock_change(
    evening: datetime, morning_utc: datetime
) -> None:
    moment = evening.replace(tzinfo=ZoneInfo(NEW_YORK)).astimezone(UTC)
    found = TextingHours().next_allowed(moment, NEW_YORK)
    assert found == morning_utc
    assert found.astimezone(ZoneInfo(NEW_YORK)).hour == 8


def test_a_send_hour_outside_a_states_hours_moves_inside_them() -> None:
    hours = TextingHours(from_hour=12, until_hour=18)
    assert hours.at(D0, NEW_YORK, 10) == local(D0, time(12), NEW_YORK)
    assert hours.at(D0, NEW_YORK, 20) == local(D0, time(17), NEW_YORK)
    assert hours.at(D0, NEW_YORK, 14) == local(D0, time(14), NEW_YORK)
    assert hours.next_allowed(local(D0, time(18), NEW_YORK), NEW_YORK) == local(
        day(1), time(12), NEW_YORK
    )


def test_without_a_state_the_default_hours_apply() -> None:
    assert TextingHours.of(None) == TextingHours(8, 21)


# --- who gets a patient's reminders -------------------------------------------------------------


def _patient(phone: str | None, language: Language = Language.EN) -> Patient:
    return Patient(mobile_phone=phone, preferred_language=language, time_zone=NEW_YORK)


def _caregiver(
    id_: int, phone: str | None, *, reminders: bool, language: Language = Language.ES
) -> tuple[CaregiverLink, Caregiver]:
    person = Caregiver(id=id_, mobile_phone=phone, preferred_language=language, time_zone=HONOLULU)
    return CaregiverLink(caregiver_id=id_, can_receive_reminders=reminders), person


def test_the_patient_and_caregivers_with_the_right_get_reminders_in_their_language_and_zone() -> (
    None
):
    found = recipients_of(
        _patient("+12025550101"),
        [
            _caregiver(2, "+12025550103", reminders=False),
            _caregiver(1, "+12025550102", reminders=True),
            _caregiver(3, None, reminders=True),
        ],
    )
    assert found == [
        Recipient("+12025550101", "en", NEW_YORK, None),
        Recipient("+12025550102", "es", HONOLULU, 1),
    ]
    assert [r.is_caregiver for r in found] == [False, True]


def test_a_shared_number_gets_one_text_the_patients() -> None:
    found = recipients_of(
        _patient("+12025550101", Language.EN),
        [
            _caregiver(1, "+12025550101", reminders=True),
            _caregiver(2, "+12025550102", reminders=True),
            _caregiver(3, "+12025550102", reminders=True),
        ],
    )
    assert found == [
        Recipient("+12025550101", "en", NEW_YORK, None),
        Recipient("+12025550102", "es", HONOLULU, 2),
    ]


def test_a_patient_without_a_mobile_still_has_caregivers_texted() -> None:
    found = recipients_of(_patient(None), [_caregiver(1, "+12025550102", reminders=True)])
    assert [r.caregiver_id for r in found] == [1]
