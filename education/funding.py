"""What each state funds, and when: admins add funding windows (a state, a module, from a
day until a day or open-ended) and end them. A window is never deleted or changed once
added: ending it stamps `ended_at`, so the history of what a state funded stays readable.

Core modules are offered everywhere and need no funding. Whether a reader is offered a
funded module today is `offer.py`'s business; this file keeps the windows and says which
one is in force (the same rule: the state's local date inside the window, not ended)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.service import Actor, record_event
from core.clock import Clock, local_today
from core.dates import parse_day_or_none
from core.errors import FieldErrors
from core.identity.models import User
from core.ids import parse_id
from core.models import State
from core.text import N_
from education.content import ModuleLibrary
from education.models import ModuleFunding

MIN_YEAR, MAX_YEAR = 2020, 2100


class WindowStatus(enum.StrEnum):
    ACTIVE = "active"  # funds the module today
    UPCOMING = "upcoming"  # starts later
    PAST = "past"  # its last day has passed
    ENDED = "ended"  # an admin ended it


@dataclass(frozen=True)
class FundingWindow:
    row: ModuleFunding
    state: State
    created_by: str | None
    status: WindowStatus


def window_status(row: ModuleFunding, *, now: datetime, today: date) -> WindowStatus:
    if row.ended_at is not None and row.ended_at <= now:
        return WindowStatus.ENDED
    if today < row.funded_from:
        return WindowStatus.UPCOMING
    if row.funded_until is not None and row.funded_until < today:
        return WindowStatus.PAST
    return WindowStatus.ACTIVE


def funding_windows(session: Session, *, clock: Clock) -> list[FundingWindow]:
    """Every window of every state, by state, module and start (ended ones included)."""
    now = clock.now()
    rows = session.execute(
        select(ModuleFunding, State, User.display_name)
        .join(State, State.id == ModuleFunding.state_id)
        .outerjoin(User, User.id == ModuleFunding.created_by_user_id)
        .order_by(State.name, ModuleFunding.module_key, ModuleFunding.funded_from, ModuleFunding.id)
    )
    return [
        FundingWindow(
            row=row,
            state=state,
            created_by=name,
            status=window_status(row, now=now, today=local_today(clock, state.time_zone)),
        )
        for row, state, name in rows
    ]


def _window_day(value: str) -> date | None:
    """A funding window's day as typed, or None (not a day, or outside the years we take)."""
    day = parse_day_or_none(value)
    return day if day is not None and MIN_YEAR <= day.year <= MAX_YEAR else None


def _overlaps(row: ModuleFunding, start: date, until: date | None) -> bool:
    row_end = row.funded_until or date.max
    return row.funded_from <= (until or date.max) and start <= row_end


def add_funding(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    library: ModuleLibrary,
    state_id: str,
    module_key: str,
    funded_from: str,
    funded_until: str,
) -> ModuleFunding:
    """Add a window (values as typed in the form); FieldErrors says what to fix."""
    errors: dict[str, str] = {}
    chosen_state = parse_id(state_id)
    state = session.get(State, chosen_state) if chosen_state is not None else None
    if state is None:
        errors["state_id"] = N_("Choose a state.")
    module = library.get(module_key.strip()) if module_key.strip() else None
    if module is None:
        errors["module_key"] = N_("Choose a module.")
    elif module.core:
        errors["module_key"] = N_(
            "This is a core module: every state offers it, so it needs no funding."
        )
    start = _window_day(funded_from) if funded_from.strip() else None
    if start is None:
        errors["funded_from"] = (
            N_("Enter the first day of funding, like 2026-01-31.")
            if not funded_from.strip()
            else N_("Enter a real date, like 2026-01-31.")
        )
    until: date | None = None
    if funded_until.strip():
        until = _window_day(funded_until)
        if until is None:
            errors["funded_until"] = N_("Enter a real date, like 2026-12-31, or leave it empty.")
        elif start is not None and until < start:
            errors["funded_until"] = N_("The last day cannot be before the first day.")
    if not errors and state is not None and module is not None and start is not None:
        now = clock.now()
        open_rows = session.scalars(
            select(ModuleFunding).where(
                ModuleFunding.state_id == state.id,
                ModuleFunding.module_key == module.key,
            )
        )
        for row in open_rows:
            ended = row.ended_at is not None and row.ended_at <= now
            if not ended and _overlaps(row, start, until):
                errors[""] = N_(
                    "This state already funds this module on some of these days. "
                    "End that window first, or choose other days."
                )
                break
    if errors:
        raise FieldErrors(errors)
    assert state is not None and module is not None and start is not None
    row = ModuleFunding(
        state_id=state.id,
        module_key=module.key,
        funded_from=start,
        funded_until=until,
        created_at=clock.now(),
        created_by_user_id=actor.user_id,
        ended_at=None,
    )
    session.add(row)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="education.funding_added",
        target=f"funding:{row.id}",
        detail={"state": state.code, "module": module.key},
    )
    return row


def end_funding(session: Session, *, clock: Clock, actor: Actor, funding_id: str) -> ModuleFunding:
    """End a window now: the module is no longer offered to new readers of that state
    under it; what people read stays theirs. The row stays, for the history."""
    chosen = parse_id(funding_id)
    row = session.get(ModuleFunding, chosen) if chosen is not None else None
    if row is None:
        raise FieldErrors({"": N_("That funding window does not exist.")})
    now = clock.now()
    if row.ended_at is not None and row.ended_at <= now:
        raise FieldErrors({"": N_("That funding window has already ended.")})
    row.ended_at = now
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="education.funding_ended",
        target=f"funding:{row.id}",
        detail={"module": row.module_key},
    )
    return row
