"""The claims code lists (`reporting/codes/*.yaml`): the shipped ones, and a broken file
refused with its name, line and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from reporting.code_lists import (
    CODES_DIR,
    CodeListError,
    load_code_lists,
    normalize_diagnosis,
    normalize_place_of_service,
    normalize_revenue_code,
)


def test_the_shipped_lists_flag_the_crisis_codes_and_nothing_else() -> None:
    codes = load_code_lists()
    crisis = codes.codes["is_vaso_occlusive"]["diagnosis"]
    assert {"D57.00", "D57.01", "D57.02", "D57.03", "D57.04", "D57.09"} <= crisis
    for branch in ("D57.21", "D57.41", "D57.43", "D57.45", "D57.81"):
        assert {f"{branch}{last}" for last in "123489"} <= crisis, branch
    assert not {"D57.1", "D57.20", "D57.3", "D57.40", "D57.42", "D57.44", "D57.80"} & crisis
    assert len(crisis) == 36
    assert codes.codes["is_ed_visit"]["place_of_service"] == frozenset({"23"})
    assert "0981" in codes.codes["is_ed_visit"]["revenue_code"]
    assert codes.codes["is_inpatient_stay"] == {"file_type": frozenset({"IP"})}


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("D57.00", "D57.00"), ("d5700", "D57.00"), (" D57211 ", "D57.211"), ("R52", "R52")],
)
def test_diagnoses_are_read_with_or_without_the_dot(raw: str, normal: str) -> None:
    assert normalize_diagnosis(raw) == normal


def test_codes_that_are_not_codes_are_refused() -> None:
    assert normalize_diagnosis("5700") is None
    assert normalize_diagnosis("D57..00") is None
    assert normalize_revenue_code("450") == "0450"
    assert normalize_revenue_code("45") is None
    assert normalize_place_of_service("9") == "09"
    assert normalize_place_of_service("231") is None


def _copy_shipped(folder: Path, **replacements: tuple[str, str]) -> None:
    for source in CODES_DIR.glob("*.yaml"):
        text = source.read_text(encoding="utf-8")
        old, new = replacements.get(source.stem, ("", ""))
        if old:
            assert old in text
            text = text.replace(old, new)
        (folder / source.name).write_text(text, encoding="utf-8")


def test_a_broken_code_is_refused_with_its_file_and_line(tmp_path: Path) -> None:
    _copy_shipped(tmp_path, vaso_occlusive_crisis=("code: D57.03,", "code: D5,"))
    with pytest.raises(CodeListError) as refused:
        load_code_lists(tmp_path)
    line = next(
        number
        for number, text in enumerate(
            (tmp_path / "vaso_occlusive_crisis.yaml").read_text().splitlines(), start=1
        )
        if "code: D5," in text
    )
    assert str(refused.value) == (
        f"vaso_occlusive_crisis.yaml, line {line}: match.diagnosis.3: 'D5' is not an "
        "ICD-10-CM code (a letter, a digit, then 1 to 5 letters or digits)"
    )


def test_a_revenue_code_must_be_quoted_and_a_flag_set_once(tmp_path: Path) -> None:
    _copy_shipped(tmp_path, emergency_department=('code: "0981"', "code: 981"))
    with pytest.raises(CodeListError, match=r"emergency_department.yaml, line \d+: .*in quotes"):
        load_code_lists(tmp_path)
    _copy_shipped(tmp_path)
    (tmp_path / "more_stays.yaml").write_text(
        "key: more_stays\nflag: is_inpatient_stay\ntitle: {en: Stays, es: Estancias}\n"
        "source: test\nmatch:\n  file_type:\n    - {code: OT, display: other}\n",
        encoding="utf-8",
    )
    with pytest.raises(CodeListError, match="is_inpatient_stay is already set by"):
        load_code_lists(tmp_path)
    (tmp_path / "more_stays.yaml").unlink()
    (tmp_path / "inpatient_stay.yaml").unlink()
    with pytest.raises(CodeListError, match="no code list sets is_inpatient_stay"):
        load_code_lists(tmp_path)
