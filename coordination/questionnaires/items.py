"""A FHIR R4 Questionnaire read into the items the platform can ask: the SDC subset (groups,
display, choice and open-choice with answer options, integer, decimal, date, boolean, string,
text; required, enableWhen, repeats on choices, min/max values, units, ordinal values).

Anything else is refused with one message per item, naming its linkId and its path, so the
person loading a file knows what to change: "item 'q3' (item[2].item[0]): type 'attachment'
is not supported"."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from fhir.resources.R4B.questionnaire import Questionnaire as FhirQuestionnaire
from pydantic import ValidationError

from core.models import Language

EXT = "http://hl7.org/fhir/StructureDefinition/"
MIN_VALUE = EXT + "minValue"
MAX_VALUE = EXT + "maxValue"
UNIT = EXT + "questionnaire-unit"
# The per-answer score: R4's ordinalValue (and its older questionnaire- name), or the SDC
# itemWeight that later versions use.
ORDINAL_URLS = frozenset(
    {EXT + "ordinalValue", EXT + "questionnaire-ordinalValue", EXT + "itemWeight"}
)
# Extensions that change what an item means and that the platform cannot honour: refused
# rather than silently asking something else (SDC expressions are out of scope).
REFUSED_EXTENSIONS = {
    "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression": (
        "calculatedExpression"
    ),
    "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-enableWhenExpression": (
        "enableWhenExpression"
    ),
    "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression": (
        "initialExpression"
    ),
    "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-answerExpression": (
        "answerExpression"
    ),
}

QUESTION_TYPES = frozenset(
    {"choice", "open-choice", "integer", "decimal", "date", "boolean", "string", "text"}
)
SUPPORTED_TYPES = QUESTION_TYPES | {"group", "display"}
OPERATORS = frozenset({"exists", "=", "!=", ">", "<", ">=", "<="})
ORDERED_TYPES = frozenset({"integer", "decimal", "date"})
# The answer[x] of an enableWhen that fits each question type.
_CONDITION_ANSWERS: dict[str, frozenset[str]] = {
    "boolean": frozenset({"answerBoolean"}),
    "integer": frozenset({"answerInteger", "answerDecimal"}),
    "decimal": frozenset({"answerDecimal", "answerInteger"}),
    "date": frozenset({"answerDate"}),
    "string": frozenset({"answerString"}),
    "text": frozenset({"answerString"}),
    "choice": frozenset({"answerCoding", "answerString", "answerInteger"}),
    "open-choice": frozenset({"answerCoding", "answerString", "answerInteger"}),
}
STRING_MAX = 1_000  # a string item without maxLength
TEXT_MAX = 5_000  # a text item


class QuestionnaireRefused(Exception):
    """The resource cannot be loaded: every reason, one line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Option:
    """One answer option of a choice: what it shows, its FHIR value, its ordinal value."""

    index: int
    label: str
    value: dict[str, Any]  # {"valueCoding": {...}} | {"valueString": ...} | {"valueInteger": ...}
    ordinal: Decimal | None = None

    def matches(self, answer: Any) -> bool:
        """True when an enableWhen answer (a Coding dict, a str or an int) names this option."""
        if isinstance(answer, dict) and "valueCoding" in self.value:
            coding = self.value["valueCoding"]
            same_system = not answer.get("system") or answer.get("system") == coding.get("system")
            return bool(same_system and answer.get("code") == coding.get("code"))
        if isinstance(answer, str):
            return self.value.get("valueString") == answer
        if isinstance(answer, int) and not isinstance(answer, bool):
            return self.value.get("valueInteger") == answer
        return False


@dataclass(frozen=True)
class Condition:
    """One enableWhen: the question it looks at, the operator, the value to compare with."""

    question: str
    operator: str
    # The enableWhen's answer[x] and its value: ("answerBoolean", True), ("answerCoding",
    # {"system": ..., "code": ...}), ("answerDecimal", Decimal(...)), ("answerDate", date)...
    answer: tuple[str, Any]


@dataclass(frozen=True)
class Item:
    link_id: str
    type: str
    text: str
    path: str
    prefix: str = ""
    required: bool = False
    repeats: bool = False
    options: tuple[Option, ...] = ()
    low: Decimal | date | None = None
    high: Decimal | date | None = None
    unit: str = ""
    max_length: int | None = None
    conditions: tuple[Condition, ...] = ()
    enable_any: bool = False  # enableBehavior "any" (default "all")
    children: tuple[Item, ...] = ()

    @property
    def is_question(self) -> bool:
        return self.type in QUESTION_TYPES

    def walk(self) -> Iterator[Item]:
        """This item, then its descendants, in the questionnaire's order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def shape(self) -> tuple[Any, ...]:
        """What must be the same in every language: not the words."""
        return (
            self.link_id,
            self.type,
            self.required,
            self.repeats,
            tuple(
                (option.value.get("valueCoding", {}).get("code"), option.ordinal)
                for option in self.options
            ),
            self.low,
            self.high,
            self.conditions,
            self.enable_any,
            tuple(child.shape() for child in self.children),
        )


@dataclass(frozen=True)
class Page:
    """What one screen asks: a top-level group, or a run of top-level questions."""

    index: int
    title: str
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Form:
    """A questionnaire ready to ask: its identity and its items, with lookups by linkId."""

    url: str
    version: str
    language: Language
    title: str
    status: str
    items: tuple[Item, ...]
    pages: tuple[Page, ...] = ()
    by_link_id: Mapping[str, Item] = field(default_factory=dict)
    parents: Mapping[str, str] = field(default_factory=dict)
    # The form field of each question ("q3"): linkIds may hold any character.
    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def has_score(self) -> bool:
        return any(
            option.ordinal is not None
            for item in self.by_link_id.values()
            for option in item.options
        )

    def shape(self) -> tuple[Any, ...]:
        return tuple(item.shape() for item in self.items)


def _language(value: str | None) -> Language | None:
    """'en', 'en-US', 'es-MX'... as the platform's language, else None."""
    if not value:
        return None
    try:
        return Language(value.split("-")[0].lower())
    except ValueError:
        return None


def _extensions(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [ext for ext in node.get("extension", []) if isinstance(ext, dict)]


def _number(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


class _Reader:
    """Reads the items of one resource, collecting every refusal."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.seen: dict[str, str] = {}

    def refuse(self, link_id: str, path: str, message: str) -> None:
        self.errors.append(f"item '{link_id}' ({path}): {message}")

    def items(self, nodes: list[dict[str, Any]], prefix: str) -> tuple[Item, ...]:
        return tuple(
            item
            for index, node in enumerate(nodes)
            if (item := self.item(node, f"{prefix}item[{index}]")) is not None
        )

    def item(self, node: dict[str, Any], path: str) -> Item | None:
        link_id = str(node.get("linkId", ""))
        kind = str(node.get("type", ""))
        before = len(self.errors)
        if link_id in self.seen:
            self.refuse(link_id, path, f"linkId is used twice (also at {self.seen[link_id]})")
        self.seen.setdefault(link_id, path)
        if kind not in SUPPORTED_TYPES:
            self.refuse(link_id, path, f"type '{kind}' is not supported")
        for ext in _extensions(node):
            if ext.get("url") in REFUSED_EXTENSIONS:
                self.refuse(link_id, path, f"{REFUSED_EXTENSIONS[ext['url']]} is not supported")
        if node.get("modifierExtension"):
            self.refuse(link_id, path, "modifierExtension is not supported")
        if node.get("answerValueSet"):
            self.refuse(
                link_id, path, "answerValueSet is not supported: list the answers in answerOption"
            )
        if node.get("repeats") and kind not in {"choice", "open-choice"}:
            self.refuse(link_id, path, f"repeats is supported on choices only, not on '{kind}'")
        if node.get("answerOption") and kind not in {"choice", "open-choice"}:
            self.refuse(link_id, path, f"answerOption is not allowed on '{kind}'")
        if kind == "choice" and not node.get("answerOption") and not node.get("answerValueSet"):
            self.refuse(link_id, path, "a choice needs answerOption")
        if node.get("item") and kind != "group":
            self.refuse(
                link_id, path, "items nested under a question are not supported: use a group"
            )
        if kind == "group" and not node.get("item"):
            self.refuse(link_id, path, "a group needs items")
        options = self.options(node, link_id, path)
        low, high = (
            self.limit(node, MIN_VALUE, kind, link_id, path),
            self.limit(node, MAX_VALUE, kind, link_id, path),
        )
        if (isinstance(low, Decimal) and isinstance(high, Decimal) and low > high) or (
            isinstance(low, date) and isinstance(high, date) and low > high
        ):
            self.refuse(link_id, path, "minValue is above maxValue")
        conditions = self.conditions(node, link_id, path)
        unit = ""
        for ext in _extensions(node):
            if ext.get("url") == UNIT and isinstance(ext.get("valueCoding"), dict):
                coding = ext["valueCoding"]
                unit = str(coding.get("display") or coding.get("code") or "")
        max_length = node.get("maxLength")
        if max_length is None and kind in {"string", "text"}:
            max_length = STRING_MAX if kind == "string" else TEXT_MAX
        children = self.items(node.get("item", []), f"{path}.")
        if len(self.errors) > before:
            return None
        return Item(
            link_id=link_id,
            type=kind,
            text=str(node.get("text") or ""),
            path=path,
            prefix=str(node.get("prefix") or ""),
            required=bool(node.get("required")) and kind in QUESTION_TYPES,
            repeats=bool(node.get("repeats")),
            options=options,
            low=low,
            high=high,
            unit=unit,
            max_length=max_length,
            conditions=conditions,
            enable_any=node.get("enableBehavior") == "any",
            children=children,
        )

    def options(self, node: dict[str, Any], link_id: str, path: str) -> tuple[Option, ...]:
        found = []
        for index, option in enumerate(node.get("answerOption", [])):
            value = {key: option[key] for key in option if key.startswith("value")}
            if set(value) - {"valueCoding", "valueString", "valueInteger"}:
                kinds = ", ".join(sorted(value))
                self.refuse(
                    link_id,
                    path,
                    f"answerOption[{index}]: {kinds} is not supported "
                    "(use valueCoding, valueString or valueInteger)",
                )
                continue
            if "valueCoding" in value:
                coding = value["valueCoding"]
                label = str(coding.get("display") or coding.get("code") or "")
                places = [option, coding]
            elif "valueString" in value:
                label, places = str(value["valueString"]), [option]
            else:
                label, places = str(value["valueInteger"]), [option]
            ordinal = None
            for place in places:
                for ext in _extensions(place):
                    if ext.get("url") in ORDINAL_URLS:
                        ordinal = _number(ext.get("valueDecimal", ext.get("valueInteger")))
            found.append(Option(index, label, value, ordinal))
        return tuple(found)

    def limit(
        self, node: dict[str, Any], url: str, kind: str, link_id: str, path: str
    ) -> Decimal | date | None:
        for ext in _extensions(node):
            if ext.get("url") != url:
                continue
            name = url.rsplit("/", 1)[-1]
            if kind not in ORDERED_TYPES:
                self.refuse(link_id, path, f"{name} is supported on integer, decimal and date only")
                return None
            if kind == "date" and "valueDate" in ext:
                try:
                    return date.fromisoformat(str(ext["valueDate"]))
                except ValueError:
                    self.refuse(link_id, path, f"{name} is not a full date")
                    return None
            number = _number(ext.get("valueInteger", ext.get("valueDecimal")))
            if kind == "date" or number is None:
                self.refuse(link_id, path, f"{name} has no value of the item's type")
                return None
            return number
        return None

    def conditions(self, node: dict[str, Any], link_id: str, path: str) -> tuple[Condition, ...]:
        found = []
        for index, when in enumerate(node.get("enableWhen", [])):
            operator = str(when.get("operator", ""))
            answers = [key for key in when if key.startswith("answer")]
            if operator not in OPERATORS:
                self.refuse(
                    link_id, path, f"enableWhen[{index}]: operator '{operator}' is not supported"
                )
                continue
            if len(answers) != 1:
                self.refuse(link_id, path, f"enableWhen[{index}] needs one answer")
                continue
            key = answers[0]
            value: Any = when[key]
            if operator == "exists" and key != "answerBoolean":
                self.refuse(link_id, path, f"enableWhen[{index}]: 'exists' takes answerBoolean")
                continue
            if key == "answerDecimal":
                value = _number(value)
            elif key == "answerDate":
                try:
                    value = date.fromisoformat(str(value))
                except ValueError:
                    self.refuse(
                        link_id, path, f"enableWhen[{index}]: answerDate is not a full date"
                    )
                    continue
            elif key not in {"answerBoolean", "answerInteger", "answerString", "answerCoding"}:
                self.refuse(link_id, path, f"enableWhen[{index}]: {key} is not supported")
                continue
            found.append(Condition(str(when.get("question", "")), operator, (key, value)))
        return tuple(found)


def _check_conditions(reader: _Reader, items: tuple[Item, ...]) -> None:
    """Each enableWhen looks at a question that exists, with an answer of its type."""
    everything = {item.link_id: item for top in items for item in top.walk()}
    for item in everything.values():
        for index, condition in enumerate(item.conditions):
            target = everything.get(condition.question)
            key, _value = condition.answer
            if target is None or not target.is_question:
                reader.refuse(
                    item.link_id,
                    item.path,
                    f"enableWhen[{index}] looks at '{condition.question}', which is not a question",
                )
            elif condition.operator != "exists" and key not in _CONDITION_ANSWERS[target.type]:
                reader.refuse(
                    item.link_id,
                    item.path,
                    f"enableWhen[{index}]: {key} does not fit "
                    f"'{target.type}' item '{target.link_id}'",
                )
            elif condition.operator in {">", "<", ">=", "<="} and target.type not in ORDERED_TYPES:
                reader.refuse(
                    item.link_id,
                    item.path,
                    f"enableWhen[{index}]: '{condition.operator}' needs an integer, decimal "
                    "or date question",
                )
            elif condition.question == item.link_id:
                reader.refuse(item.link_id, item.path, f"enableWhen[{index}] looks at itself")


def _pages(items: tuple[Item, ...]) -> tuple[Page, ...]:
    """One page per top-level group; top-level questions next to each other share one."""
    pages: list[Page] = []
    loose: list[Item] = []
    for item in items:
        if item.type == "group":
            if loose:
                pages.append(Page(len(pages), "", tuple(loose)))
                loose = []
            pages.append(Page(len(pages), item.text, (item,)))
        else:
            loose.append(item)
    if loose:
        pages.append(Page(len(pages), "", tuple(loose)))
    return tuple(pages)


def read_questionnaire(resource: Mapping[str, Any], *, check_structure: bool = True) -> Form:
    """The Form a resource describes; raises QuestionnaireRefused with every reason. A stored
    resource was checked when it was loaded (`check_structure=False` skips the FHIR model)."""
    if resource.get("resourceType") != "Questionnaire":
        raise QuestionnaireRefused(["the file is not a FHIR Questionnaire (resourceType)"])
    try:
        if check_structure:
            FhirQuestionnaire.model_validate(dict(resource))
    except ValidationError as problem:
        raise QuestionnaireRefused(
            [
                f"{'.'.join(str(part) for part in error['loc']) or 'resource'}: {error['msg']}"
                for error in problem.errors()
            ]
        ) from None
    reader = _Reader()
    url, version = str(resource.get("url") or ""), str(resource.get("version") or "")
    language = _language(resource.get("language"))
    if not url:
        reader.errors.append("the questionnaire needs a url")
    if not version:
        reader.errors.append("the questionnaire needs a version")
    if language is None:
        reader.errors.append("the questionnaire needs a language: en or es")
    if len(url) > 255 or len(version) > 64:
        reader.errors.append("the url (at most 255 characters) or version (64) is too long")
    if not resource.get("item"):
        reader.errors.append("the questionnaire has no items")
    items = reader.items(list(resource.get("item", [])), "")
    if not reader.errors:
        _check_conditions(reader, items)
    if reader.errors:
        raise QuestionnaireRefused(reader.errors)
    assert language is not None
    by_link_id = {item.link_id: item for top in items for item in top.walk()}
    parents = {
        child.link_id: item.link_id for item in by_link_id.values() for child in item.children
    }
    return Form(
        url=url,
        version=version,
        language=language,
        title=str(resource.get("title") or resource.get("name") or url)[:255],
        status=str(resource.get("status") or ""),
        items=items,
        pages=_pages(items),
        by_link_id=by_link_id,
        parents=parents,
        fields={link_id: f"q{number}" for number, link_id in enumerate(by_link_id)},
    )
