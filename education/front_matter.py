"""Module front matter: the YAML between the `---` lines of a module file, validated with
pydantic; problems point at the file's line (as coordination/protocol.py does)."""

from __future__ import annotations

import enum
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core.yaml_lines import LineLoader, line_of, strip_lines
from education.rendering import KEY_PATTERN, RAW_TAG, Finding, tag_of


def _no_markup(value: str) -> str:
    # Front matter texts are shown as plain (escaped) text: markup would show as characters.
    if RAW_TAG.search(value):
        raise ValueError(f"raw HTML is not allowed: {tag_of(value)}")
    return value


PlainText = Annotated[str, Field(min_length=1), AfterValidator(_no_markup)]
TherapyCode = Annotated[str, Field(pattern=r"^[a-z0-9-]{1,32}$")]


class Audience(enum.StrEnum):
    PATIENT = "patient"
    CAREGIVER = "caregiver"
    BOTH = "both"


class _ItemProblem(ValueError):
    """A problem across items of a list (a repeated id): points at `location`."""

    def __init__(self, message: str, *, location: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.location = location


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    title: PlainText = Field(max_length=200)
    url: str = Field(max_length=500)

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme != "https" or not parts.netloc or re.search(r"\s", value):
            raise ValueError(f"a source URL starts with https:// (got {value[:60]!r})")
        return value


class Question(BaseModel):
    """A knowledge-check question; `answer` is the 0-based index of the right choice."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=KEY_PATTERN, max_length=32)
    text: PlainText = Field(max_length=300)
    choices: tuple[Annotated[PlainText, Field(max_length=200)], ...] = Field(
        min_length=2, max_length=6
    )
    answer: int = Field(strict=True)
    explanation: PlainText = Field(max_length=600)

    @model_validator(mode="after")
    def _answer_is_a_choice(self) -> Question:
        if not 0 <= self.answer < len(self.choices):
            raise ValueError(
                f"answer {self.answer} is not one of the {len(self.choices)} choices "
                f"(counted from 0: 0 to {len(self.choices) - 1})"
            )
        if len(set(self.choices)) != len(self.choices):
            raise ValueError("two choices are the same")
        return self


class FrontMatter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(pattern=KEY_PATTERN, max_length=64)
    version: int = Field(ge=1, strict=True)
    significant_since: int = Field(ge=1, strict=True)
    title: PlainText = Field(max_length=120)
    summary: PlainText = Field(max_length=300)
    audience: Audience
    therapies: tuple[TherapyCode, ...]
    core: bool = Field(strict=True)
    reading_minutes: int = Field(ge=1, le=60, strict=True)
    sources: tuple[Source, ...] = Field(min_length=1)
    questions: tuple[Question, ...] = Field(min_length=2, max_length=5)

    @model_validator(mode="after")
    def _coherent(self) -> FrontMatter:
        if self.significant_since > self.version:
            raise _ItemProblem(
                f"significant_since ({self.significant_since}) cannot be after version "
                f"({self.version})",
                location=("significant_since",),
            )
        if len(set(self.therapies)) != len(self.therapies):
            raise _ItemProblem("a therapy is listed twice", location=("therapies",))
        seen: set[str] = set()
        for index, question in enumerate(self.questions):
            if question.id in seen:
                raise _ItemProblem(
                    f"question id {question.id} is used twice", location=("questions", index)
                )
            seen.add(question.id)
        return self


_FRIENDLIER = {"Field required": "is missing", "Extra inputs are not permitted": "is not a field"}


def _where(raw: Any, location: Sequence[int | str]) -> str:
    """`questions.q2.answer` rather than `questions.1.answer`: items by their id."""
    parts, node = [], raw
    for part in location:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
        item_id = node.get("id") if isinstance(node, dict) and isinstance(part, int) else None
        parts.append(str(item_id) if isinstance(item_id, str) else str(part))
    return ".".join(parts) or "front matter"


@dataclass(frozen=True)
class ParsedFrontMatter:
    front: FrontMatter | None  # None when there are findings
    findings: list[Finding]
    field_lines: dict[str, int]  # top-level key -> file line
    question_lines: dict[str, int]  # question id -> file line


def parse_front_matter(text: str, *, first_line: int) -> ParsedFrontMatter:
    """Validate the YAML `text`, which starts on line `first_line` of its file."""
    # Blank lines in front make YAML's line numbers the file's (in its own messages too).
    padded = "\n" * (first_line - 1) + text
    try:
        raw = yaml.load(padded, Loader=LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        at = mark.line + 1 if mark is not None else None
        return ParsedFrontMatter(None, [Finding(at, f"not valid YAML: {error.problem}")], {}, {})
    if not isinstance(raw, dict):
        message = "the front matter is a mapping with key, version, title, ..."
        return ParsedFrontMatter(None, [Finding(first_line, message)], {}, {})
    field_lines: dict[str, int] = dict(raw["__lines__"])
    try:
        front = FrontMatter.model_validate(strip_lines(raw))
    except ValidationError as error:
        return ParsedFrontMatter(None, _findings(raw, error), field_lines, {})
    question_lines = {
        question.id: line_of(raw, ("questions", index)) or first_line
        for index, question in enumerate(front.questions)
    }
    return ParsedFrontMatter(front, [], field_lines, question_lines)


def _findings(raw: dict[str, Any], error: ValidationError) -> list[Finding]:
    errors = error.errors()
    findings = []
    for item in errors:
        location: tuple[int | str, ...] = tuple(item["loc"])
        # A list that is too short because one of its items failed says nothing more.
        if item["type"] == "too_short" and any(
            len(other["loc"]) > len(location) and tuple(other["loc"][: len(location)]) == location
            for other in errors
        ):
            continue
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, _ItemProblem):
            location = cause.location
        message = item["msg"].removeprefix("Value error, ")
        message = _FRIENDLIER.get(message, message)
        findings.append(Finding(line_of(raw, location), f"{_where(raw, location)}: {message}"))
    return findings
