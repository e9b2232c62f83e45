"""Follow-up protocols: the shipped (illustrative) protocols load and say what the issue
says they say, and a broken file is refused with its name, the line and the problem."""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest

from coordination.followup.protocol import (
    PROTOCOL_DIR,
    Assessment,
    Protocol,
    ProtocolError,
    ProtocolLibrary,
    load_protocols,
    shipped_protocols,
)

THERAPIES = ("casgevy", "lyfgenia")
YEAR = 365
SIX_MONTHS = 183  # half of 365, rounded up


@pytest.fixture(scope="module")
def library() -> ProtocolLibrary:
    return load_protocols()


def _protocol(library: ProtocolLibrary, therapy: str) -> Protocol:
    protocol = library.current(therapy)
    assert protocol is not None, f"no shipped protocol for {therapy}"
    return protocol


def _offsets_with(protocol: Protocol, assessment: Assessment) -> list[int]:
    return [visit.offset_days for visit in protocol.visits if assessment in visit.assessments]


# --- the shipped protocols ---------------------------------------------------------------


def test_the_shipped_protocols_load(library: ProtocolLibrary) -> None:
    assert set(library.versions) == set(THERAPIES)
    for therapy in THERAPIES:
        protocol = _protocol(library, therapy)
        assert protocol.therapy == therapy
        assert library.get(therapy, protocol.version) is protocol
        assert protocol.title.en and protocol.title.es
        for visit in protocol.visits:
            assert visit.label.text("en") == visit.label.en
            assert visit.label.text("es") == visit.label.es
            assert visit.label.en != visit.label.es, visit.key
    # The cached copy the app uses holds the same protocols.
    assert shipped_protocols().versions == library.versions


def test_the_shipped_files_sit_in_the_protocol_folder() -> None:
    assert {path.stem for path in PROTOCOL_DIR.glob("*.yaml")} >= set(THERAPIES)


@pytest.mark.parametrize("therapy", THERAPIES)
def test_early_visits_at_day_30_and_100_then_day_180_or_month_6(
    library: ProtocolLibrary, therapy: str
) -> None:
    offsets = [visit.offset_days for visit in _protocol(library, therapy).visits]
    assert offsets[:2] == [30, 100]
    # Day 180 (Casgevy) or month 6 (Lyfgenia, day 182).
    assert offsets[2] in (180, 182)


@pytest.mark.parametrize("therapy", THERAPIES)
def test_months_12_18_24_then_yearly_to_year_15(library: ProtocolLibrary, therapy: str) -> None:
    protocol = _protocol(library, therapy)
    by_key = {visit.key: visit.offset_days for visit in protocol.visits}
    assert by_key["month-12"] == YEAR
    assert by_key["month-18"] in (547, 548)
    assert by_key["month-24"] == 2 * YEAR
    for year in range(3, 16):
        assert by_key[f"year-{year}"] == year * YEAR, f"year {year}"
    # Year 15 is the last visit: 15 years of follow-up, not more.
    assert protocol.visits[-1].key == "year-15"
    assert protocol.visits[-1].offset_days == 15 * YEAR


@pytest.mark.parametrize("therapy", THERAPIES)
def test_patient_reported_outcomes_at_cibmtr_timepoints(
    library: ProtocolLibrary, therapy: str
) -> None:
    offsets = set(_offsets_with(_protocol(library, therapy), Assessment.PRO_QUESTIONNAIRE))
    assert 100 in offsets
    assert offsets & {180, 182}
    for year in range(1, 16):
        assert year * YEAR in offsets, f"no questionnaire at year {year}"


@pytest.mark.parametrize("therapy", THERAPIES)
def test_the_check_in_is_asked_before_infusion_and_at_every_pro_visit(
    library: ProtocolLibrary, therapy: str
) -> None:
    protocol = _protocol(library, therapy)
    check_in = "https://cgt-access.example/fhir/Questionnaire/living-after-gene-therapy"
    assert protocol.before_infusion is not None
    assert protocol.before_infusion.questionnaires == (check_in,)
    for visit in protocol.visits:
        asks = Assessment.PRO_QUESTIONNAIRE in visit.assessments
        assert visit.questionnaires == ((check_in,) if asks else ()), visit.key
    assert protocol.questionnaire_urls() == {check_in}


def test_lyfgenia_has_integration_site_analysis_at_months_6_and_12(
    library: ProtocolLibrary,
) -> None:
    protocol = _protocol(library, "lyfgenia")
    keys = [
        visit.key for visit in protocol.visits if Assessment.INTEGRATION_SITE in visit.assessments
    ]
    assert keys == ["month-6", "month-12"]
    assert _offsets_with(protocol, Assessment.INTEGRATION_SITE) == [182, YEAR]


def test_lyfgenia_counts_blood_at_least_every_six_months_for_15_years(
    library: ProtocolLibrary,
) -> None:
    offsets = _offsets_with(_protocol(library, "lyfgenia"), Assessment.CBC)
    assert offsets[0] <= 30
    gaps = [later - earlier for earlier, later in itertools.pairwise(offsets)]
    assert max(gaps) <= SIX_MONTHS, gaps
    assert offsets[-1] >= 15 * YEAR


def test_casgevy_has_no_integration_site_analysis(library: ProtocolLibrary) -> None:
    # Casgevy is genome-edited, not an integrating vector.
    assert _offsets_with(_protocol(library, "casgevy"), Assessment.INTEGRATION_SITE) == []


@pytest.mark.parametrize("therapy", THERAPIES)
def test_windows_narrow_early_and_widen_later(library: ProtocolLibrary, therapy: str) -> None:
    visits = _protocol(library, therapy).visits
    first, last = visits[0], visits[-1]
    assert first.window_before_days == first.window_after_days == 7
    assert last.window_before_days >= 45
    assert last.window_after_days >= 45
    widths = [visit.window_before_days + visit.window_after_days for visit in visits]
    assert widths == sorted(widths), "a later visit has a narrower window than an earlier one"


@pytest.mark.parametrize("therapy", THERAPIES)
@pytest.mark.parametrize(
    "anchor", [date(2015, 1, 1), date(2024, 2, 29), date(2026, 3, 8), date(2030, 12, 31)]
)
def test_windows_never_overlap(library: ProtocolLibrary, therapy: str, anchor: date) -> None:
    windows = [visit.window(anchor) for visit in _protocol(library, therapy).visits]
    for opens, target, closes in windows:
        assert opens <= target <= closes
    for (_, _, closes), (opens, _, _) in itertools.pairwise(windows):
        assert closes < opens
    # Every day of 15 years belongs to at most one visit.
    days = [
        opens + timedelta(days=offset)
        for opens, _, closes in windows
        for offset in range((closes - opens).days + 1)
    ]
    assert len(days) == len(set(days))


def test_window_is_opens_target_closes() -> None:
    visit = _protocol(load_protocols(), "casgevy").visits[1]  # day 100, +-14
    assert visit.window(date(2026, 1, 1)) == (
        date(2026, 3, 28),
        date(2026, 4, 11),
        date(2026, 4, 25),
    )


def test_a_second_version_sits_beside_the_first(tmp_path: Path) -> None:
    shutil.copy(PROTOCOL_DIR / "casgevy.yaml", tmp_path / "casgevy.yaml")
    text = (PROTOCOL_DIR / "casgevy.yaml").read_text(encoding="utf-8")
    (tmp_path / "casgevy-v2.yaml").write_text(
        text.replace("version: 1", "version: 2"), encoding="utf-8"
    )
    library = load_protocols(tmp_path)
    assert sorted(library.versions["casgevy"]) == [1, 2]
    assert _protocol(library, "casgevy").version == 2
    first = library.get("casgevy", 1)
    assert first is not None and first.version == 1
    assert library.get("casgevy", 3) is None
    assert library.current("zolgensma") is None


# --- broken files ------------------------------------------------------------------------

GOOD = """\
# A small protocol for the tests.
therapy: casgevy
version: 1
title: {en: "Test protocol", es: "Protocolo de prueba"}
visits:
  - key: day-30
    label: {en: "Day 30", es: "Día 30"}
    offset_days: 30
    window_before_days: 7
    window_after_days: 7
    assessments: [cbc, safety_screen]
  - key: day-100
    label: {en: "Day 100", es: "Día 100"}
    offset_days: 100
    window_before_days: 14
    window_after_days: 14
    assessments: [cbc, hemoglobin]
"""


def line_of(text: str, fragment: str, occurrence: int = 1) -> int:
    """The 1-based line of the `occurrence`-th line of `text` containing `fragment`."""
    found = [number for number, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(found) >= occurrence, f"{fragment!r} is not in the text {occurrence} times"
    return found[occurrence - 1]


def _second(text: str, old: str, new: str) -> str:
    """Replace the second occurrence of `old` (in the day-100 visit)."""
    first = text.index(old)
    second = text.index(old, first + 1)
    return text[:second] + new + text[second + len(old) :]


# (name, break the file, (fragment, occurrence) whose line is reported, words of the problem)
BROKEN: list[tuple[str, Callable[[str], str], tuple[str, int], str]] = [
    (
        "bad-yaml-syntax",
        lambda text: text.replace("offset_days: 100", "offset_days: 100: 110"),
        ("offset_days: 100: 110", 1),
        "not valid YAML: mapping values are not allowed here",
    ),
    (
        "unbalanced-quote",
        lambda text: text.replace('{en: "Day 100", es:', '{en: "Day 100, es:'),
        ('{en: "Day 100, es:', 1),
        "not valid YAML",
    ),
    (
        "bad-indentation",
        lambda text: text.replace("    offset_days: 100", "   offset_days: 100"),
        ("offset_days: 100", 1),
        "not valid YAML",
    ),
    (
        "missing-field",
        lambda text: text.replace("    window_after_days: 14\n", ""),
        ("key: day-100", 1),
        "visits.1.window_after_days: Field required",
    ),
    (
        "missing-top-level-field",
        lambda text: text.replace("version: 1\n", ""),
        ("therapy: casgevy", 1),
        "version: Field required",
    ),
    (
        "wrong-type",
        lambda text: text.replace("offset_days: 100", "offset_days: soon"),
        ("offset_days: soon", 1),
        "visits.1.offset_days: Input should be a valid integer",
    ),
    (
        "wrong-type-list",
        lambda text: text.replace("assessments: [cbc, hemoglobin]", "assessments: cbc"),
        ("assessments: cbc", 1),
        "visits.1.assessments",
    ),
    (
        "negative-window",
        lambda text: text.replace("window_before_days: 14", "window_before_days: -1"),
        ("window_before_days: -1", 1),
        "greater than or equal to 0",
    ),
    (
        "unknown-field",
        lambda text: text.replace("offset_days: 100", "offset_days: 100\n    offset_weeks: 14"),
        ("offset_weeks: 14", 1),
        "visits.1.offset_weeks: Extra inputs are not permitted",
    ),
    (
        "unknown-assessment",
        lambda text: text.replace("[cbc, hemoglobin]", "[cbc, mri]"),
        ("[cbc, mri]", 1),
        "visits.1.assessments.1: Input should be 'cbc'",
    ),
    (
        "assessment-twice",
        lambda text: text.replace("[cbc, hemoglobin]", "[cbc, cbc]"),
        ("[cbc, cbc]", 1),
        "an assessment is listed twice",
    ),
    (
        "overlapping-windows",
        lambda text: text.replace("window_before_days: 14", "window_before_days: 70"),
        ("key: day-100", 1),
        "the windows of day-30 and day-100 overlap",
    ),
    (
        "touching-windows",  # day 37 closes day-30; day-100 may not open on day 37 too
        lambda text: text.replace("window_before_days: 14", "window_before_days: 63"),
        ("key: day-100", 1),
        "a day may belong to one visit only",
    ),
    (
        "out-of-order",
        lambda text: text.replace("offset_days: 100", "offset_days: 20"),
        ("key: day-100", 1),
        "visits must be listed in order of offset_days",
    ),
    (
        "repeated-visit-key",
        lambda text: text.replace("key: day-100", "key: day-30"),
        ("key: day-30", 2),
        "visit key day-30 is used twice",
    ),
    (
        "repeated-yaml-key",
        lambda text: _second(
            text, "window_after_days: ", "window_after_days: 1\n    window_after_days: "
        ),
        ("window_after_days: 14", 1),
        "the key 'window_after_days' is repeated",
    ),
    (
        "repeated-top-level-key",
        lambda text: text.replace("version: 1\n", "version: 1\nversion: 2\n"),
        ("version: 2", 1),
        "the key 'version' is repeated (first on line 3)",
    ),
    (
        "bad-therapy-code",
        lambda text: text.replace("therapy: casgevy", "therapy: Casgevy Plus"),
        ("therapy: Casgevy Plus", 1),
        "therapy: String should match pattern",
    ),
    (
        "empty-label",
        lambda text: text.replace('es: "Día 100"', 'es: ""'),
        ('es: ""', 1),
        "visits.1.label.es: String should have at least 1 character",
    ),
    (
        "no-visits",
        lambda text: text[: text.index("visits:")] + "visits: []\n",
        ("visits: []", 1),
        "visits: Tuple should have at least 1 item",
    ),
    (
        "unknown-reminder-kind",
        lambda text: text.replace(
            "visits:\n", "reminders:\n  - {key: soon, kind: sometime}\nvisits:\n"
        ),
        ("key: soon", 1),
        "reminders.0.kind: Input should be 'window_opens', 'appointment' or 'overdue'",
    ),
    (
        "overdue-with-a-lead",
        lambda text: text.replace(
            "visits:\n", "reminders:\n  - {key: late, kind: overdue, days_before: 3}\nvisits:\n"
        ),
        ("key: late", 1),
        "an overdue reminder goes after the window closed",
    ),
    (
        "reminder-key-twice",
        lambda text: text.replace(
            "visits:\n",
            "reminders:\n  - {key: a, kind: appointment, days_before: 1}\n"
            "  - {key: a, kind: appointment, days_before: 3}\nvisits:\n",
        ),
        ("reminders:", 1),
        "a reminder key is used twice",
    ),
    (
        "questionnaire-not-a-url",
        lambda text: text.replace(
            "    assessments: [cbc, hemoglobin]",
            "    assessments: [cbc, pro_questionnaire]\n    questionnaires: [check-in]",
        ),
        ("questionnaires: [check-in]", 1),
        "visits.1.questionnaires.0: String should match pattern",
    ),
    (
        "questionnaire-without-the-assessment",
        lambda text: text.replace(
            "    assessments: [cbc, hemoglobin]",
            "    assessments: [cbc, hemoglobin]\n"
            '    questionnaires: ["https://example.org/Questionnaire/q"]',
        ),
        ("key: day-100", 1),
        "visits.1: a visit with questionnaires must assess pro_questionnaire",
    ),
    (
        "questionnaire-twice",
        lambda text: text.replace(
            "    assessments: [cbc, hemoglobin]",
            "    assessments: [pro_questionnaire]\n"
            '    questionnaires: ["https://example.org/Q/q", "https://example.org/Q/q"]',
        ),
        ('questionnaires: ["https', 1),
        "visits.1.questionnaires: a questionnaire is listed twice",
    ),
    (
        "before-infusion-empty",
        lambda text: text.replace("visits:\n", "before_infusion: {questionnaires: []}\nvisits:\n"),
        ("before_infusion:", 1),
        "before_infusion.questionnaires: Tuple should have at least 1 item",
    ),
    (
        "not-a-mapping",
        lambda text: "- therapy: casgevy\n",
        ("therapy: casgevy", 1),
        "a protocol is a mapping",
    ),
]


def test_reminders_default_and_a_visit_may_list_its_own(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    assessments: [cbc, safety_screen]\n",
        "    assessments: [cbc, safety_screen]\n"
        "    reminders: [{key: appt-2d, kind: appointment, days_before: 2}]\n",
    )
    (tmp_path / "good.yaml").write_text(text, encoding="utf-8")
    protocol = _protocol(load_protocols(tmp_path), "casgevy")
    assert [rule.key for rule in protocol.reminder_rules("day-30")] == ["appt-2d"]
    assert [rule.key for rule in protocol.reminder_rules("day-100")] == [
        "window-14d",
        "appt-3d",
        "appt-1d",
        "overdue",
    ]


def test_the_shipped_protocols_remind_before_windows_and_appointments(
    library: ProtocolLibrary,
) -> None:
    for therapy in ("casgevy", "lyfgenia"):
        protocol = _protocol(library, therapy)
        kinds = {(rule.kind.value, rule.days_before) for rule in protocol.reminders}
        assert {("window_opens", 14), ("appointment", 3), ("appointment", 1)} <= kinds
        assert ("overdue", 0) in kinds


def test_the_good_text_is_good(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD, encoding="utf-8")
    protocol = _protocol(load_protocols(tmp_path), "casgevy")
    assert [visit.key for visit in protocol.visits] == ["day-30", "day-100"]
    assert protocol.visits[1].label.es == "Día 100"


@pytest.mark.parametrize(
    ("breaker", "where", "problem"),
    [pytest.param(breaker, where, problem, id=name) for name, breaker, where, problem in BROKEN],
)
def test_a_broken_file_is_refused_with_its_name_line_and_problem(
    tmp_path: Path,
    breaker: Callable[[str], str],
    where: tuple[str, int],
    problem: str,
) -> None:
    text = breaker(GOOD)
    assert text != GOOD
    shutil.copy(PROTOCOL_DIR / "lyfgenia.yaml", tmp_path / "lyfgenia.yaml")
    (tmp_path / "broken.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ProtocolError) as refused:
        load_protocols(tmp_path)
    message = str(refused.value)
    expected_line = line_of(text, *where)
    assert message.startswith(f"broken.yaml, line {expected_line}: "), message
    assert problem in message


def test_every_problem_of_a_file_is_listed_with_its_own_line(tmp_path: Path) -> None:
    text = GOOD.replace("offset_days: 30", "offset_days: thirty").replace(
        "[cbc, hemoglobin]", "[cbc, mri]"
    )
    (tmp_path / "two-problems.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ProtocolError) as refused:
        load_protocols(tmp_path)
    lines = str(refused.value).splitlines()
    for expected in [
        f"two-problems.yaml, line {line_of(text, 'offset_days: thirty')}: "
        "visits.0.offset_days: Input should be a valid integer, unable to parse string as an "
        "integer",
        f"two-problems.yaml, line {line_of(text, '[cbc, mri]')}: visits.1.assessments.1: "
        "Input should be 'cbc', 'hemoglobin', 'fetal_hemoglobin', 'integration_site', "
        "'pro_questionnaire' or 'safety_screen'",
    ]:
        assert expected in lines


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing yet\n", encoding="utf-8")
    with pytest.raises(ProtocolError, match=r"^empty\.yaml, line 1: a protocol is a mapping"):
        load_protocols(tmp_path)


def test_two_files_with_the_same_therapy_and_version_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a-casgevy.yaml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "b-casgevy-copy.yaml").write_text(
        GOOD.replace("Test protocol", "Another test protocol"), encoding="utf-8"
    )
    with pytest.raises(ProtocolError) as refused:
        load_protocols(tmp_path)
    message = str(refused.value)
    assert re.match(r"^b-casgevy-copy\.yaml, line \d+: ", message), message
    assert "casgevy version 1 is defined twice" in message
    assert "a-casgevy.yaml" in message


def test_the_same_version_of_two_therapies_is_fine(tmp_path: Path) -> None:
    (tmp_path / "casgevy.yaml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "lyfgenia.yaml").write_text(
        GOOD.replace("therapy: casgevy", "therapy: lyfgenia"), encoding="utf-8"
    )
    library = load_protocols(tmp_path)
    assert sorted(library.versions) == ["casgevy", "lyfgenia"]


def test_only_yaml_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "casgevy.yaml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not: [a protocol", encoding="utf-8")
    (tmp_path / "casgevy.yaml.bak").write_text("not: [a protocol", encoding="utf-8")
    assert sorted(load_protocols(tmp_path).versions) == ["casgevy"]
