"""Rebate statements: per state, manufacturer (agreement) and calendar quarter, what is owed
and its per-patient basis, as a printable page and a CSV (reporting/rebates.py).

The per-patient basis (Medicaid ID, infusion date, measure, day decided, amount) is shown
only to staff who may see every patient on the statement (a coordinator of the state;
each patient's line read is audited); everyone else with the reports (analysts, admins,
a coordinator without access to some patient on it) sees the statement's counts by
measure, suppressed like every figure, with amounts only where the count is shown."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.audit.service import record_event
from core.identity.access import Permission, report_state_ids, role_allows, scope_patients
from core.identity.models import User
from core.ids import parse_id
from core.models import Patient, State
from portal import i18n
from portal.deps import ContextDep, PageNotFound, SessionDep, actor_for, require
from portal.routes.pages import page_router
from portal.web import attachment, render
from reporting.agreements import Agreement, shipped_agreements
from reporting.outcome_report import ILLUSTRATIVE_NOTE
from reporting.rebates import (
    LineKind,
    Quarter,
    StatementLine,
    published_statement,
    published_statement_csv,
    quarters_of,
    statement_counts,
    statement_csv,
    statement_lines,
)

router = page_router()
Reader = Annotated[User, Depends(require(Permission.REPORTS_VIEW))]
Text = Annotated[str, Query(max_length=48)]


def _states(session: Session, user: User, agreement: Agreement) -> list[State]:
    scope = report_state_ids(user)
    query = select(State).order_by(State.name)
    if scope is not None:
        query = query.where(State.id.in_(scope or {-1}))
    return [state for state in session.scalars(query) if agreement.covers_state(state.code)]


def _may_see_every_patient(session: Session, user: User, lines: list[StatementLine]) -> bool:
    """True when `user` may see each patient on the statement (today's record)."""
    if not role_allows(user, Permission.OUTCOMES_PATIENTS):
        return False
    wanted = {line.patient_id for line in lines}
    if not wanted:
        return True
    visible = session.scalar(
        select(func.count()).select_from(
            scope_patients(select(Patient), user).where(Patient.id.in_(wanted)).subquery()
        )
    )
    return visible == len(wanted)


def _statement(
    request: Request,
    session: Session,
    context: ContextDep,
    user: User,
    *,
    agreement_key: str,
    state: str,
    quarter: str,
    export: bool,
) -> dict[str, Any]:
    library = shipped_agreements()
    agreements = library.current()
    agreement = library.get(agreement_key) if agreement_key else agreements[0]
    if agreement is None:
        raise PageNotFound()
    states = _states(session, user, agreement)
    quarters = quarters_of(agreement, clock=context.clock)
    chosen_state = None
    if state:
        state_id = parse_id(state)
        chosen_state = next((found for found in states if found.id == state_id), None)
        if chosen_state is None:
            raise PageNotFound()  # another state's statement is not this person's to see
    elif states:
        chosen_state = states[0]
    chosen_quarter = Quarter.parse(quarter) if quarter else None
    if chosen_quarter is None or chosen_quarter not in quarters:
        # The last whole quarter by default (the current one is still running).
        chosen_quarter = quarters[1] if len(quarters) > 1 else quarters[0]
    values: dict[str, Any] = {
        "agreement": agreement,
        "agreements": agreements,
        "states": states,
        "quarters": quarters,
        "state": chosen_state,
        "quarter": chosen_quarter,
        "lang": i18n.current_language().value,
        "counts": None,
        "lines": None,
        "published": None,
        "kinds": list(LineKind),
    }
    if chosen_state is None:
        return values
    counts = statement_counts(
        session,
        clock=context.clock,
        agreement=agreement,
        state_id=chosen_state.id,
        quarter=chosen_quarter,
    )
    values["counts"] = counts
    lines = (
        statement_lines(
            session,
            clock=context.clock,
            agreement=agreement,
            state_id=chosen_state.id,
            quarter=chosen_quarter,
        )
        if role_allows(user, Permission.OUTCOMES_PATIENTS)
        else []
    )
    actor = actor_for(request, user)
    target = f"statement:{agreement.key}/{chosen_state.code}/{chosen_quarter}"
    if role_allows(user, Permission.OUTCOMES_PATIENTS) and _may_see_every_patient(
        session, user, lines
    ):
        values["lines"] = lines
        for patient_id in sorted({line.patient_id for line in lines}):
            record_event(
                session,
                clock=context.clock,
                actor=actor,
                action="rebates.statement_export" if export else "rebates.statement",
                patient_id=patient_id,
                target=target,
            )
    else:
        values["published"] = published_statement(counts)
        values["outside_access"] = bool(lines)
    record_event(
        session,
        clock=context.clock,
        actor=actor,
        action="rebates.export" if export else "rebates.view",
        target=target,
        detail={"patient_lines": values["lines"] is not None},
    )
    return values


@router.get("/reports/rebates", name="rebate_statement")
def rebate_statement(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Reader,
    agreement: Text = "",
    state: Text = "",
    quarter: Text = "",
) -> Response:
    """The statement of one state, agreement and quarter (a form chooses them)."""
    values = _statement(
        request,
        session,
        context,
        user,
        agreement_key=agreement,
        state=state,
        quarter=quarter,
        export=False,
    )
    return render(request, "portal/rebates.html", values, block="statement")


@router.get("/reports/rebates/statement.csv", name="rebate_statement_csv")
def rebate_statement_csv(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    user: Reader,
    agreement: Text = "",
    state: Text = "",
    quarter: Text = "",
) -> Response:
    """The statement as a CSV: patient lines for staff who may see them all, else the
    published counts."""
    values = _statement(
        request,
        session,
        context,
        user,
        agreement_key=agreement,
        state=state,
        quarter=quarter,
        export=True,
    )
    chosen_state: State | None = values["state"]
    if chosen_state is None:
        raise PageNotFound()
    note = i18n.gettext(ILLUSTRATIVE_NOTE)
    if values["lines"] is not None:
        text = statement_csv(
            values["counts"], values["lines"], state_code=chosen_state.code, note=note
        )
    else:
        text = published_statement_csv(values["published"], state_code=chosen_state.code, note=note)
    filename = f"rebates-{values['agreement'].key}-{chosen_state.code}-{values['quarter']}.csv"
    return attachment(text, filename=filename)
