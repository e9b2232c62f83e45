"""`cgt-access bench` prints well-formed figures (small runs: a few hundred patients)."""

from __future__ import annotations

import json

import pytest

from portal.dev.bench import ratio, run_benchmarks
from portal.dev.bench_dispatch import DISPATCH_FIGURES
from portal.dev.bench_fhir_export import FHIR_EXPORT_FIGURES
from portal.dev.bench_fhir_ingest import FHIR_INGEST_FIGURES
from portal.dev.bench_fhir_search import FHIR_SEARCH_FIGURES

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


def test_dispatch_figures_are_measured_on_the_asked_sizes() -> None:
    """A small run: 300 patients (300 due reminders) and 5,000 future rows for the big tick."""
    lines = list(run_benchmarks(only="dispatch", patients=300, requests=30, future_rows=5_000))

    figures = {item["name"]: item for item in map(json.loads, lines)}
    assert len(figures) == len(lines) == len(DISPATCH_FIGURES)
    assert list(figures) == list(DISPATCH_FIGURES)
    for item in figures.values():
        assert isinstance(item["value"], int | float) and item["value"] > 0

    plan = figures["dispatch.plan_rows_per_s"]
    assert plan["unit"] == "row/s"
    assert plan["patients"] == 300 and plan["caregivers"] == 100
    # Every patient and caregiver has an appointment within 30 days: two reminders each at most.
    assert 400 <= plan["planned"] <= 2 * 400 + plan["visits"]

    sent = figures["dispatch.msgs_per_s"]
    share = figures["dispatch.ratio_bare_client"]
    assert sent["unit"] == "msg/s" and share["unit"] == "ratio"
    assert sent["n"] == share["n"] == 300
    assert share["value"] == round(sent["value"] / share["bare_msgs_per_s"], 3)

    small, large = figures["dispatch.tick_1k_ms"], figures["dispatch.tick_1m_ms"]
    assert small["unit"] == large["unit"] == "ms"
    assert (small["future"], large["future"]) == (1_000, 5_000)
    assert large["ratio_1k"] == round(large["value"] / small["value"], 3)


def test_fhir_search_figures_are_measured_through_the_route() -> None:
    """A small run: 200 patients with 30 observations each, 20 searches."""
    lines = list(run_benchmarks(only="fhir.search", patients=200, requests=20))

    figures = {item["name"]: item for item in map(json.loads, lines)}
    assert list(figures) == list(FHIR_SEARCH_FIGURES)
    for item in figures.values():
        assert isinstance(item["value"], int | float) and item["value"] > 0
        assert item["patients"] == 200 + 30 and item["observations"] == (200 + 30) * 30
    p95 = figures["fhir.search_p95_ms"]
    assert p95["unit"] == "ms" and p95["n"] == 20
    assert figures["fhir.search_p50_ms"]["value"] <= p95["value"]
    assert figures["fhir.search_p95_ratio_healthz"]["unit"] == "ratio"
    assert figures["fhir.search_next_page_p95_ms"]["n"] >= 10


def test_export_figures_are_measured_on_the_asked_size() -> None:
    """A small run: 5,000 observations, written in files of 500 by a process of its own."""
    lines = list(
        run_benchmarks(only="fhir.export", patients=1, requests=1, export_observations=5_000)
    )

    figures = {item["name"]: item for item in map(json.loads, lines)}
    assert list(figures) == list(FHIR_EXPORT_FIGURES)
    rate, memory = figures["fhir.export_resources_per_s"], figures["fhir.export_peak_rss_mb"]
    assert rate["unit"] == "resource/s" and memory["unit"] == "MB"
    assert rate["n"] == memory["n"] == 5_000 and rate["files"] == 10
    # `s` is shown to the millisecond: on a fast machine (0.25 s) that rounding alone moves
    # the rate by 0.2%.
    assert rate["value"] == pytest.approx(5_000 / rate["s"], rel=1e-3 + 0.0005 / rate["s"])
    assert rate["per_cpu_s"] >= rate["value"] * 0.9  # CPU time is at most wall time (one thread)
    # The export process's own memory: more than an interpreter's, less than the goal.
    assert 20 < memory["ready_mb"] <= memory["exporting_mb"] <= memory["value"] < 300


def test_fhir_ingest_figures_are_measured_on_the_asked_load() -> None:
    """A small run: 30 patients' worth (300 resources) through POST /fhir, and their bare
    parse; the load is stored once although it is sent twice."""
    lines = list(run_benchmarks(only="fhir.ingest", patients=0, requests=1, fhir_resources=300))

    figures = {item["name"]: item for item in map(json.loads, lines)}
    assert list(figures) == list(FHIR_INGEST_FIGURES)
    rate, share = figures["fhir.ingest_resources_per_s"], figures["fhir.ingest_ratio_bare_parse"]
    assert rate["unit"] == "resource/s" and share["unit"] == "ratio"
    assert rate["n"] == share["n"] == 300 and rate["patients"] == 30
    assert rate["value"] > 0 and rate["one_bundle_resources_per_s"] > 0
    assert share["value"] == round(rate["value"] / rate["bare_parse_resources_per_s"], 3)
    # The database's own time, replayed, bounds the ratio: the platform cannot beat it.
    assert rate["database_replay_s"] > 0
    assert share["value"] < share["ratio_ceiling"] < 1
