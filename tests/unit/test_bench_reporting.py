"""`cgt-access bench --only reporting` prints every figure of issue 12, one JSON line each
(small worlds here: the full sizes are `make bench`'s)."""

from __future__ import annotations

import json

from portal.dev.bench import FIGURES, run_benchmarks
from portal.dev.bench_reporting_claims import CLAIMS_FIGURES
from portal.dev.bench_reporting_dashboard import DASHBOARD_FIGURES
from portal.dev.bench_reporting_outcomes import OUTCOME_FIGURES

# The figures the issue asks for, by name.
ISSUE_FIGURES = {
    "reporting.outcomes_100k_s",
    "reporting.outcomes_100k_pg_s",
    "reporting.outcomes_ratio_count",
    "reporting.claims_import_rows_per_s",
    "reporting.dashboard_p95_ms",
}


def test_the_runner_knows_every_figure_of_the_issue() -> None:
    reporting = [name for name in FIGURES if name.startswith("reporting")]
    assert reporting == [*OUTCOME_FIGURES, *CLAIMS_FIGURES, *DASHBOARD_FIGURES]
    assert set(reporting) >= ISSUE_FIGURES


def test_the_outcome_figures_are_measured_on_the_asked_world() -> None:
    lines = list(
        run_benchmarks(only="reporting.outcomes", patients=0, requests=1, outcome_patients=200)
    )

    figures = {item["name"]: item for item in map(json.loads, lines)}
    assert sorted(figures) == sorted(OUTCOME_FIGURES)
    sqlite = figures["reporting.outcomes_100k_s"]
    assert sqlite["unit"] == "s" and sqlite["value"] > 0
    assert (sqlite["patients"], sqlite["observations"], sqlite["claim_lines"]) == (
        200,
        6_000,
        2_000,
    )
    assert figures["reporting.outcomes_ratio_count"]["value"] > 0
    postgresql = figures["reporting.outcomes_100k_pg_s"]
    # Where the PostgreSQL binaries are absent the figure says so, with no value.
    assert (postgresql["value"] is None) == ("skipped" in postgresql)
    assert postgresql["value"] is None or postgresql["value"] > 0
