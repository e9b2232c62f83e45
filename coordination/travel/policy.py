"""Each state's travel policy: what it funds to get a patient to a visit, its limits and
rates, in versions with history (like education's funding windows).

A version is never changed or deleted. An admin adds a new one, in force from its first
day (today or later) until the next version starts; the version in force on a visit's day
judges the requests for that visit, so a request keeps the rules it was asked under."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.travel.models import TravelKind, TravelPolicy
from core.audit.service import Actor, record_event
from core.clock import Clock, local_today
from core.dates import parse_day_or_none
from core.errors import FieldErrors
from core.identity.models import User
from core.ids import parse_id, parse_int
from core.models import State
from core.text import N_

# Upper bounds that keep a typo from becoming a policy (and the sums in cents in range).
MAX_RATE_CENTS = 1_000  # per mile
MAX_NIGHTS = 30
MAX_NIGHT_CENTS = 100_000
MAX_PER_DIEM_CENTS = 50_000
MAX_TRAVELLERS = 6
MAX_AMOUNT_CENTS = 10_000_000  # one arrangement's cost
_MONEY = re.compile(r"\$?\s*([0-9]{1,7})(?:\.([0-9]{1,2}))?")


def parse_cents(text: str, *, high: int) -> int | None:
    """An amount typed in dollars ("12", "12.5", "$12.50") as integer cents, or None when
    it is not one or is above `high` cents."""
    found = _MONEY.fullmatch(text.strip().replace(",", ""))
    if found is None:
        return None
    cents = int(found.group(1)) * 100 + int((found.group(2) or "0").ljust(2, "0"))
    return cents if cents <= high else None


def dollars(cents: int) -> str:
    """Cents as the pages write dollars: 6700 -> "67.00"."""
    return f"{cents // 100:,}.{cents % 100:02d}"


@dataclass(frozen=True)
class PolicyVersion:
    row: TravelPolicy
    created_by: str | None
    in_force: bool  # the version in force today in its state
    upcoming: bool  # starts after today


def policy_on(session: Session, *, state_id: int, day: date) -> TravelPolicy | None:
    """The version of the state's policy in force on `day` (the latest first day on or
    before it; of two versions with the same first day, the later added), or None."""
    return session.scalar(
        select(TravelPolicy)
        .where(TravelPolicy.state_id == state_id, TravelPolicy.effective_from <= day)
        .order_by(TravelPolicy.effective_from.desc(), TravelPolicy.id.desc())
        .limit(1)
    )


def policy_history(session: Session, *, clock: Clock, state: State) -> list[PolicyVersion]:
    """Every version of the state's policy, the newest first, saying which is in force."""
    today = local_today(clock, state.time_zone)
    current = policy_on(session, state_id=state.id, day=today)
    rows = session.execute(
        select(TravelPolicy, User.display_name)
        .outerjoin(User, User.id == TravelPolicy.created_by_user_id)
        .where(TravelPolicy.state_id == state.id)
        .order_by(TravelPolicy.effective_from.desc(), TravelPolicy.id.desc())
    )
    return [
        PolicyVersion(
            row=row,
            created_by=name,
            in_force=current is not None and row.id == current.id,
            upcoming=row.effective_from > today,
        )
        for row, name in rows
    ]


@dataclass(frozen=True)
class PolicyInput:
    """A new version as typed in the admin's form (dollars as text, kinds as values)."""

    state_id: str
    effective_from: str
    kinds: list[str]
    mileage_rate: str = ""
    max_lodging_nights: str = ""
    lodging_night_cap: str = ""
    meal_per_diem: str = ""
    max_travellers: str = "1"


def add_policy(session: Session, *, clock: Clock, actor: Actor, data: PolicyInput) -> TravelPolicy:
    """Add a version of a state's policy (values as typed); FieldErrors says what to fix.

    It starts today or later: past days keep the version that judged their requests."""
    errors: dict[str, str] = {}
    chosen = parse_id(data.state_id)
    state = session.get(State, chosen) if chosen is not None else None
    if state is None:
        errors["state_id"] = N_("Choose a state.")
    start = parse_day_or_none(data.effective_from)
    if start is None:
        errors["effective_from"] = N_("Enter the first day this version applies, like 2027-01-31.")
    elif state is not None and start < local_today(clock, state.time_zone):
        errors["effective_from"] = N_(
            "A new version starts today or later: past visits keep the rules they had."
        )
    kinds: list[str] = []
    for value in data.kinds:
        try:
            kind = TravelKind(value)
        except ValueError:
            errors["kinds"] = N_("Choose among the kinds of support listed.")
            break
        if kind.value not in kinds:
            kinds.append(kind.value)
    kinds.sort(key=lambda value: list(TravelKind).index(TravelKind(value)))

    def cents(name: str, typed: str, high: int, funded: bool) -> int:
        if not typed.strip():
            if funded:
                errors[name] = N_("Enter an amount in dollars, like 0.67 or 150.")
            return 0
        value = parse_cents(typed, high=high)
        if value is None:
            errors[name] = N_(
                "Enter an amount in dollars, like 0.67 or 150, at most %(most)s.",
                most=dollars(high),
            )
            return 0
        return value

    def count(name: str, typed: str, low: int, high: int) -> int:
        value = parse_int(typed.strip(), low=low, high=high)
        if value is None:
            errors[name] = N_("Enter a whole number from %(low)d to %(high)d.", low=low, high=high)
            return low
        return value

    rate = cents(
        "mileage_rate", data.mileage_rate, MAX_RATE_CENTS, TravelKind.MILEAGE.value in kinds
    )
    lodging = TravelKind.LODGING.value in kinds
    nights = count("max_lodging_nights", data.max_lodging_nights or "0", 0, MAX_NIGHTS)
    if lodging and nights == 0 and "max_lodging_nights" not in errors:
        errors["max_lodging_nights"] = N_("A state that funds lodging funds at least one night.")
    night_cap = cents("lodging_night_cap", data.lodging_night_cap, MAX_NIGHT_CENTS, lodging)
    per_diem = cents(
        "meal_per_diem", data.meal_per_diem, MAX_PER_DIEM_CENTS, TravelKind.MEALS.value in kinds
    )
    travellers = count("max_travellers", data.max_travellers or "1", 1, MAX_TRAVELLERS)
    if errors:
        raise FieldErrors(errors)
    assert state is not None and start is not None
    row = TravelPolicy(
        state_id=state.id,
        effective_from=start,
        funded_kinds=kinds,
        mileage_rate_cents=rate,
        max_lodging_nights=nights if lodging else 0,
        lodging_night_cap_cents=night_cap,
        meal_per_diem_cents=per_diem,
        # Nobody travels with the patient unless the state funds an escort.
        max_travellers=travellers if TravelKind.ESCORT.value in kinds else 1,
        created_at=clock.now(),
        created_by_user_id=actor.user_id,
    )
    session.add(row)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="travel.policy_added",
        target=f"travel_policy:{row.id}",
        detail={"state": state.code, "from": start.isoformat(), "kinds": kinds},
    )
    return row
