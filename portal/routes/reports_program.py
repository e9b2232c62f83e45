"""The program dashboard (`/reports/program`): follow-up adherence, retention, reminder reach,
patients' reports and the time to contact after a missed visit, for analysts and
coordinators (their states) and admins (every state), filtered by state, therapy, center,
infusion cohort and period (ids and codes in the query, never names), as of last night's
snapshot or a chosen day. Every count is suppressed (`reporting.program_report`); each table
has its CSV, the whole a FHIR MeasureReport. Coordinators open the patients behind a figure
(only their own, audited); analysts and admins have no access to patients, and the
drill-down says so."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from coordination.followup.protocol import shipped_protocols
from core.audit.models import AuditOutcome
from core.audit.service import record_event
from core.dates import parse_day_or_none
from core.identity.access import Permission, report_state_ids, role_allows
from core.identity.models import User
from core.ids import parse_id
from core.models import State, Therapy, TreatmentCenter
from core.reference import list_centers, list_states, list_therapies
from core.text import N_
from portal import i18n
from portal.context import AppContext
from portal.deps import ContextDep, PageNotFound, SessionDep, actor_for, require
from portal.routes.pages import page_router
from portal.web import attachment, render
from reporting.program import NOT_INFUSED, Period, Selection
from reporting.program_dashboard import (
    NoPatientAccess,
    behind_of,
    cohort_choices,
    dashboard_as_of,
    patients_behind,
    period_choices,
    program_dashboard,
)
from reporting.program_fhir import program_measure_report
from reporting.program_report import TABLES, ProgramReport, table_csv, visit_order

router = page_router()
_ = i18n.gettext
Viewer = Annotated[User, Depends(require(Permission.REPORTS_VIEW))]
Text = Annotated[str, Query(max_length=20)]

TITLES = {
    "adherence_by_visit": N_("Visits by protocol visit"),
    "adherence_by_year": N_("Visits by year since infusion"),
    "contact": N_("Contact after a missed visit"),
    "retention": N_("Patients by status"),
    "texts": N_("Reminder texts"),
    "answers": N_("Answers to reminders"),
    "opt_outs": N_("Texts stopped"),
    "reports": N_("Patients' reports between visits"),
}
DESCRIPTIONS = {
    "adherence_by_visit": N_(
        "Visits whose window closed in the period, by what happened: completed between the "
        "window's first and last day, completed outside the window, missed, cancelled, or "
        "nothing recorded yet."
    ),
    "adherence_by_year": N_(
        "The same visits by the year after infusion they are planned in (a visit up to day "
        "365 is in year 1)."
    ),
    "contact": N_(
        "Missed visits, and whether the care team reached out since: an outreach note, a "
        "text sent by hand, a booked appointment or a completed visit, after the window closed."
    ),
    "retention": N_(
        "Every patient by their status on the figures' day, by the year they were infused. "
        "The period does not apply: it is a state at one moment."
    ),
    "texts": N_(
        "Reminder texts sent in the period, by what the phone company reported: delivered, "
        "failed (or refused when sending), or no report yet."
    ),
    "answers": N_(
        "Appointments confirmed by a text reply, in the portal or by the care team, and "
        "requests to move a visit by text or in the portal."
    ),
    "opt_outs": N_("Phone numbers whose texts were stopped in the period, by how."),
    "reports": N_(
        "Pain crises, emergency visits and hospital stays that patients or caregivers "
        "reported in the period, by the care team's review."
    ),
}
COLUMNS = {
    "in_window": N_("Completed in the window"),
    "outside_window": N_("Completed outside the window"),
    "missed": N_("Missed"),
    "cancelled": N_("Cancelled"),
    "open": N_("Nothing recorded yet"),
    "contacted": N_("Contacted since"),
    "not_contacted": N_("Not yet contacted"),
    "delivered": N_("Delivered"),
    "failed": N_("Failed"),
    "no_report": N_("No delivery report"),
    "confirmed_by_text": N_("Confirmed by text"),
    "confirmed_in_portal": N_("Confirmed in the portal"),
    "confirmed_by_staff": N_("Confirmed by the care team"),
    "move_by_text": N_("Move asked by text"),
    "move_in_portal": N_("Move asked in the portal"),
    "confirmed": N_("Confirmed"),
    "dismissed": N_("Dismissed"),
    "awaiting": N_("Awaiting review"),
}
# What each table's rows and its total column are called.
ROW_HEADINGS = {
    "adherence_by_visit": N_("Visit"),
    "adherence_by_year": N_("Year since infusion"),
    "contact": N_("Visits"),
    "retention": N_("Infused in"),
    "texts": N_("Period"),
    "answers": N_("Period"),
    "opt_outs": N_("Period"),
    "reports": N_("Report"),
}
TOTAL_HEADINGS = {
    "adherence_by_visit": N_("Due"),
    "adherence_by_year": N_("Due"),
    "contact": N_("Missed"),
    "retention": N_("Patients"),
    "texts": N_("Sent"),
    "answers": N_("Answers"),
    "opt_outs": N_("Stopped"),
    "reports": N_("Reports"),
}
# The chart of each table: the column whose share of the row's total is drawn.
CHART_COLUMN = {
    "adherence_by_visit": "in_window",
    "adherence_by_year": "in_window",
    "texts": "delivered",
}


@dataclass(frozen=True)
class Filters:
    """The filters as asked (ids and codes), checked against what the viewer may see."""

    state: int | None = None
    therapy: int | None = None
    center: int | None = None
    cohort: str | None = None
    period: str = "all"
    as_of: date | None = None

    def query(self, **extra: str) -> str:
        values = {
            "state": self.state,
            "therapy": self.therapy,
            "center": self.center,
            "cohort": self.cohort,
            "period": None if self.period == "all" else self.period,
            "as_of": self.as_of.isoformat() if self.as_of else None,
        }
        pairs = [(key, str(value)) for key, value in values.items() if value is not None]
        return urlencode(pairs + list(extra.items()))


@dataclass(frozen=True)
class Choices:
    states: list[State]
    therapies: list[Therapy]
    centers: list[TreatmentCenter]
    cohorts: list[str]
    periods: list[str]


@dataclass(frozen=True)
class FilterText:
    """The filters as the query string gives them (ids and codes only, never a name)."""

    state: str
    therapy: str
    center: str
    cohort: str
    period: str
    as_of: str


def _filter_text(
    state: Text = "",
    therapy: Text = "",
    center: Text = "",
    cohort: Text = "",
    period: Text = "",
    as_of: Text = "",
) -> FilterText:
    return FilterText(state, therapy, center, cohort, period, as_of)


AskedFilters = Annotated[FilterText, Depends(_filter_text)]


def _filters(
    session: Session, app: AppContext, user: User, asked: FilterText
) -> tuple[Filters, Selection, Choices]:
    """The filters of the request as a selection of what the viewer may see. A state or
    center outside the viewer's states answers 404 (as if it did not exist); anything
    else not understood is left out."""
    scope = report_state_ids(user)
    states = list_states(session, state_ids=set(scope) if scope is not None else None)
    centers = list_centers(session, state_ids=set(scope) if scope is not None else None)
    therapies = list_therapies(session)
    today = app.clock.now().date()
    choices = Choices(states, therapies, centers, cohort_choices(today), period_choices(today))
    state_id = parse_id(asked.state) if asked.state else None
    if asked.state and (state_id is None or state_id not in {s.id for s in states}):
        raise PageNotFound()
    center_id = parse_id(asked.center) if asked.center else None
    if asked.center and (center_id is None or center_id not in {c.id for c in centers}):
        raise PageNotFound()
    therapy_id = parse_id(asked.therapy) if asked.therapy else None
    if therapy_id not in {t.id for t in therapies}:
        therapy_id = None
    chosen_cohort = asked.cohort if asked.cohort in (*choices.cohorts, NOT_INFUSED) else None
    chosen_period = Period.parse(asked.period) if asked.period in choices.periods else None
    day = parse_day_or_none(asked.as_of) if asked.as_of else None
    if day is not None and day >= today:
        day = None
    filters = Filters(
        state=state_id,
        therapy=therapy_id,
        center=center_id,
        cohort=chosen_cohort,
        period=chosen_period.key if chosen_period else "all",
        as_of=day,
    )
    selection = Selection(
        state_ids=scope,
        state_id=state_id,
        therapy_id=therapy_id,
        center_id=center_id,
        cohort=chosen_cohort,
        period=chosen_period or Period("all", None, None),
    )
    return filters, selection, choices


def _row_labels(report: ProgramReport, language: str) -> dict[str, dict[str, str]]:
    protocols = shipped_protocols()
    visits: dict[str, str] = {}
    for versions in protocols.versions.values():
        for protocol in versions.values():
            for visit in protocol.visits:
                visits.setdefault(visit.key, visit.label.text(language))
    from portal.words import word

    labels: dict[str, dict[str, str]] = {}
    for key, table in report.tables.items():
        rows: dict[str, str] = {}
        for row in table.rows:
            match key:
                case "adherence_by_visit":
                    rows[row] = visits.get(row, row)
                case "adherence_by_year":
                    rows[row] = _("Year %(number)s") % {"number": row}
                case "retention":
                    rows[row] = _("Not infused yet") if row == NOT_INFUSED else row
                case "reports":
                    rows[row] = word("report_kind", row)
                case "contact":
                    rows[row] = _("Missed visits")
                case _:
                    rows[row] = row
        labels[key] = rows
    return labels


def _column_labels() -> dict[str, str]:
    from portal.words import word

    labels = {key: _(text) for key, text in COLUMNS.items()}
    for status in ("active", "enrolled", "lost_to_follow_up", "withdrawn", "deceased"):
        labels[status] = word("patient_status", status)
    for how in ("sms_keyword", "portal", "coordinator", "provider_21610"):
        labels[f"how:{how}"] = word("consent_how", how)
    return labels


def column_label(labels: dict[str, str], table: str, column: str) -> str:
    if table == "opt_outs":
        return labels.get(f"how:{column}", column)
    return labels.get(column, column)


def _report(
    request: Request,
    session: Session,
    app: AppContext,
    user: User,
    asked: FilterText,
    *,
    action: str,
    detail: dict[str, Any] | None = None,
) -> tuple[Filters, Choices, ProgramReport]:
    filters, selection, choices = _filters(session, app, user, asked)
    report = program_dashboard(
        session,
        clock=app.clock,
        selection=selection,
        as_of_day=filters.as_of,
        protocols=shipped_protocols(),
    )
    record_event(
        session,
        clock=app.clock,
        actor=actor_for(request, user),
        action=action,
        target="reports:program",
        detail={"filters": filters.query(), **(detail or {})},
    )
    return filters, choices, report


def _charts(report: ProgramReport, labels: dict[str, dict[str, str]]) -> dict[str, Any]:
    from reporting.program_charts import share_chart

    charts: dict[str, Any] = {}
    for key, column in CHART_COLUMN.items():
        table = report.tables[key]
        if table.withheld or table.rows_withheld or table.empty:
            continue
        charts[key] = share_chart(
            chart_id=f"chart-{key}",
            title=_(TITLES[key]),
            description=_(
                "The share of each row's total that is “%(column)s”; rows whose counts are "
                "hidden have no bar. The table below gives every figure."
            )
            % {"column": _(COLUMNS[column])},
            table=table,
            column=column,
            row_labels=labels[key],
            hidden_text=_("not shown"),
        )
    return charts


def _page_context(
    user: User, filters: Filters, choices: Choices, report: ProgramReport
) -> dict[str, Any]:
    language = i18n.current_language().value
    labels = _row_labels(report, language)
    return {
        "report": report,
        "tables": [report.tables[key] for key in TABLES],
        "filters": filters,
        "choices": choices,
        "row_labels": labels,
        "column_labels": _column_labels(),
        "column_label": column_label,
        "titles": TITLES,
        "descriptions": DESCRIPTIONS,
        "row_headings": ROW_HEADINGS,
        "total_headings": TOTAL_HEADINGS,
        "charts": _charts(report, labels),
        "may_drill": role_allows(user, Permission.RECORD_VIEW),
    }


@router.get("/reports/program", name="reports_program")
def reports_program(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Viewer,
    asked: AskedFilters,
) -> Response:
    filters, choices, report = _report(
        request,
        session,
        context,
        user,
        asked,
        action="reports.program",
    )
    return render(
        request,
        "portal/reports_program.html",
        _page_context(user, filters, choices, report),
        block="program",
    )


@router.get("/reports/program.csv", name="reports_program_csv")
def reports_program_csv(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Viewer,
    asked: AskedFilters,
    table: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    """One table's figures as the page shows them (suppressed), one per line."""
    if table not in TABLES:
        raise PageNotFound()
    _unused, _choices, report = _report(
        request,
        session,
        context,
        user,
        asked,
        action="reports.program_export",
        detail={"table": table},
    )
    day = report.as_of.date().isoformat()
    return attachment(table_csv(report, table), filename=f"program-{table}-{day}.csv")


@router.get("/reports/program/measure-report.json", name="reports_program_fhir")
def reports_program_fhir(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Viewer,
    asked: AskedFilters,
) -> Response:
    """The program figures as a FHIR R4 summary MeasureReport (suppressed counts masked)."""
    _unused, _choices, report = _report(
        request,
        session,
        context,
        user,
        asked,
        action="reports.program_export",
        detail={"table": "measure_report"},
    )
    return JSONResponse(
        program_measure_report(report, visit_years=visit_order(shipped_protocols())),
        media_type="application/fhir+json",
    )


@router.get("/reports/program/patients", name="reports_program_patients")
def reports_program_patients(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Viewer,
    asked: AskedFilters,
    table: Annotated[str, Query(max_length=32)] = "",
    row: Annotated[str, Query(max_length=32)] = "",
    column: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    """The patients behind one figure: a coordinator's own patients, audited; anyone else
    is told they have no access to patients."""
    protocols = shipped_protocols()
    figure = behind_of(table, row or None, column or None, protocols=protocols)
    if figure is None:
        raise PageNotFound()
    behind, narrow = figure
    filters, selection, _choices = _filters(session, context, user, asked)
    actor = actor_for(request, user)
    as_of = dashboard_as_of(session, clock=context.clock, as_of_day=filters.as_of)
    target = f"reports:program:{table}"
    asked_for = {"filters": filters.query(), "row": row, "column": column}
    if not role_allows(user, Permission.RECORD_VIEW):
        record_event(
            session,
            clock=context.clock,
            actor=actor,
            action="reports.program_patients",
            outcome=AuditOutcome.DENIED,
            target=target,
            detail=asked_for,
        )
        return render(
            request,
            "portal/reports_program_patients.html",
            {"refused": True, "filters": filters, "table": table},
            status_code=403,
        )
    try:
        found = patients_behind(
            session,
            clock=context.clock,
            viewer=user,
            selection=selection,
            as_of=as_of,
            behind=behind,
            narrow=narrow,
        )
    except NoPatientAccess:  # a role with record access but no patients of its own
        found = None
    patients = found.patients if found is not None else ()
    record_event(
        session,
        clock=context.clock,
        actor=actor,
        action="reports.program_patients",
        target=target,
        detail={**asked_for, "patient_ids": [patient.id for patient in patients]},
    )
    labels = _column_labels()
    return render(
        request,
        "portal/reports_program_patients.html",
        {
            "refused": False,
            "patients": patients,
            "filters": filters,
            "table": table,
            "title": _(TITLES.get(table, table)),
            "column": column_label(labels, table, column) if column else "",
            "row": row,
            "as_of": as_of,
        },
    )


def as_of_text(at: datetime) -> str:
    return at.isoformat()
