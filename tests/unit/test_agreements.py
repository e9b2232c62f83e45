"""Outcomes-based agreements as data (reporting/agreements.py): the shipped files are valid
and illustrative, and a broken file is refused with its file, line and problem."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from reporting.agreements import (
    AgreementError,
    load_agreements,
    parse_agreement,
    shipped_agreements,
)

GOOD = """\
key: test-2025
version: 1
illustrative: true
title: {en: "Test", es: "Prueba"}
manufacturer: Test Pharma
therapy: casgevy
states: [MD, CO]
infusions: {from: 2025-01-01, until: null}
price_basis: {kind: wholesale_acquisition_cost, amount: 2000000, currency: USD}
measures:
  - key: no-stay
    title: {en: "No stay", es: "Sin hospitalización"}
    description: {en: "No stay.", es: "Sin hospitalización."}
    window: {from_month: 6, to_month: 18}
    rule: {kind: no_event, event: voc_inpatient_stay}
    rebate: {percent_of_price: 10}
  - key: hbf
    title: {en: "HbF", es: "HbF"}
    description: {en: "HbF.", es: "HbF."}
    window: {from_month: 9, to_month: 15}
    rule: {kind: observation, code: "http://loinc.org|4576-5", unit: "%",
           comparator: ">=", value: 20, pick: last}
    rebate: {amount: 150000}
"""


def test_the_shipped_agreements_are_valid_illustrative_and_one_per_therapy() -> None:
    library = shipped_agreements()
    current = library.current()
    assert [(a.key, a.therapy) for a in current] == [
        ("casgevy-2025", "casgevy"),
        ("lyfgenia-2025", "lyfgenia"),
    ]
    assert all(agreement.illustrative for agreement in current)
    casgevy = library.get("casgevy-2025")
    assert casgevy is not None
    amounts = {m.key: casgevy.rebate_amount(m) for m in casgevy.measures}
    # 10% of 2,200,000, and a fixed amount.
    assert amounts == {
        "no-voc-stay-6-18": Decimal("220000.00"),
        "hbf-month-12": Decimal("150000.00"),
    }


def test_a_good_file_reads_with_its_terms() -> None:
    agreement = parse_agreement(GOOD, source="test.yaml")
    assert agreement.covers_state("MD") and not agreement.covers_state("GA")
    first, second = agreement.measures
    assert (first.window.from_month, first.window.to_month) == (6, 18)
    assert agreement.rebate_amount(first) == Decimal("200000.00")
    assert agreement.rebate_amount(second) == Decimal("150000.00")


@pytest.mark.parametrize(
    ("old", "new", "line", "words"),
    [
        ("to_month: 18}", "to_month: 6}", 14, "to_month must come after from_month"),
        ("event: voc_inpatient_stay", "event: voc_somewhere", 15, "measures.0.rule.event"),
        ('comparator: ">="', 'comparator: "=>"', 22, "comparator"),
        ("  - key: hbf\n", "  - key: no-stay\n", 17, "measure key no-stay is used twice"),
        ("states: [MD, CO]", "states: [MD, MD]", 7, "a state is listed twice"),
        ("manufacturer: Test Pharma\n", "manufacturer: Test Pharma\nprice: 3\n", 6, "price"),
        ("measures:\n", "measures: [\n", 11, "not valid YAML"),
    ],
)
def test_a_broken_file_is_refused_with_its_file_line_and_problem(
    old: str, new: str, line: int, words: str
) -> None:
    assert old in GOOD
    with pytest.raises(AgreementError) as refused:
        parse_agreement(GOOD.replace(old, new, 1), source="broken.yaml")
    message = str(refused.value)
    assert message.startswith(f"broken.yaml, line {line}:"), message
    assert words in message


def test_an_agreement_for_a_therapy_without_a_protocol_or_a_version_twice_is_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text(GOOD.replace("therapy: casgevy", "therapy: other"))
    with pytest.raises(AgreementError, match=r"a\.yaml, line 6: therapy: other is not a therapy"):
        load_agreements(tmp_path, known_therapies={"casgevy", "lyfgenia"})
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    with pytest.raises(
        AgreementError, match=r"b\.yaml, line 1: test-2025 version 1 is defined twice"
    ):
        load_agreements(tmp_path, known_therapies={"casgevy"})
    (tmp_path / "b.yaml").write_text(GOOD.replace("version: 1", "version: 2"))
    library = load_agreements(tmp_path, known_therapies={"casgevy"})
    current = library.get("test-2025")
    assert current is not None and current.version == 2  # reports apply the newest
