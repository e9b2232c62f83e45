"""`reporting.dashboard_p95_ms` is measured through the real page, from the snapshot, on
the asked size (a small run here: 300 patients)."""

from __future__ import annotations

import json

from portal.dev.bench import run_benchmarks


def test_the_dashboard_figure_is_one_json_line_from_the_snapshot() -> None:
    lines = list(
        run_benchmarks(only="reporting.dashboard", patients=0, requests=1, dashboard_patients=300)
    )

    assert len(lines) == 1
    item = json.loads(lines[0])
    assert item["name"] == "reporting.dashboard_p95_ms"
    assert item["unit"] == "ms" and item["value"] > 0
    assert item["patients"] == 300 and item["served_from"] == "snapshot"
    assert item["visits"] > 300 * 10  # every protocol visit of every patient
    assert item["snapshot_s"] > 0 and item["live_s"] > 0


def test_the_outcome_dashboard_figure_is_one_json_line_from_the_nightly_snapshots() -> None:
    lines = list(
        run_benchmarks(
            only="reporting.outcome_dashboard", patients=0, requests=1, dashboard_patients=300
        )
    )

    assert len(lines) == 1
    item = json.loads(lines[0])
    assert item["name"] == "reporting.outcome_dashboard_p95_ms"
    assert item["unit"] == "ms" and item["value"] > 0
    assert item["patients"] == 300 and item["served_from"] == "snapshot"
    assert item["agreements"] >= 2  # every agreement's snapshot, as the nightly job takes
    assert item["snapshot_s"] > 0 and item["live_s"] > 0
