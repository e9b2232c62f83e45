"""`cgt-access bench --only pro`: the questionnaire page figures, on a small world."""

from __future__ import annotations

import json

from portal.dev.bench import run_benchmarks
from portal.dev.bench_pro import PRO_FIGURES


def test_pro_figures_are_measured_on_a_world_full_of_responses() -> None:
    lines = list(run_benchmarks(only="pro", patients=100, requests=20))
    figures = {item["name"]: item for item in map(json.loads, lines)}
    assert list(figures) == list(PRO_FIGURES)
    page, share = figures["pro.page_p95_ms"], figures["pro.page_p95_ratio_healthz"]
    assert page["unit"] == "ms" and page["value"] > 0
    assert share["unit"] == "ratio" and share["value"] > 0
    assert page["n"] == 20 and page["patients"] == 100 + 30
    # A sent response and a draft for every other patient, and the bench patient's draft.
    assert page["responses"] == 2 * (page["patients"] - 1) + 1
