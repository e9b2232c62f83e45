"""The item engine: which items apply (enableWhen), reading and checking one page's answers
(ranges, required, choices), and the answers as FHIR QuestionnaireResponse items and a score.

Answers are kept as JSON, by linkId: a list of `{"option": n}` (the n-th answerOption) or
`{"value": v}` (an int, a decimal as a string, an ISO date, a bool, a string)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from coordination.questionnaires.items import Condition, Form, Item, Option, Page
from core.text import N_

Answers = dict[str, list[dict[str, Any]]]
_OPTION = re.compile(r"[0-9]{1,4}")
_INTEGER = re.compile(r"[+-]?[0-9]{1,12}")
_DECIMAL = re.compile(r"[+-]?[0-9]{1,12}([.,][0-9]{1,8})?")


def typed(item: Item, stored: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Stored answers as values: an Option, int, Decimal, date, bool or str."""
    values: list[Any] = []
    for answer in stored:
        if "option" in answer:
            index = answer["option"]
            if isinstance(index, int) and 0 <= index < len(item.options):
                values.append(item.options[index])
        elif "value" in answer:
            value = answer["value"]
            if item.type == "decimal":
                values.append(Decimal(str(value)))
            elif item.type == "date":
                values.append(date.fromisoformat(str(value)))
            else:
                values.append(value)
    return values


def _comparable(value: Any) -> Any:
    """A value for comparing with an enableWhen's answer (an option's own value)."""
    if isinstance(value, Option):
        if "valueInteger" in value.value:
            return value.value["valueInteger"]
        if "valueString" in value.value:
            return value.value["valueString"]
        return value
    return value


def _equal(value: Any, key: str, expected: Any) -> bool:
    if isinstance(value, Option):
        return value.matches(expected)
    if key == "answerCoding":
        return False  # free text never equals a coding
    if isinstance(value, bool) or isinstance(expected, bool):
        return value is expected
    if isinstance(value, int | Decimal) and isinstance(expected, int | Decimal):
        return Decimal(value) == Decimal(expected)
    return bool(value == expected)


def _holds(condition: Condition, values: list[Any]) -> bool:
    """One enableWhen against the question's current answers. Without an answer only
    `exists false` holds; `!=` holds when no answer equals the value (FHIR R4)."""
    key, expected = condition.answer
    if condition.operator == "exists":
        return bool(values) == bool(expected)
    if not values:
        return False
    if condition.operator == "=":
        return any(_equal(value, key, expected) for value in values)
    if condition.operator == "!=":
        return not any(_equal(value, key, expected) for value in values)
    for value in values:
        value = _comparable(value)
        if isinstance(value, int | Decimal) and isinstance(expected, int | Decimal):
            left, right = Decimal(value), Decimal(expected)
        elif isinstance(value, date) and isinstance(expected, date):
            left, right = value, expected  # type: ignore[assignment]
        else:
            continue
        if (
            (condition.operator == ">" and left > right)
            or (condition.operator == "<" and left < right)
            or (condition.operator == ">=" and left >= right)
            or (condition.operator == "<=" and left <= right)
        ):
            return True
    return False


def enabled_items(form: Form, answers: Answers) -> set[str]:
    """The linkIds that apply with these answers, in the questionnaire's order: an item
    applies when its parent does and its enableWhen holds; a question that does not apply
    counts as unanswered for the conditions that look at it."""
    enabled: set[str] = set()

    def values_of(link_id: str) -> list[Any]:
        if link_id not in enabled and link_id in _seen:
            return []
        return typed(form.by_link_id[link_id], answers.get(link_id, []))

    _seen: set[str] = set()

    def visit(item: Item, parent_on: bool) -> None:
        on = parent_on
        if on and item.conditions:
            results = [
                _holds(condition, values_of(condition.question)) for condition in item.conditions
            ]
            on = any(results) if item.enable_any else all(results)
        _seen.add(item.link_id)
        if on:
            enabled.add(item.link_id)
        for child in item.children:
            visit(child, on)

    for item in form.items:
        visit(item, True)
    return enabled


def page_applies(page: Page, enabled: set[str]) -> bool:
    return any(item.link_id in enabled for item in page.items)


def page_questions(page: Page) -> list[Item]:
    return [item for top in page.items for item in top.walk() if item.is_question]


def depends_on_page(form: Form, page: Page, item: Item) -> bool:
    """True when whether `item` applies depends on a question of its own page (or a group
    above it does): it is shown with a note, and decided once the page is sent."""
    on_page = {question.link_id for question in page_questions(page)}
    link_id: str | None = item.link_id
    while link_id is not None:
        current = form.by_link_id[link_id]
        if any(condition.question in on_page for condition in current.conditions):
            return True
        link_id = form.parents.get(link_id)
    return False


def _range_message(item: Item) -> str:
    low, high = item.low, item.high
    if item.type == "date":
        if low is not None and high is not None:
            return N_("Enter a date from %(low)s to %(high)s.", low=str(low), high=str(high))
        if low is not None:
            return N_("Enter a date on or after %(low)s.", low=str(low))
        return N_("Enter a date on or before %(high)s.", high=str(high))
    if low is not None and high is not None:
        return N_("Enter a number from %(low)s to %(high)s.", low=_plain(low), high=_plain(high))
    if low is not None:
        return N_("Enter a number of at least %(low)s.", low=_plain(low))
    return N_("Enter a number of at most %(high)s.", high=_plain(high) if high is not None else "")


def _plain(value: Decimal | date) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    return value.isoformat()


def _in_range(item: Item, value: Decimal | date) -> bool:
    low, high = item.low, item.high
    if isinstance(value, date):
        return (not isinstance(low, date) or value >= low) and (
            not isinstance(high, date) or value <= high
        )
    return (not isinstance(low, Decimal) or value >= low) and (
        not isinstance(high, Decimal) or value <= high
    )


def _read_question(
    item: Item, sent: list[str], other: str
) -> tuple[list[dict[str, Any]], str | None]:
    """One question's sent values as stored answers, or the message that says what to fix."""
    sent = [value.strip() for value in sent if value.strip()]
    other = other.strip()
    if item.type in {"choice", "open-choice"}:
        chosen: list[dict[str, Any]] = []
        for value in sent:
            if _OPTION.fullmatch(value) is None or int(value) >= len(item.options):
                return [], N_("Choose one of the answers.")
            if {"option": int(value)} not in chosen:
                chosen.append({"option": int(value)})
        if item.type == "open-choice" and other:
            if len(other) > STRING_OTHER_MAX:
                return [], N_("Write at most %(count)d characters.", count=STRING_OTHER_MAX)
            chosen.append({"value": other})
        if len(chosen) > 1 and not item.repeats:
            return [], N_("Choose only one answer.")
        return chosen, None
    if not sent:
        return [], None
    if len(sent) > 1:
        return [], N_("Give one answer.")
    text = sent[0]
    if item.type == "boolean":
        if text not in {"true", "false"}:
            return [], N_("Choose yes or no.")
        return [{"value": text == "true"}], None
    if item.type == "integer":
        if _INTEGER.fullmatch(text) is None:
            return [], N_(
                "Enter a whole number."
            ) if item.low is None and item.high is None else _range_message(item)
        number = int(text)
        if not _in_range(item, Decimal(number)):
            return [], _range_message(item)
        return [{"value": number}], None
    if item.type == "decimal":
        try:
            # ASCII digits only ("²" and other scripts' digits are not numbers people type).
            amount = Decimal(text.replace(",", ".")) if _DECIMAL.fullmatch(text) else Decimal("NaN")
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite() or abs(amount) >= Decimal(10) ** 9:
            return [], N_(
                "Enter a number."
            ) if item.low is None and item.high is None else _range_message(item)
        if not _in_range(item, amount):
            return [], _range_message(item)
        return [{"value": str(amount)}], None
    if item.type == "date":
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return [], N_("Enter a date like 2026-03-31.")
        if not _in_range(item, day):
            return [], _range_message(item)
        return [{"value": day.isoformat()}], None
    limit = item.max_length or 1_000
    if len(text) > limit:
        return [], N_("Write at most %(count)d characters.", count=limit)
    return [{"value": text}], None


STRING_OTHER_MAX = 500


def read_page(
    form: Form, page: Page, posted: Mapping[str, list[str]], answers: Answers
) -> tuple[Answers, dict[str, str]]:
    """The answers with this page's replaced by what was sent, and one message per question
    (by linkId) that needs fixing: a value out of range, a required question unanswered
    (only when it applies, judged with this page's answers too)."""
    updated: Answers = {key: list(value) for key, value in answers.items()}
    errors: dict[str, str] = {}
    questions = page_questions(page)
    for item in questions:
        name = form.fields[item.link_id]
        values, error = _read_question(
            item, list(posted.get(name, [])), _first(posted, name + "-other")
        )
        updated.pop(item.link_id, None)
        if error is not None:
            errors[item.link_id] = error
        elif values:
            updated[item.link_id] = values
    enabled = enabled_items(form, updated)
    for item in questions:
        if item.link_id not in enabled:
            updated.pop(item.link_id, None)  # an answer to what no longer applies is dropped
            errors.pop(item.link_id, None)
        elif item.required and item.link_id not in updated and item.link_id not in errors:
            errors[item.link_id] = N_("Answer this question.")
    return updated, errors


def _first(posted: Mapping[str, list[str]], name: str) -> str:
    values = posted.get(name, [])
    return values[0] if values else ""


def missing_required(form: Form, page: Page, answers: Answers, enabled: set[str]) -> bool:
    """True when a required question of the page that applies has no answer."""
    return any(
        item.required and item.link_id in enabled and item.link_id not in answers
        for item in page_questions(page)
    )


def score(form: Form, answers: Answers, enabled: set[str]) -> Decimal | None:
    """The sum of the ordinal values of the options chosen (None when the questionnaire
    defines none)."""
    if not form.has_score:
        return None
    total = Decimal(0)
    for link_id in enabled:
        item = form.by_link_id[link_id]
        for value in typed(item, answers.get(link_id, [])):
            if isinstance(value, Option) and value.ordinal is not None:
                total += value.ordinal
    return total


def _fhir_answer(item: Item, value: Any) -> dict[str, Any]:
    if isinstance(value, Option):
        return dict(value.value)
    if item.type == "boolean":
        return {"valueBoolean": value}
    if item.type == "integer":
        return {"valueInteger": value}
    if item.type == "decimal":
        return {"valueDecimal": float(value) if value != value.to_integral() else int(value)}
    if item.type == "date":
        return {"valueDate": value.isoformat()}
    return {"valueString": value}


def response_items(form: Form, answers: Answers, enabled: set[str]) -> list[dict[str, Any]]:
    """QuestionnaireResponse.item, nested like the questionnaire: the questions that apply
    and were answered, inside the groups that hold them."""

    def build(item: Item) -> dict[str, Any] | None:
        if item.link_id not in enabled:
            return None
        node: dict[str, Any] = {"linkId": item.link_id}
        if item.text:
            node["text"] = item.text
        if item.type == "group":
            children = [child for child in (build(one) for one in item.children) if child]
            if not children:
                return None
            node["item"] = children
            return node
        if not item.is_question:
            return None
        values = typed(item, answers.get(item.link_id, []))
        if not values:
            return None
        node["answer"] = [_fhir_answer(item, value) for value in values]
        return node

    return [node for node in (build(item) for item in form.items) if node]


def form_values(form: Form, answers: Answers) -> dict[str, list[str]]:
    """Saved answers as a page's form fields hold them (to show a page again)."""
    values: dict[str, list[str]] = {}
    for link_id, stored in answers.items():
        name = form.fields.get(link_id)
        if name is None:
            continue
        for answer in stored:
            if "option" in answer:
                values.setdefault(name, []).append(str(answer["option"]))
            elif form.by_link_id[link_id].type in {"choice", "open-choice"}:
                values.setdefault(name + "-other", []).append(str(answer["value"]))
            elif isinstance(answer.get("value"), bool):
                values.setdefault(name, []).append("true" if answer["value"] else "false")
            else:
                values.setdefault(name, []).append(str(answer.get("value", "")))
    return values


def shown_answers(item: Item, stored: Sequence[Mapping[str, Any]]) -> list[str | bool]:
    """An item's answers as the review shows them: an option's label, a bool (the page
    says yes or no in the reader's language), or the value written out."""
    shown: list[str | bool] = []
    for value in typed(item, stored):
        if isinstance(value, Option):
            shown.append(value.label)
        elif isinstance(value, bool):
            shown.append(value)
        elif isinstance(value, Decimal | date):
            shown.append(_plain(value))
        else:
            shown.append(str(value))
    return shown
