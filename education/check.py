"""The content check (`cgt-access content check`, run by `make test`): every module file's
problems, plus readability, which the loader leaves out (textstat takes a second to load
its pronunciation dictionary, which the web process has no use for)."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from textstat.textstat import textstatistics

from education.content import (
    MODULE_DIR,
    Module,
    Problem,
    read_library,
    sort_problems,
)

EN_MAX_GRADE = 8.0  # Flesch-Kincaid: written for teenagers and parents

# One instance per language: textstat keeps the language on the instance.
_ENGLISH = textstatistics()
_ENGLISH.set_lang("en_US")
_SPANISH = textstatistics()
_SPANISH.set_lang("es")

_ENDS_SENTENCE = re.compile(r"[.!?][\"')\]»”’]*$")


def readable_text(plain_text: str) -> str:
    """The text as a reader takes it in: each block (paragraph, list item, sub-heading,
    table cell) is its own sentence. textstat only ends sentences at . ! ?, so a list
    without full stops would otherwise count as one long sentence."""
    lines = (line.strip() for line in plain_text.split("\n"))
    return " ".join(line if _ENDS_SENTENCE.search(line) else f"{line}." for line in lines if line)


def english_grade(plain_text: str) -> float:
    """Flesch-Kincaid grade level (lower is easier)."""
    return round(float(_ENGLISH.flesch_kincaid_grade(readable_text(plain_text))), 1)


def spanish_score(plain_text: str) -> float:
    """Fernández-Huerta reading ease (higher is easier; above 60 is plain)."""
    return round(float(_SPANISH.fernandez_huerta(readable_text(plain_text))), 1)


@dataclass(frozen=True)
class Readability:
    en_grade: float
    es_score: float
    hardest_section: tuple[str, float]  # the English section with the highest grade


def measure(module: Module) -> Readability:
    hardest = max(
        ((section.id, english_grade(section.plain_text)) for section in module.en.sections),
        key=lambda item: item[1],
    )
    return Readability(
        en_grade=english_grade(module.en.plain_text),
        es_score=spanish_score(module.es.plain_text),
        hardest_section=hardest,
    )


@dataclass(frozen=True)
class ContentCheck:
    modules: tuple[Module, ...]  # those that loaded (they may still read above grade 8)
    readability: dict[str, Readability]  # by module key
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _therapy_problems(module: Module, known: Collection[str]) -> list[Problem]:
    return [
        Problem(
            f"{module.key}/en.md",
            None,
            f"therapy '{therapy}' is not known (known: {', '.join(sorted(known))})",
        )
        for therapy in module.therapies
        if therapy not in known
    ]


def _readability_problem(module: Module, found: Readability) -> Problem:
    section, grade = found.hardest_section
    return Problem(
        f"{module.key}/en.md",
        None,
        f"Flesch-Kincaid grade {found.en_grade} is above {EN_MAX_GRADE} "
        f"(hardest section: '{section}', grade {grade}); use shorter sentences and words",
    )


def check_library(
    directory: Path = MODULE_DIR, *, known_therapies: Collection[str] | None = None
) -> ContentCheck:
    """Check every module in `directory`; `known_therapies` (therapy codes), when given,
    refuses a module aimed at a therapy nobody has (a typo would hide it from everyone)."""
    modules, problems = read_library(directory)
    readability: dict[str, Readability] = {}
    for module in modules:
        found = measure(module)
        readability[module.key] = found
        if found.en_grade > EN_MAX_GRADE:
            problems.append(_readability_problem(module, found))
        if known_therapies is not None:
            problems += _therapy_problems(module, known_therapies)
    return ContentCheck(
        modules=tuple(modules), readability=readability, problems=tuple(sort_problems(problems))
    )
