"""Questionnaires and travel support (`/reports/support`): per state and month, the
questionnaires due and completed, the travel support requests and where they stand, their
spend, and the visits of patients who had support arranged; for analysts and coordinators
(their states) and admins (every state), filtered by state and by a span of months (ids and
months in the query, never names). Every count is suppressed
(`reporting.patient_support_report`); each table has its CSV."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from coordination.followup.protocol import shipped_protocols
from core.audit.service import record_event
from core.identity.access import Permission, report_state_ids
from core.identity.models import User
from core.ids import parse_id
from core.models import State
from core.reference import list_states
from core.text import N_
from portal import i18n
from portal.context import AppContext
from portal.deps import ContextDep, PageNotFound, SessionDep, actor_for, require
from portal.routes.pages import page_router
from portal.web import attachment, render
from reporting.patient_support import Months, month_key, months_back
from reporting.patient_support_report import (
    TABLES,
    SupportReport,
    load_support_report,
    table_csv,
)
from reporting.program_charts import share_chart

router = page_router()
_ = i18n.gettext
Viewer = Annotated[User, Depends(require(Permission.REPORTS_VIEW))]
Text = Annotated[str, Query(max_length=20)]

# The longest span of months one page shows (a row per state and month).
MAX_MONTHS = 36
DEFAULT_MONTHS = 12

TITLES = {
    "questionnaires": N_("Questionnaires due and completed"),
    "requests": N_("Travel support requests"),
    "visits": N_("Visits of patients with travel support"),
}
DESCRIPTIONS = {
    "questionnaires": N_(
        "A questionnaire asked at a visit is due in the month the visit's window closes; one "
        "asked before the infusion is due in the month the patient was enrolled. It counts as "
        "completed when the patient (or a caregiver) submitted it for that visit. Cancelled "
        "visits ask nothing, and only questionnaires loaded in the portal count. A window "
        "still open counts as not completed until it is."
    ),
    "requests": N_(
        "Requests for travel, lodging, meals, childcare or an escort, by the month they were "
        "made and where they stand now. An arranged request was approved and booked; "
        "“approved” counts those not booked yet. The spend is what the arranged requests' "
        "bookings cost, in dollars, and is hidden wherever their count is."
    ),
    "visits": N_(
        "Visits for which travel support was arranged, by the month of the visit (the day it "
        "happened, else its appointment) and whether the patient came."
    ),
}
COLUMNS = {
    "completed": N_("Completed"),
    "not_completed": N_("Not completed"),
    "requested": N_("Waiting for a decision"),
    "approved": N_("Approved, not booked yet"),
    "arranged": N_("Arranged"),
    "declined": N_("Declined"),
    "attended": N_("Attended"),
    "not_attended": N_("Missed or cancelled"),
    "not_yet": N_("Not held yet"),
}
TOTAL_HEADINGS = {
    "questionnaires": N_("Due"),
    "requests": N_("Requests"),
    "visits": N_("Visits"),
}
# The chart of each table: the column whose share of the row's total is drawn.
CHART_COLUMN = {"questionnaires": "completed", "visits": "attended"}


class BadFilter(ValueError):
    """A filter that cannot be read; its message is shown to the person."""


@dataclass(frozen=True)
class Filters:
    state: int | None
    months: Months

    def query(self, **extra: str) -> str:
        pairs = [("from", month_key(self.months.first)), ("to", month_key(self.months.last))]
        if self.state is not None:
            pairs.insert(0, ("state", str(self.state)))
        return urlencode(pairs + list(extra.items()))


def parse_month(text: str) -> date | None:
    """ "2026-03" as the first day of that month; None for anything else."""
    words = text.strip()
    if len(words) != 7 or words[4] != "-" or not (words[:4] + words[5:]).isdigit():
        return None
    year, month = int(words[:4]), int(words[5:])
    if not (2000 <= year <= 2100 and 1 <= month <= 12):
        return None
    return date(year, month, 1)


def _months(today: date, first_text: str, last_text: str) -> Months:
    default = months_back(today, DEFAULT_MONTHS)
    first = parse_month(first_text) if first_text else default.first
    last = parse_month(last_text) if last_text else default.last
    if first is None or last is None:
        raise BadFilter(_("Give months as year and month, for example 2026-03."))
    if first > last:
        raise BadFilter(_("The first month comes after the last one."))
    if len(Months(first, last).month_keys()) > MAX_MONTHS:
        raise BadFilter(_("Choose at most %(count)s months.") % {"count": MAX_MONTHS})
    return Months(first, last)


def _scope(
    session: Session, user: User, state_text: str
) -> tuple[int | None, frozenset[int] | None, list[State]]:
    """The state asked for (404 when the viewer may not see it) and the states counted."""
    scope = report_state_ids(user)
    states = list_states(session, state_ids=set(scope) if scope is not None else None)
    if not state_text:
        return None, scope, states
    state_id = parse_id(state_text)
    if state_id is None or state_id not in {state.id for state in states}:
        raise PageNotFound()
    return state_id, frozenset({state_id}), states


def _labels(report: SupportReport, codes: dict[int, str]) -> dict[tuple[int, str], str]:
    labels = {}
    for table in report.tables.values():
        for state, month in table.rows:
            labels[state, month] = f"{codes.get(state, state)} {month}"
    return labels


def _charts(report: SupportReport, labels: dict[tuple[int, str], str]) -> dict[str, Any]:
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
            table=table.as_table(labels),
            column=column,
            row_labels={},
            hidden_text=_("not shown"),
        )
    return charts


def _dollars(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


def _answer(
    request: Request,
    session: Session,
    context: AppContext,
    user: User,
    *,
    state: str,
    first: str,
    last: str,
    action: str,
    table: str | None = None,
) -> tuple[Filters, list[State], SupportReport, dict[int, str]] | Response:
    state_id, state_ids, states = _scope(session, user, state)
    today = context.clock.now().date()
    try:
        months = _months(today, first, last)
    except BadFilter as problem:
        return render(
            request,
            "portal/reports_support.html",
            {"error": str(problem), "states": states, "asked": (state, first, last)},
            block="support",
            status_code=400,
        )
    filters = Filters(state_id, months)
    report, codes = load_support_report(
        session,
        clock=context.clock,
        library=shipped_protocols(),
        months=months,
        state_ids=state_ids,
    )
    detail: dict[str, Any] = {"filters": filters.query()}
    if table is not None:
        detail["table"] = table
    record_event(
        session,
        clock=context.clock,
        actor=actor_for(request, user),
        action=action,
        target="reports:support",
        detail=detail,
    )
    return filters, states, report, codes


@router.get("/reports/support", name="reports_support")
def reports_support(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Viewer,
    state: Text = "",
    first: Annotated[str, Query(alias="from", max_length=20)] = "",
    last: Annotated[str, Query(alias="to", max_length=20)] = "",
) -> Response:
    answer = _answer(
        request,
        session,
        context,
        user,
        state=state,
        first=first,
        last=last,
        action="reports.support",
    )
    if isinstance(answer, Response):
        return answer
    filters, states, report, codes = answer
    labels = _labels(report, codes)
    return render(
        request,
        "portal/reports_support.html",
        {
            "error": None,
            "report": report,
            "tables": [report.tables[key] for key in TABLES],
            "filters": filters,
            "states": states,
            "asked": (
                str(filters.state or ""),
                month_key(filters.months.first),
                month_key(filters.months.last),
            ),
            "labels": labels,
            "columns": {key: _(text) for key, text in COLUMNS.items()},
            "titles": TITLES,
            "descriptions": DESCRIPTIONS,
            "total_headings": TOTAL_HEADINGS,
            "charts": _charts(report, labels),
            "dollars": _dollars,
        },
        block="support",
    )


@router.get("/reports/support.csv", name="reports_support_csv")
def reports_support_csv(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Viewer,
    table: Annotated[str, Query(max_length=32)] = "",
    state: Text = "",
    first: Annotated[str, Query(alias="from", max_length=20)] = "",
    last: Annotated[str, Query(alias="to", max_length=20)] = "",
) -> Response:
    """One table's figures as the page shows them (suppressed), one per line."""
    if table not in TABLES:
        raise PageNotFound()
    answer = _answer(
        request,
        session,
        context,
        user,
        state=state,
        first=first,
        last=last,
        action="reports.support_export",
        table=table,
    )
    if isinstance(answer, Response):
        return answer
    _filters, _states, report, codes = answer
    day = report.as_of.date().isoformat()
    return attachment(table_csv(report, table, codes), filename=f"support-{table}-{day}.csv")
