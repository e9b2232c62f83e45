"""Reading FHIR R4 Questionnaires into the items the platform asks: the shared examples load
or are refused item by item; every construct outside the supported subset is refused with
its linkId and path; hypothesis-built questionnaires (nested groups, enableWhen) round-trip
their answers into a QuestionnaireResponse that the R4B model accepts."""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2_fragments import render_block

from coordination.questionnaires.engine import (
    depends_on_page,
    enabled_items,
    page_questions,
    read_page,
    response_items,
    score,
)
from coordination.questionnaires.items import QuestionnaireRefused, read_questionnaire
from coordination.questionnaires.loading import SHIPPED_DIR
from core.models import Language
from portal.web import environment
from tests.support.fhir_examples import example_files

QUESTIONNAIRES = [one for one in example_files() if one.resource_type == "Questionnaire"]
SHARED = Path("/work/shared/fhir-examples/r4/Questionnaire")
# What each shared example lacks for the platform (the items themselves are all supported).
EXPECTED_REFUSALS = {
    "Questionnaire/uscore-questionnaire-phq-9.json": [
        "the questionnaire needs a version",
        "the questionnaire needs a language: en or es",
    ],
}


def _minimal(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Questionnaire",
        "url": "https://example.org/q",
        "version": "1",
        "language": "en",
        "status": "active",
        "item": list(items),
    }


def _refusals(resource: dict[str, Any]) -> list[str]:
    with pytest.raises(QuestionnaireRefused) as refused:
        read_questionnaire(resource)
    return refused.value.errors


def test_the_fixture_copies_are_the_shared_examples() -> None:
    if not SHARED.is_dir():
        pytest.skip("the shared examples are not on this machine")
    shared = sorted(path.name for path in SHARED.glob("*.json"))
    assert shared == sorted(one.name.split("/")[-1] for one in QUESTIONNAIRES)


@pytest.mark.parametrize("name", [one.name for one in QUESTIONNAIRES])
def test_every_shared_example_is_refused_for_what_it_lacks_and_loads_once_given_it(
    name: str,
) -> None:
    resource = next(one.copy() for one in QUESTIONNAIRES if one.name == name)
    assert _refusals(resource) == EXPECTED_REFUSALS[name]
    resource.update(version="1.0.0", language="en")
    form = read_questionnaire(resource)
    assert len(form.by_link_id) == len(resource["item"])


def test_phq9_scores_by_its_ordinal_values() -> None:
    resource = next(one.copy() for one in QUESTIONNAIRES if "phq-9" in one.name)
    resource.update(version="1.0.0", language="en-US")
    form = read_questionnaire(resource)
    assert form.language is Language.EN and form.has_score
    # Every question on one page (the items are not grouped); "Nearly every day" is 3.
    page = form.pages[0]
    posted = {
        form.fields[item.link_id]: [str(len(item.options) - 1)]
        for item in page_questions(page)
        if item.type == "choice"
    }
    answers, errors = read_page(form, page, posted, {})
    assert errors == {}
    assert score(form, answers, enabled_items(form, answers)) == Decimal(27)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"linkId": "q3", "type": "attachment", "text": "A photo"},
            "item 'q3' (item[1].item[0]): type 'attachment' is not supported",
        ),
        (
            {"linkId": "q3", "type": "string", "repeats": True},
            "item 'q3' (item[1].item[0]): repeats is supported on choices only, not on 'string'",
        ),
        (
            {"linkId": "q3", "type": "choice", "answerValueSet": "http://x/vs"},
            "item 'q3' (item[1].item[0]): answerValueSet is not supported: "
            "list the answers in answerOption",
        ),
        (
            {"linkId": "q3", "type": "choice", "answerOption": [{"valueDate": "2020-01-01"}]},
            "item 'q3' (item[1].item[0]): answerOption[0]: valueDate is not supported "
            "(use valueCoding, valueString or valueInteger)",
        ),
        (
            {
                "linkId": "q3",
                "type": "integer",
                "enableWhen": [{"question": "q1", "operator": "~", "answerBoolean": True}],
            },
            "item 'q3' (item[1].item[0]): enableWhen[0]: operator '~' is not supported",
        ),
        (
            {
                "linkId": "q3",
                "type": "integer",
                "enableWhen": [{"question": "nowhere", "operator": "=", "answerBoolean": True}],
            },
            "item 'q3' (item[1].item[0]): enableWhen[0] looks at 'nowhere', "
            "which is not a question",
        ),
        (
            {
                "linkId": "q3",
                "type": "integer",
                "enableWhen": [{"question": "q1", "operator": "=", "answerInteger": 3}],
            },
            "item 'q3' (item[1].item[0]): enableWhen[0]: answerInteger does not fit "
            "'boolean' item 'q1'",
        ),
        (
            {
                "linkId": "q3",
                "type": "string",
                "extension": [
                    {"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueInteger": 1}
                ],
            },
            "item 'q3' (item[1].item[0]): minValue is supported on integer, decimal and date only",
        ),
        (
            {
                "linkId": "q3",
                "type": "decimal",
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
                        "sdc-questionnaire-calculatedExpression",
                        "valueExpression": {"language": "text/fhirpath", "expression": "1"},
                    }
                ],
            },
            "item 'q3' (item[1].item[0]): calculatedExpression is not supported",
        ),
        (
            {"linkId": "q1", "type": "string"},
            "item 'q1' (item[1].item[0]): linkId is used twice (also at item[0])",
        ),
    ],
)
def test_an_item_outside_the_subset_is_refused_with_its_link_id_and_path(
    item: dict[str, Any], message: str
) -> None:
    resource = _minimal(
        {"linkId": "q1", "type": "boolean", "text": "Yes?"},
        {"linkId": "g", "type": "group", "text": "More", "item": [item]},
    )
    assert _refusals(resource) == [message]


def test_every_bad_item_is_named_not_only_the_first() -> None:
    resource = _minimal(
        {"linkId": "a", "type": "attachment"},
        {"linkId": "b", "type": "reference"},
    )
    assert _refusals(resource) == [
        "item 'a' (item[0]): type 'attachment' is not supported",
        "item 'b' (item[1]): type 'reference' is not supported",
    ]


def test_a_structurally_wrong_resource_names_the_field() -> None:
    resource = _minimal({"linkId": "a", "type": "string"})
    resource["item"][0]["required"] = "perhaps"
    assert any("required" in message for message in _refusals(resource))


def test_url_version_and_a_language_of_ours_are_required() -> None:
    resource = _minimal({"linkId": "a", "type": "string"})
    del resource["url"], resource["version"]
    resource["language"] = "fr"
    assert _refusals(resource) == [
        "the questionnaire needs a url",
        "the questionnaire needs a version",
        "the questionnaire needs a language: en or es",
    ]


def test_the_shipped_check_in_asks_the_same_items_in_both_languages() -> None:
    forms = {
        path.name: read_questionnaire(json.loads(path.read_text(encoding="utf-8")))
        for path in SHIPPED_DIR.glob("*.json")
    }
    english, spanish = (
        forms["living-after-gene-therapy.en.json"],
        forms["living-after-gene-therapy.es.json"],
    )
    assert english.shape() == spanish.shape()
    assert (english.language, spanish.language) == (Language.EN, Language.ES)
    assert english.title != spanish.title


def test_a_same_page_follow_up_applies_only_after_yes() -> None:
    path = SHIPPED_DIR / "living-after-gene-therapy.en.json"
    form = read_questionnaire(json.loads(path.read_text(encoding="utf-8")))
    page = form.pages[3]
    stay, nights = form.fields["hospital-stay"], form.fields["hospital-nights"]
    answers, errors = read_page(form, page, {stay: ["false"], nights: ["4"]}, {})
    assert errors == {} and answers == {"hospital-stay": [{"value": False}]}
    answers, errors = read_page(form, page, {stay: ["true"]}, {})
    assert errors == {"hospital-nights": "Answer this question."}
    answers, errors = read_page(form, page, {stay: ["true"], nights: ["400"]}, {})
    assert errors == {"hospital-nights": "Enter a number from 1 to 365."}


# --- hypothesis: nested groups with enableWhen round-trip -----------------------------


@st.composite
def questionnaires(draw: st.DrawFn) -> dict[str, Any]:
    """A questionnaire of 1-3 top-level groups holding questions and nested groups; later
    questions may depend (enableWhen) on an earlier boolean or integer question."""
    counter = iter(range(1000))
    earlier: list[dict[str, Any]] = []

    def question() -> dict[str, Any]:
        kind = draw(st.sampled_from(["boolean", "integer", "choice", "string", "date"]))
        node: dict[str, Any] = {"linkId": f"q{next(counter)}", "type": kind, "text": "Q?"}
        if kind == "integer":
            node["extension"] = [
                {"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueInteger": 0},
                {"url": "http://hl7.org/fhir/StructureDefinition/maxValue", "valueInteger": 9},
            ]
        if kind == "choice":
            node["repeats"] = draw(st.booleans())
            node["answerOption"] = [
                {
                    "valueCoding": {"system": "https://example.org/cs", "code": f"c{n}"},
                    "extension": [
                        {
                            "url": "http://hl7.org/fhir/StructureDefinition/ordinalValue",
                            "valueDecimal": n,
                        }
                    ],
                }
                for n in range(3)
            ]
        targets = [one for one in earlier if one["type"] in {"boolean", "integer"}]
        depends = draw(st.booleans())
        if targets and depends:
            target = draw(st.sampled_from(targets))
            if target["type"] == "boolean":
                node["enableWhen"] = [
                    {"question": target["linkId"], "operator": "=", "answerBoolean": True}
                ]
            else:
                node["enableWhen"] = [
                    {
                        "question": target["linkId"],
                        "operator": draw(st.sampled_from([">", "<", ">=", "<=", "!="])),
                        "answerInteger": draw(st.integers(0, 9)),
                    }
                ]
        node["required"] = draw(st.booleans())
        earlier.append(node)
        return node

    def group(depth: int) -> dict[str, Any]:
        children: list[dict[str, Any]] = []
        for _ in range(draw(st.integers(1, 3))):
            if depth < 2 and draw(st.booleans()):
                children.append(group(depth + 1))
            else:
                children.append(question())
        return {"linkId": f"g{next(counter)}", "type": "group", "text": "G", "item": children}

    return _minimal(*[group(0) for _ in range(draw(st.integers(1, 3)))])


def _sent_value(item_type: str, data: st.DataObject) -> list[str]:
    if item_type == "boolean":
        return [data.draw(st.sampled_from(["true", "false"]))]
    if item_type == "integer":
        return [str(data.draw(st.integers(0, 9)))]
    if item_type == "choice":
        return [str(data.draw(st.integers(0, 2)))]
    if item_type == "date":
        return [data.draw(st.dates()).isoformat()]
    return [
        data.draw(
            st.text(
                st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                min_size=1,
                max_size=20,
            ).filter(str.strip)
        )
    ]


@given(resource=questionnaires(), data=st.data())
def test_built_questionnaires_round_trip_their_answers(
    resource: dict[str, Any], data: st.DataObject
) -> None:
    form = read_questionnaire(copy.deepcopy(resource))
    answers: dict[str, list[dict[str, Any]]] = {}
    for page in form.pages:
        posted = {
            form.fields[item.link_id]: _sent_value(item.type, data) for item in page_questions(page)
        }
        answers, errors = read_page(form, page, posted, answers)
        assert errors == {}  # everything was answered, in range
    enabled = enabled_items(form, answers)
    # Exactly the questions that apply are answered.
    questions = {link_id for link_id, item in form.by_link_id.items() if item.is_question}
    assert set(answers) == questions & enabled
    items = response_items(form, answers, enabled)
    resource_out = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": f"{form.url}|{form.version}",
        "item": items,
    }
    QuestionnaireResponse.model_validate(resource_out)

    def answered(nodes: list[dict[str, Any]]) -> dict[str, int]:
        found: dict[str, int] = {}
        for node in nodes:
            if "answer" in node:
                found[node["linkId"]] = len(node["answer"])
            found.update(answered(node.get("item", [])))
        return found

    assert answered(items) == {link_id: len(values) for link_id, values in answers.items()}


@settings(max_examples=30)
@given(resource=questionnaires())
def test_built_questionnaires_render_every_question_with_a_label(
    resource: dict[str, Any],
) -> None:
    """Each page renders (the page's block, as htmx gets it): every question that applies
    before any answer has its field and a label or legend naming it."""
    form = read_questionnaire(resource)
    enabled = enabled_items(form, {})
    for page in form.pages:
        later = {
            item.link_id
            for top in page.items
            for item in top.walk()
            if depends_on_page(form, page, item)
        }
        html = render_block(
            environment,
            "portal/questionnaire_page.html",
            "questionnaire",
            form=form,
            page=page,
            patient=SimpleNamespace(given_name="Maya", id=1),
            for_self=True,
            base="/care/1/questionnaires/1",
            position=page.index + 1,
            page_count=len(form.pages),
            shown=enabled | later,
            depends_here=later,
            values={},
            errors={},
            error_fields={},
            back=None,
            csrf_token="x",
        )
        for item in page_questions(page):
            name = form.fields[item.link_id]
            if item.link_id in enabled or item.link_id in later:
                assert f'name="{name}"' in html
                assert re.search(rf'(<label for="f-{name}">|<fieldset id="f-{name}")', html), (
                    item.link_id
                )
            else:
                assert f'name="{name}"' not in html
