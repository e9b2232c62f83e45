"""`pro.page_p95_ms` and `pro.save_p95_ms` are measured through the real questionnaire
pages for the logged-in demo patient, in the portal world with a check-in response for every
other patient (a small run here: 50 bulk patients, a few requests)."""

from __future__ import annotations

import json

from portal.dev.bench import FIGURES, run_benchmarks
from portal.dev.bench_pro import PRO_FIGURES


def test_the_questionnaire_figures_are_json_lines_measured_in_the_portal_world() -> None:
    lines = list(run_benchmarks(only="pro", patients=50, requests=5))

    figures = {item["name"]: item for item in map(json.loads, lines)}
    assert len(figures) == len(lines)
    assert list(figures) == list(PRO_FIGURES) == ["pro.page_p95_ms", "pro.save_p95_ms"]
    for item in figures.values():
        assert item["unit"] == "ms"
        assert isinstance(item["value"], int | float) and item["value"] > 0
        assert item["n"] == 5
        assert item["patients"] == 50 + 30  # the bulk patients plus the demo world's
        assert item["responses"] == item["patients"] - 1  # all but the bench patient's own
    assert set(PRO_FIGURES) <= set(FIGURES)  # `cgt-access bench --only pro` runs them
