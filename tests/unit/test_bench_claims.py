"""`cgt-access bench --only reporting.claims` prints its figures (a small file here)."""

from __future__ import annotations

import json

from portal.dev.bench import run_benchmarks
from portal.dev.bench_reporting_claims import CLAIMS_FIGURES


def test_claims_figures_are_measured_on_the_asked_file() -> None:
    lines = list(run_benchmarks(only="reporting.claims", patients=0, requests=1, claim_rows=3_000))
    figures = {item["name"]: item for item in map(json.loads, lines)}
    assert list(figures) == list(CLAIMS_FIGURES)
    rate = figures["reporting.claims_import_rows_per_s"]
    assert rate["unit"] == "rows/s" and rate["value"] > 0
    assert rate["rows"] == 3_000
    # The file's rows: loaded, or for an ID nobody holds (one claim in 33), or voids.
    assert rate["loaded"] + rate["unmatched"] + rate["voids"] <= 3_000
    assert rate["unmatched"] > 0 and rate["loaded"] > 2_500
    assert figures["reporting.claims_import_peak_mib"]["value"] > 0
    assert figures["reporting.claims_reimport_ms"]["unit"] == "ms"
