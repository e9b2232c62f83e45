"""Outcome reports: the dashboard of each agreement's measures (live, as of a past date, or
from a snapshot), its CSV and FHIR MeasureReports, the patients behind a figure and one
patient's result with its evidence, snapshots and their reproduction.

Who sees what (reporting/outcome_report.py suppresses every count before it gets here):
- state analysts and coordinators: the figures of their states; admins: of every state
  (`REPORTS_VIEW`);
- the patients behind a figure, one patient's result, individual MeasureReports
  (`OUTCOMES_PATIENTS`, coordinators): only patients the person may see (their states, and
  center if they have one), each read audited. Analysts and admins see figures only.

Filters and ids go in the query string; never a name."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.service import record_event
from core.clock import Clock
from core.dates import parse_day_or_none
from core.identity.access import Permission, report_state_ids, role_allows, scope_patients
from core.identity.models import User
from core.ids import PathId, parse_id
from core.models import Patient, State, TreatmentCenter
from core.reference import list_centers, list_states
from core.text import N_
from portal import i18n
from portal.deps import (
    ContextDep,
    PageNotFound,
    PatientAccess,
    SessionDep,
    actor_for,
    require,
    require_patient,
)
from portal.routes.pages import page_router
from portal.web import attachment, render
from portal.words import word
from reporting.agreements import Agreement, Measure, shipped_agreements
from reporting.charts import Bar, horizontal_bars
from reporting.measure_reports import individual_measure_report, summary_measure_report
from reporting.models import ReportSnapshot
from reporting.outcome_report import (
    GROUPINGS,
    MeasureView,
    OutcomeReport,
    Selection,
    cohorts_of,
    labels_for,
    outcome_report,
    periods_of,
    report_csv,
)
from reporting.outcomes import (
    STATUSES,
    AsOf,
    OutcomeCube,
    ResultFilter,
    Status,
    outcome_cube,
    patient_outcome,
    patient_results,
)
from reporting.program import Period
from reporting.snapshots import (
    Nightly,
    cube_of,
    fresh_nightly,
    get_snapshot,
    list_snapshots,
    nightly_cube,
    reproduce,
)

router = page_router()
Reader = Annotated[User, Depends(require(Permission.REPORTS_VIEW))]
PatientsReader = Annotated[User, Depends(require(Permission.OUTCOMES_PATIENTS))]
ResultAccess = Annotated[PatientAccess, Depends(require_patient(Permission.OUTCOMES_PATIENTS))]
Text = Annotated[str, Query(max_length=20)]
# An agreement's or measure's key, as the agreement files allow them.
PathKey = Path(pattern=r"^[a-z0-9][a-z0-9-]{0,47}$")
_COHORT = re.compile(r"^\d{4}(-Q[1-4])?$")
FHIR_JSON = "application/fhir+json"
# At most this many patients listed behind one figure (a page, not an export of the record).
PATIENT_LIST_LIMIT = 500


# --- what every outcome page reads from its query string ------------------------------------


@dataclass
class Choice:
    """The filters as asked (ids and codes only), checked against the viewer's states."""

    state_id: int | None = None
    center_id: int | None = None
    cohort: str | None = None
    # The quarter or year the results were decided in (None: whenever, or not yet).
    period: Period | None = None
    by: str = "state"
    as_of_day: date | None = None
    notices: list[str] = field(default_factory=list)

    def query(self, **changes: object) -> str:
        """The query string of these filters (with `changes`), for links."""
        values: dict[str, object] = {
            "state": self.state_id,
            "center": self.center_id,
            "cohort": self.cohort,
            "period": self.period.key if self.period is not None else None,
            "by": self.by,
            "as_of": self.as_of_day.isoformat() if self.as_of_day else None,
        }
        values.update(changes)
        return "&".join(
            f"{key}={value}" for key, value in values.items() if value not in (None, "")
        )


@dataclass(frozen=True)
class FilterText:
    """The filters as the query string gives them (ids and codes only, never a name)."""

    state: str = ""
    center: str = ""
    cohort: str = ""
    by: str = ""
    as_of: str = ""
    period: str = ""


def _filter_text(
    state: Text = "",
    center: Text = "",
    cohort: Text = "",
    by: Text = "",
    as_of: Text = "",
    period: Text = "",
) -> FilterText:
    return FilterText(state, center, cohort, by, as_of, period)


AskedFilters = Annotated[FilterText, Depends(_filter_text)]


def _choice(session: Session, *, user: User, clock: Clock, asked: FilterText) -> Choice:
    scope = report_state_ids(user)
    chosen = Choice(by=asked.by if asked.by in GROUPINGS else "state")
    if asked.state:
        state_id = parse_id(asked.state)
        if state_id is None or (scope is not None and state_id not in scope):
            raise PageNotFound()  # another state's figures are not this person's to see
        if session.get(State, state_id) is None:
            raise PageNotFound()
        chosen.state_id = state_id
    if asked.center:
        center_id = parse_id(asked.center)
        found = session.get(TreatmentCenter, center_id) if center_id is not None else None
        if found is None or (scope is not None and found.state_id not in scope):
            raise PageNotFound()
        chosen.center_id = found.id
    if asked.cohort:
        if _COHORT.match(asked.cohort):
            chosen.cohort = asked.cohort
        else:
            chosen.notices.append(i18n.gettext(N_("The infusion cohort was not understood.")))
    if asked.period and asked.period != "all":
        period = Period.parse(asked.period)
        if period is None:
            chosen.notices.append(
                i18n.gettext(
                    N_(
                        "The period was not understood (a year such as 2026, or a quarter "
                        "such as 2026-Q2): results decided at any time are shown."
                    )
                )
            )
        else:
            chosen.period = period
    if asked.as_of:
        day = parse_day_or_none(asked.as_of)
        today = clock.now().astimezone(UTC).date()
        if day is None:
            chosen.notices.append(i18n.gettext(N_("The date was not understood: as of now.")))
        elif day >= today:
            chosen.notices.append(i18n.gettext(N_("That day is not over yet: as of now.")))
        else:
            chosen.as_of_day = day
    return chosen


def _as_of(choice: Choice, clock: Clock) -> AsOf:
    return AsOf.end_of(choice.as_of_day) if choice.as_of_day else AsOf(clock.now())


def _counts(
    session: Session, *, agreement: Agreement, choice: Choice, clock: Clock
) -> tuple[OutcomeCube, Nightly | None]:
    """An agreement's counts for the dashboard and its exports: as of the day asked
    (counted from the history), else from last night's snapshot while it is fresh (the
    live count takes seconds at scale), else counted now."""
    if choice.as_of_day is None:
        nightly = fresh_nightly(session, agreement=agreement, now=clock.now())
        cube = nightly_cube(session, nightly) if nightly is not None else None
        if nightly is not None and cube is not None:
            return cube, nightly
    return outcome_cube(session, agreement=agreement, as_of=_as_of(choice, clock)), None


def _moment(session: Session, *, agreement: Agreement, choice: Choice, clock: Clock) -> AsOf:
    """The moment the dashboard's figures are of (`_counts`), without counting: the
    patients behind a figure are read as of it."""
    if choice.as_of_day is None:
        nightly = fresh_nightly(session, agreement=agreement, now=clock.now())
        if nightly is not None:
            return AsOf(nightly.as_of)
    return _as_of(choice, clock)


def _agreement(key: str) -> Agreement:
    agreement = shipped_agreements().get(key)
    if agreement is None:
        raise PageNotFound()
    return agreement


def _measure(agreement: Agreement, key: str) -> Measure:
    measure = agreement.measure(key)
    if measure is None:
        raise PageNotFound()
    return measure


def _selection(user: User, choice: Choice) -> Selection:
    return Selection(
        state_ids=report_state_ids(user),
        state_id=choice.state_id,
        center_id=choice.center_id,
        cohort=choice.cohort,
        period=choice.period,
    )


# --- the dashboard ---------------------------------------------------------------------------


def _status_words() -> dict[str, str]:
    return {status.value: word("outcome_status", status.value) for status in STATUSES}


def _chart(report: OutcomeReport, view: MeasureView) -> Any:
    words = _status_words()
    bars = [
        Bar(words[status.value], figure.number, figure.text)
        for status, figure in zip(STATUSES, view.totals, strict=True)
    ]
    title = i18n.translate(
        N_(
            "%(measure)s: patients by result",
            measure=view.measure.title.text(i18n.current_language().value),
        )
    )
    description = "; ".join(f"{bar.label}: {bar.text}" for bar in bars)
    return horizontal_bars(
        chart_id=f"chart-{report.agreement.key}-{view.measure.key}",
        title=title,
        description=description,
        bars=bars,
    )


def _dashboard_context(
    session: Session,
    *,
    user: User,
    agreement: Agreement,
    cube: OutcomeCube,
    choice: Choice,
    snapshot: ReportSnapshot | None,
    nightly: Nightly | None = None,
) -> dict[str, Any]:
    _period_kept(choice, cube)
    labels = labels_for(session)
    report = outcome_report(
        cube, agreement=agreement, labels=labels, selection=_selection(user, choice), by=choice.by
    )
    scope = report_state_ids(user)
    state_ids = None if scope is None else set(scope)
    return {
        "agreement": agreement,
        "report": report,
        "charts": {view.measure.key: _chart(report, view) for view in report.measures},
        "choice": choice,
        "states": list_states(session, state_ids=state_ids),
        "centers": [
            (center.id, labels.centers[center.id])
            for center in list_centers(session, state_ids=state_ids)
        ],
        "cohorts": cohorts_of(cube),
        "periods": periods_of(cube),
        "groupings": GROUPINGS,
        "statuses": STATUSES,
        "snapshot": snapshot,
        "nightly": nightly,
        "can_list_patients": role_allows(user, Permission.OUTCOMES_PATIENTS),
        "lang": i18n.current_language().value,
    }


def _period_kept(choice: Choice, cube: OutcomeCube) -> None:
    """Drop the period, and say so, where the counts do not say when each result was
    decided (a snapshot taken before the dashboards had a period)."""
    if choice.period is not None and not cube.has_decided:
        choice.period = None
        choice.notices.append(
            i18n.gettext(
                N_(
                    "This snapshot does not keep the day each result was decided: "
                    "the period cannot apply, so results decided at any time are shown."
                )
            )
        )


def _audit(
    request: Request, session: Session, context: ContextDep, user: User, action: str, **detail: Any
) -> None:
    record_event(
        session,
        clock=context.clock,
        actor=actor_for(request, user),
        action=action,
        target=str(detail.pop("target", "")) or None,
        detail={key: value for key, value in detail.items() if value is not None} or None,
    )


def _figures(
    request: Request,
    session: Session,
    context: ContextDep,
    user: User,
    agreement_key: str,
    asked: FilterText,
    *,
    action: str,
) -> tuple[Agreement, Choice, OutcomeCube, Nightly | None]:
    """An agreement's counts for the filters asked (`_counts`), the reading audited as
    `action`."""
    agreement = _agreement(agreement_key)
    choice = _choice(session, user=user, clock=context.clock, asked=asked)
    cube, nightly = _counts(session, agreement=agreement, choice=choice, clock=context.clock)
    _audit(
        request,
        session,
        context,
        user,
        action,
        target=f"agreement:{agreement.key}",
        query=choice.query(),
        snapshot=nightly.snapshot_id if nightly is not None else None,
    )
    return agreement, choice, cube, nightly


@router.get("/reports/outcomes", name="outcome_reports")
def outcome_reports(request: Request, user: Reader) -> Response:
    """The agreements, each a link to its dashboard."""
    return render(
        request,
        "portal/outcomes_index.html",
        {"agreements": shipped_agreements().current(), "lang": i18n.current_language().value},
    )


@router.get("/reports/outcomes/{agreement_key}", name="outcome_dashboard")
def outcome_dashboard(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Reader,
    agreement_key: Annotated[str, PathKey],
    asked: AskedFilters,
) -> Response:
    agreement, choice, cube, nightly = _figures(
        request, session, context, user, agreement_key, asked, action="outcomes.view"
    )
    return render(
        request,
        "portal/outcomes.html",
        _dashboard_context(
            session,
            user=user,
            agreement=agreement,
            cube=cube,
            choice=choice,
            snapshot=None,
            nightly=nightly,
        ),
        block="dashboard",
    )


@router.get("/reports/outcomes/{agreement_key}/figures.csv", name="outcome_figures_csv")
def outcome_figures_csv(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Reader,
    agreement_key: Annotated[str, PathKey],
    asked: AskedFilters,
) -> Response:
    """The dashboard's figures as published (suppressed), one per line."""
    agreement, choice, cube, _nightly = _figures(
        request, session, context, user, agreement_key, asked, action="outcomes.export"
    )
    _period_kept(choice, cube)
    report = outcome_report(
        cube,
        agreement=agreement,
        labels=labels_for(session),
        selection=_selection(user, choice),
        by=choice.by,
    )
    day = report.as_of.astimezone(UTC).date().isoformat()
    return attachment(
        report_csv(report, translate=i18n.gettext), filename=f"outcomes-{agreement.key}-{day}.csv"
    )


def _fhir(resource: dict[str, Any], filename: str) -> Response:
    return attachment(
        json.dumps(resource, indent=2, ensure_ascii=False), filename=filename, media_type=FHIR_JSON
    )


@router.get(
    "/reports/outcomes/{agreement_key}/{measure_key}/measure-report.json",
    name="outcome_measure_report",
)
def outcome_measure_report(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Reader,
    agreement_key: Annotated[str, PathKey],
    measure_key: Annotated[str, PathKey],
    asked: AskedFilters,
) -> Response:
    """The summary MeasureReport (FHIR R4) of one measure over the selection (its period:
    the results decided in it), stratified by state, therapy and year of infusion;
    suppressed counts are masked. The rows asked for (`by`) do not apply."""
    agreement = _agreement(agreement_key)
    measure = _measure(agreement, measure_key)
    choice = _choice(session, user=user, clock=context.clock, asked=replace(asked, by="state"))
    cube, nightly = _counts(session, agreement=agreement, choice=choice, clock=context.clock)
    _period_kept(choice, cube)
    labels, selection = labels_for(session), _selection(user, choice)
    reports = {
        by: outcome_report(cube, agreement=agreement, labels=labels, selection=selection, by=by)
        for by in ("state", "cohort_year")
    }
    resource = summary_measure_report(
        reports["state"], measure, by_state=reports["state"], by_cohort=reports["cohort_year"]
    )
    _audit(
        request,
        session,
        context,
        user,
        "outcomes.export",
        target=f"measure:{agreement.key}/{measure.key}",
        query=choice.query(),
        format="MeasureReport",
        snapshot=nightly.snapshot_id if nightly is not None else None,
    )
    return _fhir(resource, f"measure-report-{agreement.key}-{measure.key}.json")


# --- the patients behind a figure (coordinators: only their own patients) -------------------


def _visible_patient_ids(session: Session, user: User) -> list[int]:
    """The patients `user` may see (today's record: their states, and center)."""
    return list(
        session.scalars(scope_patients(select(Patient), user).with_only_columns(Patient.id))
    )


@router.get("/reports/outcomes/{agreement_key}/{measure_key}/patients", name="outcome_patients")
def outcome_patients(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: PatientsReader,
    agreement_key: Annotated[str, PathKey],
    measure_key: Annotated[str, PathKey],
    asked: AskedFilters,
    status: Text = "",
) -> Response:
    """The patients a figure counts, among those this person may see; each one audited."""
    agreement = _agreement(agreement_key)
    measure = _measure(agreement, measure_key)
    choice = _choice(session, user=user, clock=context.clock, asked=asked)
    wanted = Status(status) if status in {s.value for s in STATUSES} else None
    year, quarter = _cohort_parts(choice.cohort)
    results = patient_results(
        session,
        agreement=agreement,
        measure=measure,
        as_of=_moment(session, agreement=agreement, choice=choice, clock=context.clock),
        which=ResultFilter(
            status=wanted,
            state_ids=frozenset({choice.state_id}) if choice.state_id else None,
            center_id=choice.center_id,
            cohort_year=year,
            cohort_quarter=quarter,
            decided_from=choice.period.start if choice.period is not None else None,
            decided_until=choice.period.end if choice.period is not None else None,
        ),
        patient_ids=_visible_patient_ids(session, user),
        limit=PATIENT_LIST_LIMIT + 1,
    )
    more = len(results) > PATIENT_LIST_LIMIT
    results = results[:PATIENT_LIST_LIMIT]
    people = {
        patient.id: patient
        for patient in session.scalars(
            select(Patient).where(Patient.id.in_([result.patient_id for result in results]))
        )
    }
    actor = actor_for(request, user)
    for result in results:
        record_event(
            session,
            clock=context.clock,
            actor=actor,
            action="outcomes.patients",
            patient_id=result.patient_id,
            target=f"measure:{agreement.key}/{measure.key}",
        )
    return render(
        request,
        "portal/outcome_patients.html",
        {
            "agreement": agreement,
            "measure": measure,
            "status": wanted,
            "choice": choice,
            "results": results,
            "people": people,
            "more": more,
            "limit": PATIENT_LIST_LIMIT,
            "labels": labels_for(session),
            "lang": i18n.current_language().value,
        },
    )


def _cohort_parts(cohort: str | None) -> tuple[int | None, int | None]:
    if cohort is None:
        return None, None
    year, _, quarter = cohort.partition("-Q")
    return int(year), int(quarter) if quarter else None


@router.get(
    "/reports/outcomes/{agreement_key}/{measure_key}/patients/{patient_id}",
    name="outcome_patient",
)
def outcome_patient(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: ResultAccess,
    agreement_key: Annotated[str, PathKey],
    measure_key: Annotated[str, PathKey],
    as_of: Text = "",
) -> Response:
    """One patient's result for one measure and the evidence that decided it (the read is
    audited by `require_patient`)."""
    agreement = _agreement(agreement_key)
    measure = _measure(agreement, measure_key)
    choice = _choice(session, user=access.user, clock=context.clock, asked=FilterText(as_of=as_of))
    moment = _as_of(choice, context.clock)
    outcome = patient_outcome(
        session,
        agreement=agreement,
        measure=measure,
        patient_id=access.patient.id,
        as_of=moment,
    )
    return render(
        request,
        "portal/outcome_patient.html",
        {
            "agreement": agreement,
            "measure": measure,
            "patient": access.patient,
            "found": outcome,
            "as_of": moment,
            "choice": choice,
            "labels": labels_for(session),
            "lang": i18n.current_language().value,
        },
    )


@router.get(
    "/reports/outcomes/{agreement_key}/{measure_key}/patients/{patient_id}/measure-report.json",
    name="outcome_patient_measure_report",
)
def outcome_patient_measure_report(
    session: SessionDep,
    context: ContextDep,
    access: ResultAccess,
    agreement_key: Annotated[str, PathKey],
    measure_key: Annotated[str, PathKey],
    as_of: Text = "",
) -> Response:
    """The individual MeasureReport (FHIR R4) of one patient's result."""
    agreement = _agreement(agreement_key)
    measure = _measure(agreement, measure_key)
    choice = _choice(session, user=access.user, clock=context.clock, asked=FilterText(as_of=as_of))
    moment = _as_of(choice, context.clock)
    outcome = patient_outcome(
        session,
        agreement=agreement,
        measure=measure,
        patient_id=access.patient.id,
        as_of=moment,
    )
    resource = individual_measure_report(
        agreement, measure, outcome=outcome, patient_id=access.patient.id, as_of=moment.at
    )
    return _fhir(resource, f"measure-report-{measure.key}-patient-{access.patient.id}.json")


# --- snapshots -------------------------------------------------------------------------------


@router.get("/reports/snapshots", name="outcome_snapshots")
def outcome_snapshots(request: Request, session: SessionDep, user: Reader) -> Response:
    """The kept snapshots, newest first (what each holds is opened by its page)."""
    return render(
        request,
        "portal/snapshots.html",
        {
            "snapshots": list_snapshots(session),
            "agreements": {a.key: a for a in shipped_agreements().current()},
            "lang": i18n.current_language().value,
        },
    )


def _snapshot_or_404(session: Session, snapshot_id: int) -> tuple[ReportSnapshot, Agreement]:
    snapshot = get_snapshot(session, snapshot_id=snapshot_id)
    if snapshot is None:
        raise PageNotFound()
    agreement = shipped_agreements().get(str(snapshot.parameters["agreement"]))
    if agreement is None:
        raise PageNotFound()
    return snapshot, agreement


@router.get("/reports/snapshots/{snapshot_id}", name="outcome_snapshot")
def outcome_snapshot(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Reader,
    snapshot_id: PathId,
    asked: AskedFilters,
) -> Response:
    """A snapshot's figures on the dashboard (suppressed like the live ones; the snapshot
    is of its own moment, so an as-of day does not apply)."""
    snapshot, agreement = _snapshot_or_404(session, snapshot_id)
    choice = _choice(session, user=user, clock=context.clock, asked=replace(asked, as_of=""))
    _audit(
        request,
        session,
        context,
        user,
        "outcomes.view",
        target=f"snapshot:{snapshot.id}",
        query=choice.query(),
    )
    return render(
        request,
        "portal/outcomes.html",
        _dashboard_context(
            session,
            user=user,
            agreement=agreement,
            cube=cube_of(snapshot),
            choice=choice,
            snapshot=snapshot,
        ),
        block="dashboard",
    )


@router.get("/reports/snapshots/{snapshot_id}/reproduce", name="outcome_snapshot_reproduce")
def outcome_snapshot_reproduce(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Reader,
    snapshot_id: PathId,
) -> Response:
    """Compute the snapshot's figures again as of its moment and say whether they match."""
    snapshot, agreement = _snapshot_or_404(session, snapshot_id)
    again = reproduce(session, snapshot=snapshot, library=shipped_agreements())
    _audit(request, session, context, user, "outcomes.reproduce", target=f"snapshot:{snapshot.id}")
    return render(
        request,
        "portal/snapshot_reproduce.html",
        {
            "snapshot": snapshot,
            "agreement": agreement,
            "reproduction": again,
            "lang": i18n.current_language().value,
        },
    )
