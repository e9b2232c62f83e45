"""`cgt-access bench` prints well-formed figures (a small run: 200 patients, 30 requests)."""

from __future__ import annotations

import json

from portal.bench import ratio, run_benchmarks

REQUIRED = {
    "portal.healthz_p95_ms",
    "portal.patient_home_p95_ms",
    "portal.patient_home_p95_ratio_healthz",
}


def test_portal_figures_are_json_lines_with_positive_values() -> None:
    lines = list(run_benchmarks(only="portal", patients=200, requests=30))

    figures = {}
    for line in lines:
        assert "\n" not in line
        item = json.loads(line)
        assert isinstance(item, dict)
        assert {"name", "value", "unit"} <= item.keys()
        assert item["name"].startswith("portal.")
        assert isinstance(item["value"], int | float) and not isinstance(item["value"], bool)
        assert item["value"] > 0
        assert item["n"] == 30
        assert item["patients"] == 200 + 30  # the bulk patients plus the demo world's
        figures[item["name"]] = item
    assert len(figures) == len(lines), "a figure was reported twice"
    assert figures.keys() >= REQUIRED

    home = figures["portal.patient_home_p95_ms"]
    healthz = figures["portal.healthz_p95_ms"]
    share = figures["portal.patient_home_p95_ratio_healthz"]
    assert home["unit"] == healthz["unit"] == "ms"
    assert share["unit"] == "ratio"
    assert share["value"] == round(home["value"] / healthz["value"], 3)
    assert share["value"] == ratio(home["value"], healthz["value"])


def test_an_unknown_prefix_yields_nothing() -> None:
    assert list(run_benchmarks(only="no-such-figure", patients=200, requests=30)) == []
