"""When questionnaires are due: the follow-up protocol names, per visit, the questionnaires
the patient answers for it (the CIBMTR time points: day 100, day 180, year 1, then yearly),
and, before any visit, the ones answered before the infusion.

A visit's questionnaire is due from the day its window opens. While the window is open it
is not started, in progress, or done (a completed response tied to the visit); once the
window closes without a completed response it is overdue, and may still be answered for
LATE_ANSWER_DAYS (the coordinator chases it from the worklist meanwhile). The before-
infusion questionnaires are due from enrolment until the infusion day; they have no window
to miss (a patient enrolled after the infusion never had the chance).

A protocol may name a questionnaire that is not loaded (yet): it shows to staff as such and
is left out for patients; nothing fails. Plain keyword-only functions over a Session."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select
from sqlalchemy.orm import Session, aliased

from coordination.followup.models import FollowUpPlan, Visit, VisitStatus
from coordination.followup.protocol import Label, ProtocolLibrary
from coordination.questionnaires.models import (
    Questionnaire,
    QuestionnaireResponse,
    QuestionnaireStatus,
    ResponseStatus,
)
from core.clock import Clock, local_today
from core.models import CaregiverLink, Language, Patient, PatientStatus, Therapy

# After a visit's window closed, its questionnaire may still be answered this long (and the
# worklist shows it overdue meanwhile); later it stays overdue on the patient's record only.
LATE_ANSWER_DAYS = 90
_FOLLOW_UP_ENDED = (PatientStatus.WITHDRAWN, PatientStatus.DECEASED)


class DueStatus(enum.StrEnum):
    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    OVERDUE = "overdue"  # the window closed without a completed response


@dataclass(frozen=True)
class DueQuestionnaire:
    """One questionnaire asked of a patient at one time point."""

    url: str
    # The visit it is asked for; None before the infusion.
    visit: Visit | None
    time_point: Label
    status: DueStatus
    # The newest active version loaded, in the reader's language where it exists; None
    # when the protocol names a questionnaire not loaded (yet).
    questionnaire: Questionnaire | None
    # The completed response (done), else the draft (in progress), else None.
    response: QuestionnaireResponse | None
    # The last day it may be answered (None: until the infusion, or no limit known).
    answer_by: date | None

    @property
    def loaded(self) -> bool:
        return self.questionnaire is not None

    @property
    def key(self) -> str:
        """The time point's key in a page: the visit's key, or "before-infusion"."""
        return self.visit.visit_key if self.visit is not None else "before-infusion"


def loaded_questionnaires(
    session: Session, *, urls: Iterable[str], language: Language
) -> dict[str, Questionnaire]:
    """The newest active version of each url that is loaded, in `language` where that
    version has it (one query)."""
    wanted = sorted(set(urls))
    if not wanted:
        return {}
    rows = session.scalars(
        select(Questionnaire)
        .where(
            Questionnaire.url.in_(wanted),
            Questionnaire.status == QuestionnaireStatus.ACTIVE,
        )
        .order_by(Questionnaire.url, Questionnaire.loaded_at.desc(), Questionnaire.id.desc())
    ).all()
    newest: dict[str, str] = {}
    chosen: dict[str, Questionnaire] = {}
    for row in rows:
        if row.version != newest.setdefault(row.url, row.version):
            continue
        if row.url not in chosen or row.language is language:
            chosen[row.url] = row
    return chosen


def _status_of(
    responses: list[QuestionnaireResponse], *, closed: bool
) -> tuple[DueStatus, QuestionnaireResponse | None]:
    done = [r for r in responses if r.status is ResponseStatus.COMPLETED]
    if done:
        return DueStatus.DONE, max(done, key=lambda r: (r.authored_at, r.id))
    draft = next((r for r in responses if r.status is ResponseStatus.IN_PROGRESS), None)
    if closed:
        return DueStatus.OVERDUE, draft
    return (DueStatus.IN_PROGRESS, draft) if draft is not None else (DueStatus.NOT_STARTED, None)


def _asked_of(visit: Visit) -> bool:
    """A visit whose questionnaires count: not cancelled, and created before its window
    closed (a back-dated enrolment's past visits were never the patient's to answer)."""
    return visit.status is not VisitStatus.CANCELLED and visit.created_at.date() <= visit.window_end


def due_questionnaires(
    session: Session,
    *,
    clock: Clock,
    library: ProtocolLibrary,
    patient: Patient,
    language: Language | None = None,
    include_future: bool = False,
) -> list[DueQuestionnaire]:
    """The patient's questionnaires from their protocol, in time order: those due now or
    before (done, overdue, in progress, not started) and, with `include_future`, those of
    visits whose window has not opened yet (not started). Questionnaires not loaded are
    included (`loaded` False): staff see them as not loaded yet; patient pages skip them."""
    return due_for_patients(
        session,
        clock=clock,
        library=library,
        patients=[patient],
        language=language or patient.preferred_language,
        include_future=include_future,
    )[patient.id]


def due_for_patients(
    session: Session,
    *,
    clock: Clock,
    library: ProtocolLibrary,
    patients: list[Patient],
    language: Language,
    include_future: bool = False,
) -> dict[int, list[DueQuestionnaire]]:
    """`due_questionnaires` of several patients at once (a caregiver's home): four
    queries whatever their number."""
    ids = [patient.id for patient in patients]
    found: dict[int, list[DueQuestionnaire]] = {patient_id: [] for patient_id in ids}
    if not ids:
        return found
    plans = {
        plan.patient_id: plan
        for plan in session.scalars(select(FollowUpPlan).where(FollowUpPlan.patient_id.in_(ids)))
    }
    visits_of: dict[int, list[Visit]] = {patient_id: [] for patient_id in ids}
    for visit in session.scalars(
        select(Visit).where(Visit.patient_id.in_(ids)).order_by(Visit.sequence)
    ):
        visits_of[visit.patient_id].append(visit)
    asked_of: dict[int, list[tuple[Visit | None, Label, tuple[str, ...]]]] = {}
    for patient in patients:
        asked_of[patient.id] = _asked(
            library,
            patient=patient,
            plan=plans.get(patient.id),
            visits=visits_of[patient.id],
            today=local_today(clock, patient.time_zone),
            include_future=include_future,
        )
    urls = {url for asked in asked_of.values() for _, _, urls in asked for url in urls}
    if not urls:
        return found
    loaded = loaded_questionnaires(session, urls=urls, language=language)
    responses = session.execute(
        select(QuestionnaireResponse, Questionnaire.url)
        .join(Questionnaire, Questionnaire.id == QuestionnaireResponse.questionnaire_id)
        .where(QuestionnaireResponse.patient_id.in_(ids))
        .order_by(QuestionnaireResponse.id)
    ).all()
    by_key: dict[tuple[int, int | None, str], list[QuestionnaireResponse]] = {}
    for response, url in responses:
        by_key.setdefault((response.patient_id, response.visit_id, url), []).append(response)
    for patient in patients:
        found[patient.id] = _statuses(
            patient,
            asked=asked_of[patient.id],
            responses=by_key,
            loaded=loaded,
            today=local_today(clock, patient.time_zone),
        )
    return found


def _asked(
    library: ProtocolLibrary,
    *,
    patient: Patient,
    plan: FollowUpPlan | None,
    visits: list[Visit],
    today: date,
    include_future: bool,
) -> list[tuple[Visit | None, Label, tuple[str, ...]]]:
    """The time points (before infusion, visits) with the questionnaires each asks for."""
    therapy = patient.therapy.code
    protocol = library.version_or_current(therapy, plan.protocol_version if plan else None)
    asked: list[tuple[Visit | None, Label, tuple[str, ...]]] = []
    if protocol is not None and protocol.before_infusion is not None:
        asked.append(
            (None, protocol.before_infusion.label, protocol.before_infusion.questionnaires)
        )
    for visit in visits:
        definition = library.visit_of(therapy, visit.protocol_version, visit.visit_key)
        if definition is None or not definition.questionnaires or not _asked_of(visit):
            continue
        if visit.window_start > today and not include_future:
            continue
        asked.append((visit, definition.label, definition.questionnaires))
    return asked


def _statuses(
    patient: Patient,
    *,
    asked: list[tuple[Visit | None, Label, tuple[str, ...]]],
    responses: dict[tuple[int, int | None, str], list[QuestionnaireResponse]],
    loaded: dict[str, Questionnaire],
    today: date,
) -> list[DueQuestionnaire]:
    infusion = patient.infusion_date
    infused = infusion is not None and infusion <= today
    found: list[DueQuestionnaire] = []
    for at_visit, label, urls in asked:
        for url in urls:
            mine = responses.get((patient.id, at_visit.id if at_visit else None, url), [])
            if at_visit is None:
                if infused:
                    # Before the infusion counts only what was started before it.
                    assert infusion is not None
                    mine = [r for r in mine if r.started_at.date() < infusion]
                status, latest = _status_of(mine, closed=False)
                if infused and status is not DueStatus.DONE:
                    continue  # the time point passed: nothing to answer or chase
                answer_by = infusion - timedelta(days=1) if infusion else None
            else:
                status, latest = _status_of(mine, closed=at_visit.window_end < today)
                answer_by = at_visit.window_end + timedelta(days=LATE_ANSWER_DAYS)
            found.append(
                DueQuestionnaire(
                    url=url,
                    visit=at_visit,
                    time_point=label,
                    status=status,
                    questionnaire=loaded.get(url),
                    response=latest,
                    answer_by=answer_by,
                )
            )
    return found


def open_to_answer(
    due: Iterable[DueQuestionnaire], *, clock: Clock, patient: Patient
) -> list[DueQuestionnaire]:
    """What the patient may answer today: loaded, not done, its window open (or closed
    less than LATE_ANSWER_DAYS ago), before-infusion ones until the infusion."""
    today = local_today(clock, patient.time_zone)
    return [
        item
        for item in due
        if item.loaded
        and item.status is not DueStatus.DONE
        and (item.visit is None or item.visit.window_start <= today)
        and (item.answer_by is None or today <= item.answer_by)
    ]


def find_due(
    due: Iterable[DueQuestionnaire], *, visit_id: int | None, url: str
) -> DueQuestionnaire | None:
    """The due questionnaire at this time point (a visit's id, None before infusion)."""
    return next(
        (
            item
            for item in due
            if item.url == url and (item.visit.id if item.visit else None) == visit_id
        ),
        None,
    )


def visits_with_questionnaires_due(
    session: Session, *, clock: Clock, library: ProtocolLibrary, patient: Patient
) -> set[int]:
    """The ids of the patient's visits with a loaded questionnaire answerable and not done
    today (what the reminder texts nudge about)."""
    due = due_questionnaires(session, clock=clock, library=library, patient=patient)
    return {
        item.visit.id
        for item in open_to_answer(due, clock=clock, patient=patient)
        if item.visit is not None
    }


# --- in SQL, for lists (the worklist) ----------------------------------------------------


def _asked_groups(library: ProtocolLibrary) -> dict[tuple[str, str], dict[int, set[str]]]:
    """(therapy code, url) -> protocol version -> the visit keys that ask for it."""
    groups: dict[tuple[str, str], dict[int, set[str]]] = {}
    for therapy, versions in library.versions.items():
        for version, protocol in versions.items():
            for visit in protocol.visits:
                for url in visit.questionnaires:
                    groups.setdefault((therapy, url), {}).setdefault(version, set()).add(visit.key)
    return groups


_LOADED = aliased(Questionnaire, name="loaded_questionnaire")


def overdue_condition(*, library: ProtocolLibrary, today: date) -> ColumnElement[bool]:
    """A condition on Visit (its query joins Patient and Therapy) that holds when one of
    the visit's questionnaires is loaded and overdue, still answerable on `today`: the
    window closed less than LATE_ANSWER_DAYS ago without a completed response for it.
    Built from the protocols (one branch per therapy and questionnaire); a questionnaire
    not loaded is nobody's to answer, so nobody chases it."""
    branches: list[ColumnElement[bool]] = []
    for (therapy, url), versions in sorted(_asked_groups(library).items()):
        loaded = exists().where(_LOADED.url == url, _LOADED.status == QuestionnaireStatus.ACTIVE)
        done = exists().where(
            QuestionnaireResponse.visit_id == Visit.id,
            QuestionnaireResponse.status == ResponseStatus.COMPLETED,
            Questionnaire.id == QuestionnaireResponse.questionnaire_id,
            Questionnaire.url == url,
        )
        keys = or_(
            *(
                and_(Visit.protocol_version == version, Visit.visit_key.in_(sorted(keys)))
                for version, keys in sorted(versions.items())
            )
        )
        branches.append(and_(Therapy.code == therapy, keys, loaded, ~done))
    if not branches:
        return false()
    return and_(
        Visit.status != VisitStatus.CANCELLED,
        Visit.window_end < today,
        Visit.window_end >= today - timedelta(days=LATE_ANSWER_DAYS),
        # Made before its window closed (not a back-dated enrolment's past visit): date()
        # is the date part on SQLite and PostgreSQL alike.
        func.date(Visit.created_at) <= Visit.window_end,
        or_(*branches),
        Patient.status.not_in(_FOLLOW_UP_ENDED),
    )


def overdue_visits_query(*, library: ProtocolLibrary, today: date) -> Select[int, int]:
    """(visit id, patient id) of the visits with an overdue questionnaire on `today`."""
    return (
        select(Visit.id, Visit.patient_id)
        .join(Patient, Patient.id == Visit.patient_id)
        .join(Therapy, Therapy.id == Patient.therapy_id)
        .where(overdue_condition(library=library, today=today))
    )


# --- for the reminder planning: many visits at once ---------------------------------------


@dataclass(frozen=True)
class AnswersWaiting:
    """What the reminder planning needs to know, read once for all the visits it plans:
    which questionnaires are loaded, which were answered for which visit, and which
    caregivers may answer for which patient."""

    loaded: frozenset[str]
    done: frozenset[tuple[int, str]]  # (visit id, url) with a completed response
    answerers: frozenset[tuple[int, int]]  # (patient id, caregiver id) with the right

    def waiting(self, visit_id: int, urls: Iterable[str]) -> bool:
        """A loaded questionnaire of the visit not answered yet."""
        return any(url in self.loaded and (visit_id, url) not in self.done for url in urls)

    def may_answer(self, patient_id: int, caregiver_id: int | None) -> bool:
        """The patient themself, or a caregiver with the right to answer for them."""
        return caregiver_id is None or (patient_id, caregiver_id) in self.answerers


def answers_waiting(session: Session, *, visit_ids: Select[Any]) -> AnswersWaiting:
    """AnswersWaiting for the visits `visit_ids` selects (three queries, whatever their
    number)."""
    loaded = session.scalars(
        select(Questionnaire.url)
        .where(Questionnaire.status == QuestionnaireStatus.ACTIVE)
        .distinct()
    )
    done = session.execute(
        select(QuestionnaireResponse.visit_id, Questionnaire.url)
        .join(Questionnaire, Questionnaire.id == QuestionnaireResponse.questionnaire_id)
        .where(
            QuestionnaireResponse.visit_id.in_(visit_ids),
            QuestionnaireResponse.status == ResponseStatus.COMPLETED,
        )
    )
    answerers = session.execute(
        select(CaregiverLink.patient_id, CaregiverLink.caregiver_id).where(
            CaregiverLink.can_answer_questionnaires.is_(True)
        )
    )
    return AnswersWaiting(
        loaded=frozenset(loaded),
        done=frozenset((visit_id, url) for visit_id, url in done if visit_id is not None),
        answerers=frozenset((patient_id, caregiver_id) for patient_id, caregiver_id in answerers),
    )


class NotDue(Exception):
    """The questionnaire is not open to answers for that visit (not the patient's visit,
    not asked there, not yet open or closed too long ago, already answered)."""


def visit_to_answer_for(
    session: Session,
    *,
    clock: Clock,
    library: ProtocolLibrary,
    patient: Patient,
    questionnaire: Questionnaire,
    visit_id: int,
) -> Visit:
    """The patient's visit `visit_id` when `questionnaire` may be answered for it today
    (start_response then ties the response to it); raises NotDue otherwise."""
    due = due_questionnaires(session, clock=clock, library=library, patient=patient)
    found = find_due(
        open_to_answer(due, clock=clock, patient=patient),
        visit_id=visit_id,
        url=questionnaire.url,
    )
    if found is None or found.visit is None:
        raise NotDue()
    return found.visit
