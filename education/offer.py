"""Which modules a patient or caregiver is offered, and where they are in each.

A reader is offered the modules that fit them (audience, therapy) and are core or funded
today by their state (a caregiver: the states of the patients they help). Whatever the
funding, a module the reader started, completed or was assigned stays on their list: a
state that stops funding a module does not take away what people already read."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeVar

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from core.clock import Clock, local_today
from core.identity.models import Role, User
from core.models import CaregiverLink, Patient, State, Therapy
from education.content import Module, ModuleLibrary, ModuleText, shipped_modules
from education.models import (
    ModuleAssignment,
    ModuleCompletion,
    ModuleFunding,
    ModuleProgress,
)

_Row = TypeVar("_Row")
READER_ROLES = (Role.PATIENT, Role.CAREGIVER)
CHECK = "check"  # where a reader resumes once every section is read: the knowledge check


class ReadingStatus(enum.StrEnum):
    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    # Completed once, but a significant change came since: asked to read it again.
    NEEDS_NEW_READ = "needs_new_read"


@dataclass(frozen=True)
class ReaderState:
    state_id: int
    today: date  # the state's local date


@dataclass(frozen=True)
class Reader:
    """A patient or caregiver as education sees them."""

    user_id: int
    role: Role
    patient_id: int | None  # patients only
    states: tuple[ReaderState, ...]  # a caregiver's: their patients' states, in link order
    therapies: frozenset[str]

    @property
    def role_name(self) -> str:
        return self.role.value


@dataclass(frozen=True)
class OfferedModule:
    module: Module
    text: ModuleText  # in the reader's language
    status: ReadingStatus
    progress: ModuleProgress | None  # the row as stored (maybe of an outdated version)
    completion: ModuleCompletion | None  # the latest completion, current or outdated
    due_on: date | None  # of the latest assignment, while not completed
    assigned: bool
    # The state the reader reads it under (kept on the completion for the state's reach).
    state_id: int

    @property
    def key(self) -> str:
        return self.module.key

    @property
    def section_count(self) -> int:
        return len(self.module.section_ids)

    @property
    def progress_is_current(self) -> bool:
        """False when the stored progress is of a version older than the last significant
        change: that reading starts over."""
        return (
            self.progress is not None
            and self.progress.module_version >= self.module.significant_since
        )

    @property
    def sections_read(self) -> tuple[str, ...]:
        if not self.progress_is_current:
            return ()
        assert self.progress is not None
        done = set(self.progress.sections_done or ())
        return tuple(s for s in self.module.section_ids if s in done)

    @property
    def resume_at(self) -> str:
        """The section id to open (or CHECK): where the reader stopped; the start for a new
        or completed reading."""
        ids = self.module.section_ids
        if self.status is ReadingStatus.COMPLETED or not self.progress_is_current:
            return ids[0]
        assert self.progress is not None
        read = self.sections_read
        if len(read) == len(ids):
            return CHECK
        if self.progress.current_section in ids:
            return self.progress.current_section
        return next(s for s in ids if s not in read)

    @property
    def section_number(self) -> int:
        """1-based position of `resume_at` (the check counts as the last section)."""
        at = self.resume_at
        return self.section_count if at == CHECK else self.module.section_ids.index(at) + 1


# --- the reader ----------------------------------------------------------------------------


def reader_of(session: Session, *, user: User, clock: Clock) -> Reader | None:
    """The reader behind a login; None for staff, and for a patient or caregiver not yet
    linked to a patient record (no state: nothing to offer, nowhere to count a completion)."""
    return readers_of(session, users=[user], clock=clock).get(user.id)


def readers_of(session: Session, *, users: Sequence[User], clock: Clock) -> dict[int, Reader]:
    """user id -> the reader behind each of these logins that is one (see `reader_of`): two
    queries at most, whatever the number of logins."""
    patients = {
        user.id: user.patient_id
        for user in users
        if user.role is Role.PATIENT and user.patient_id is not None
    }
    caregivers = {
        user.id: user.caregiver_id
        for user in users
        if user.role is Role.CAREGIVER and user.caregiver_id is not None
    }
    # patient id or caregiver id -> (state id, time zone, therapy code) of each patient.
    by_patient: dict[int, list[tuple[int, str, str]]] = {}
    by_caregiver: dict[int, list[tuple[int, str, str]]] = {}
    if patients:
        query = _patient_facts(Patient.id).where(Patient.id.in_(sorted(set(patients.values()))))
        for owner, state_id, zone, therapy in session.execute(query):
            by_patient.setdefault(owner, []).append((state_id, zone, therapy))
    if caregivers:
        query = (
            _patient_facts(CaregiverLink.caregiver_id)
            .join(CaregiverLink, CaregiverLink.patient_id == Patient.id)
            .where(CaregiverLink.caregiver_id.in_(sorted(set(caregivers.values()))))
            .order_by(CaregiverLink.id)
        )
        for owner, state_id, zone, therapy in session.execute(query):
            by_caregiver.setdefault(owner, []).append((state_id, zone, therapy))
    found: dict[int, Reader] = {}
    for user in users:
        if user.id in patients:
            rows = by_patient.get(patients[user.id], [])
        elif user.id in caregivers:
            rows = by_caregiver.get(caregivers[user.id], [])
        else:
            continue
        if not rows:
            continue
        states: dict[int, ReaderState] = {}
        for state_id, zone, _therapy in rows:
            states.setdefault(state_id, ReaderState(state_id, local_today(clock, zone)))
        found[user.id] = Reader(
            user_id=user.id,
            role=user.role,
            patient_id=user.patient_id if user.role is Role.PATIENT else None,
            states=tuple(states.values()),
            therapies=frozenset(row[2] for row in rows),
        )
    return found


def _patient_facts(owner: InstrumentedAttribute[int]) -> Select[int, int, str, str]:
    """A patient's state, its time zone and the patient's therapy, beside `owner`."""
    return (
        select(owner, Patient.state_id, State.time_zone, Therapy.code)
        .select_from(Patient)
        .join(State, State.id == Patient.state_id)
        .join(Therapy, Therapy.id == Patient.therapy_id)
    )


# --- funding -------------------------------------------------------------------------------


def funding_states_by_reader(
    session: Session,
    *,
    readers: Sequence[Reader],
    now: datetime,
    keys: Mapping[int, Iterable[str]] | None = None,
) -> dict[int, dict[str, int]]:
    """user id -> module key -> the first of the reader's states that funds it today (its
    local date inside a window that was not ended); when `keys` is given, only the keys
    given for that reader. One query whatever the number of readers."""
    wanted = None if keys is None else {uid: set(some) for uid, some in keys.items()}
    state_ids = sorted({state.state_id for reader in readers for state in reader.states})
    query = select(
        ModuleFunding.module_key,
        ModuleFunding.state_id,
        ModuleFunding.funded_from,
        ModuleFunding.funded_until,
    ).where(
        ModuleFunding.state_id.in_(state_ids),
        or_(ModuleFunding.ended_at.is_(None), ModuleFunding.ended_at > now),
    )
    if wanted is not None:
        query = query.where(ModuleFunding.module_key.in_(sorted(set().union(*wanted.values()))))
    windows = session.execute(query).all()
    found: dict[int, dict[str, int]] = {}
    for reader in readers:
        today = {state.state_id: state.today for state in reader.states}
        order = {state.state_id: index for index, state in enumerate(reader.states)}
        mine = None if wanted is None else wanted.get(reader.user_id, set())
        funded: dict[str, int] = {}
        for key, state_id, start, until in windows:
            if state_id not in today or (mine is not None and key not in mine):
                continue
            day = today[state_id]
            if start <= day and (until is None or day <= until):
                best = funded.get(key)
                if best is None or order[state_id] < order[best]:
                    funded[key] = state_id
        found[reader.user_id] = funded
    return found


# --- the offer -----------------------------------------------------------------------------


def _fits(module: Module, reader: Reader) -> bool:
    audience = module.for_patients() if reader.role is Role.PATIENT else module.for_caregivers()
    return audience and (
        not module.therapies or any(module.for_therapy(code) for code in reader.therapies)
    )


def reading_status(
    module: Module, progress: ModuleProgress | None, latest: ModuleCompletion | None
) -> ReadingStatus:
    """Where a reader is with a module, from their progress row and their latest completion
    (by version, then time): the one rule for the reader's list and the staff's view."""
    if latest is not None and latest.module_version >= module.significant_since:
        return ReadingStatus.COMPLETED
    if progress is not None and progress.module_version >= module.significant_since:
        return ReadingStatus.IN_PROGRESS
    if latest is not None:
        return ReadingStatus.NEEDS_NEW_READ
    return ReadingStatus.NOT_STARTED


# What needs doing comes first: assigned, then started, then updated, new and done ones.
_ORDER = {
    ReadingStatus.IN_PROGRESS: 1,
    ReadingStatus.NEEDS_NEW_READ: 2,
    ReadingStatus.NOT_STARTED: 3,
    ReadingStatus.COMPLETED: 4,
}


def _sort_key(item: OfferedModule) -> tuple[int, date, str]:
    rank = (
        0 if item.assigned and item.status is not ReadingStatus.COMPLETED else _ORDER[item.status]
    )
    return (rank, item.due_on or date.max, item.text.title.casefold())


def _scoped(
    query: Select[_Row], column: InstrumentedAttribute[str], keys: Sequence[str] | None
) -> Select[_Row]:
    return query if keys is None else query.where(column.in_(list(keys)))


def _offer(
    session: Session,
    *,
    readers: Sequence[Reader],
    clock: Clock,
    library: ModuleLibrary,
    language: str,
    keys: Sequence[str] | None,
) -> dict[int, list[OfferedModule]]:
    """user id -> what each reader is offered: the one offer rule, its rows loaded once for
    all the readers (a fixed number of queries whatever their number)."""
    if not readers:
        return {}
    user_ids = sorted({reader.user_id for reader in readers})
    # user id -> module key -> row: the progress, the latest completion (by version, then
    # time) and the latest assignment of each reader.
    progress: dict[int, dict[str, ModuleProgress]] = {uid: {} for uid in user_ids}
    for row in session.scalars(
        _scoped(
            select(ModuleProgress).where(ModuleProgress.user_id.in_(user_ids)),
            ModuleProgress.module_key,
            keys,
        )
    ):
        progress[row.user_id][row.module_key] = row
    latest: dict[int, dict[str, ModuleCompletion]] = {uid: {} for uid in user_ids}
    for done in session.scalars(
        _scoped(
            select(ModuleCompletion).where(ModuleCompletion.user_id.in_(user_ids)),
            ModuleCompletion.module_key,
            keys,
        ).order_by(ModuleCompletion.module_version, ModuleCompletion.completed_at)
    ):
        latest[done.user_id][done.module_key] = done
    assigned: dict[int, dict[str, ModuleAssignment]] = {uid: {} for uid in user_ids}
    for assignment in session.scalars(
        _scoped(
            select(ModuleAssignment).where(ModuleAssignment.user_id.in_(user_ids)),
            ModuleAssignment.module_key,
            keys,
        ).order_by(ModuleAssignment.assigned_at, ModuleAssignment.id)
    ):
        assigned[assignment.user_id][assignment.module_key] = assignment
    candidates = [module for module in library if keys is None or module.key in keys]
    # Funding is looked up only for what could need it (fitting, non-core modules).
    needs_funding = {
        reader.user_id: [m.key for m in candidates if not m.core and _fits(m, reader)]
        for reader in readers
    }
    funded = (
        funding_states_by_reader(session, readers=readers, now=clock.now(), keys=needs_funding)
        if any(needs_funding.values())
        else {}
    )
    return {
        reader.user_id: _offer_to(
            reader,
            candidates=candidates,
            language=language,
            progress=progress[reader.user_id],
            latest=latest[reader.user_id],
            assigned=assigned[reader.user_id],
            funded=funded.get(reader.user_id, {}),
        )
        for reader in readers
    }


def _offer_to(
    reader: Reader,
    *,
    candidates: Sequence[Module],
    language: str,
    progress: Mapping[str, ModuleProgress],
    latest: Mapping[str, ModuleCompletion],
    assigned: Mapping[str, ModuleAssignment],
    funded: Mapping[str, int],
) -> list[OfferedModule]:
    """What one reader is offered, from their rows (by module key): the rule itself."""
    home_state = reader.states[0].state_id
    offered: list[OfferedModule] = []
    for module in candidates:
        key = module.key
        already = key in progress or key in latest or key in assigned
        fits = _fits(module, reader)
        if not already and not (fits and (module.core or key in funded)):
            continue
        status = reading_status(module, progress.get(key), latest.get(key))
        completion = latest.get(key)
        assignment_row = assigned.get(key)
        # Counted under the state that funds it, else where it was completed, else home.
        state_id = funded.get(key)
        if state_id is None:
            state_id = completion.state_id if completion is not None else home_state
        offered.append(
            OfferedModule(
                module=module,
                text=module.text(language),
                status=status,
                progress=progress.get(key),
                completion=completion,
                due_on=(
                    assignment_row.due_on
                    if assignment_row is not None and status is not ReadingStatus.COMPLETED
                    else None
                ),
                assigned=assignment_row is not None,
                state_id=state_id,
            )
        )
    return sorted(offered, key=_sort_key)


def offered_modules(
    session: Session,
    *,
    user: User,
    clock: Clock,
    library: ModuleLibrary | None = None,
    language: str,
) -> list[OfferedModule]:
    """Every module this reader is offered, what needs doing first. Staff: none."""
    return offered_modules_by_user(
        session, users=[user], clock=clock, library=library, language=language
    )[user.id]


def offered_modules_by_user(
    session: Session,
    *,
    users: Sequence[User],
    clock: Clock,
    language: str,
    library: ModuleLibrary | None = None,
) -> dict[int, list[OfferedModule]]:
    """user id -> `offered_modules` of each of these logins (staff: none), in a fixed
    number of queries whatever the number of logins (a patient's page lists several)."""
    readers = readers_of(session, users=users, clock=clock)
    offers = _offer(
        session,
        readers=list(readers.values()),
        clock=clock,
        library=library or shipped_modules(),
        language=language,
        keys=None,
    )
    return {user.id: offers.get(user.id, []) for user in users}


def offered_module(
    session: Session,
    *,
    reader: Reader,
    clock: Clock,
    key: str,
    language: str,
    library: ModuleLibrary | None = None,
) -> OfferedModule | None:
    """One module if it is offered to this reader (the module pages: a few indexed queries
    restricted to its key), else None."""
    library = library or shipped_modules()
    if library.get(key) is None:
        return None
    found = _offer(
        session,
        readers=[reader],
        clock=clock,
        library=library,
        language=language,
        keys=[key],
    )[reader.user_id]
    return found[0] if found else None
