"""`cgt-access demo seed` gives the outcome reports living figures from the first minute
(issue 12, item 8): infused cohorts with results and claims, snapshots taken, a rebate
statement with an amount, and enough decided results that counts show above the hidden
range."""

from __future__ import annotations

from sqlalchemy import func, select

from core.clock import FrozenClock
from core.models import Patient
from portal.dev.demo import seed_demo
from reporting.agreements import shipped_agreements
from reporting.models import ClaimFile, ReportSnapshot
from reporting.outcomes import AsOf, Status, outcome_cube
from reporting.rebates import Quarter, statement_counts
from tests.conftest import Database, make_settings


def test_the_demo_seeds_infused_cohorts_whose_figures_show(
    empty_db: Database, clock: FrozenClock
) -> None:
    assert seed_demo(make_settings(empty_db.url, demo_mode=True), clock=clock)
    with empty_db.factory() as session:
        patients = session.scalar(select(func.count()).select_from(Patient))
        assert patients is not None and patients > 400
        for agreement in shipped_agreements().current():
            cube = outcome_cube(session, agreement=agreement, as_of=AsOf(clock.now()))
            for measure in cube.measures:
                decided = sum(
                    cell.count
                    for cell in measure.cells
                    if cell.status in (Status.MET, Status.NOT_MET)
                )
                # Enough decided results that a state's figures are not all hidden.
                assert decided > 20, (agreement.key, measure.measure_key)
        kinds = [snapshot.report for snapshot in session.scalars(select(ReportSnapshot))]
        assert kinds.count("outcomes:casgevy-2025") == 2  # the last quarter's, tonight's
        assert "program" in kinds
        cohort_files = session.scalar(
            select(func.count())
            .select_from(ClaimFile)
            .where(ClaimFile.filename.like("%-cohort-claims-%"))
        )
        assert cohort_files is not None and cohort_files > 4
        maryland = session.scalar(select(Patient.state_id).where(Patient.medicaid_id.like("MD%")))
        assert maryland is not None
        casgevy = shipped_agreements().get("casgevy-2025")
        assert casgevy is not None
        last_quarter = Quarter.containing(clock.now().date()).previous()
        owed = statement_counts(
            session, clock=clock, agreement=casgevy, state_id=maryland, quarter=last_quarter
        )
        assert owed.amount > 0
