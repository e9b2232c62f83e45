"""Education modules as files: `modules/<key>/en.md` and `es.md`, each YAML front matter
between `---` lines and Markdown sections (`## Title {#section-id}`). Loaded into `Module`s
whose sections carry sanitized HTML; a broken or unsafe file is refused with its name, the
line and the problem (the format: the content spec of issue 5)."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from education.front_matter import (
    Audience,
    FrontMatter,
    ParsedFrontMatter,
    Question,
    Source,
    parse_front_matter,
)
from education.rendering import (
    KEY,
    Finding,
    Section,
    inspect_body,
    parse_sections,
    render_markdown,
)

__all__ = [
    "LANGUAGES",
    "MODULE_DIR",
    "Audience",
    "ContentError",
    "Module",
    "ModuleLibrary",
    "ModuleText",
    "Problem",
    "Question",
    "Section",
    "Source",
    "load_library",
    "load_module",
    "read_library",
    "read_module",
    "render_markdown",
    "shipped_modules",
]

MODULE_DIR = Path(__file__).parent / "modules"
LANGUAGES = ("en", "es")


# --- problems ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a module file: `file` is relative to the modules folder."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}, line {self.line}: {self.message}"


def sort_problems(problems: Sequence[Problem]) -> list[Problem]:
    return sorted(set(problems), key=lambda p: (p.file, p.line or 0, p.message))


class ContentError(ValueError):
    """A module (or the library) is wrong; the message has one line per problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(sort_problems(problems))
        super().__init__("\n".join(str(problem) for problem in self.problems))


# --- what the portal uses ------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleText:
    """A module in one language. Sources and reading time may differ by language (a source
    in Spanish, a longer text), so they live here."""

    language: str
    title: str
    summary: str
    reading_minutes: int
    sources: tuple[Source, ...]
    sections: tuple[Section, ...]
    questions: tuple[Question, ...]

    def section(self, section_id: str) -> Section | None:
        return next((s for s in self.sections if s.id == section_id), None)

    @property
    def plain_text(self) -> str:
        return "\n".join(section.plain_text for section in self.sections)


@dataclass(frozen=True)
class Module:
    key: str
    version: int
    significant_since: int  # completions of older versions are asked again
    audience: Audience
    therapies: tuple[str, ...]  # () = every therapy
    core: bool  # offered to everyone whatever their state funds
    en: ModuleText
    es: ModuleText

    def text(self, language: str) -> ModuleText:
        return self.es if language == "es" else self.en

    @property
    def section_ids(self) -> tuple[str, ...]:
        return tuple(section.id for section in self.en.sections)

    def for_therapy(self, therapy: str | None) -> bool:
        return not self.therapies or therapy in self.therapies

    def for_caregivers(self) -> bool:
        return self.audience is not Audience.PATIENT

    def for_patients(self) -> bool:
        return self.audience is not Audience.CAREGIVER


@dataclass(frozen=True)
class ModuleLibrary:
    modules: dict[str, Module]  # by key, in key order

    def get(self, key: str) -> Module | None:
        return self.modules.get(key)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.modules.values())

    def __len__(self) -> int:
        return len(self.modules)


# --- files, modules and the library --------------------------------------------------------


@dataclass(frozen=True)
class _ParsedFile:
    front: FrontMatter
    text: ModuleText
    field_lines: dict[str, int]
    question_lines: dict[str, int]
    section_lines: dict[str, int]


def parse_module_file(
    text: str, *, source: str, language: str
) -> tuple[_ParsedFile | None, list[Problem]]:
    """One language file of a module; `source` names it in problems."""
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "---":
        return None, [Problem(source, 1, "the file starts with front matter between --- lines")]
    closing = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if closing is None:
        return None, [Problem(source, 1, "the front matter has no closing --- line")]
    parsed: ParsedFrontMatter = parse_front_matter("\n".join(lines[1:closing]), first_line=2)
    body, body_line = "\n".join(lines[closing + 1 :]), closing + 2
    sections, section_lines, section_findings = parse_sections(body, first_line=body_line)
    findings: list[Finding] = [
        *parsed.findings,
        *inspect_body(body, first_line=body_line),
        *section_findings,
    ]
    if parsed.front is None or findings:
        return None, [Problem(source, line, message) for line, message in findings]
    front = parsed.front
    module_text = ModuleText(
        language=language,
        title=front.title,
        summary=front.summary,
        reading_minutes=front.reading_minutes,
        sources=front.sources,
        sections=tuple(sections),
        questions=front.questions,
    )
    return _ParsedFile(
        front, module_text, parsed.field_lines, parsed.question_lines, section_lines
    ), []


_SHARED_FIELDS = ("key", "version", "significant_since", "audience", "therapies", "core")


def _shown(value: object) -> str:
    """A front matter value as it is written in the file."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_shown(item) for item in value) + "]"
    return str(value)


def _compare(en: _ParsedFile, es: _ParsedFile, *, source: str) -> list[Problem]:
    """What must be the same in both languages; problems point at the Spanish file."""
    problems = []
    for name in _SHARED_FIELDS:
        mine, theirs = getattr(es.front, name), getattr(en.front, name)
        if mine != theirs:
            message = f"{name} is {_shown(mine)}, en.md has {_shown(theirs)}"
            problems.append(Problem(source, es.field_lines.get(name), message))
    en_ids = [section.id for section in en.text.sections]
    es_ids = [section.id for section in es.text.sections]
    for section_id in en_ids:
        if section_id not in es_ids:
            problems.append(
                Problem(source, None, f"section '{section_id}' is missing (en.md has it)")
            )
    for section_id in es_ids:
        if section_id not in en_ids:
            at = es.section_lines.get(section_id)
            problems.append(Problem(source, at, f"section '{section_id}' is not in en.md"))
    if set(en_ids) == set(es_ids) and en_ids != es_ids:
        message = f"the sections are in another order than in en.md ({', '.join(en_ids)})"
        problems.append(Problem(source, None, message))
    en_questions = {question.id: question for question in en.front.questions}
    es_questions = {question.id: question for question in es.front.questions}
    for question_id in en_questions.keys() - es_questions.keys():
        message = f"question '{question_id}' is missing (en.md has it)"
        problems.append(Problem(source, es.field_lines.get("questions"), message))
    for question_id, question in es_questions.items():
        at = es.question_lines.get(question_id)
        original = en_questions.get(question_id)
        if original is None:
            problems.append(Problem(source, at, f"question '{question_id}' is not in en.md"))
            continue
        if len(question.choices) != len(original.choices):
            message = (
                f"question '{question_id}' has {len(question.choices)} choices, "
                f"en.md has {len(original.choices)}"
            )
            problems.append(Problem(source, at, message))
        if question.answer != original.answer:
            message = (
                f"question '{question_id}' has answer {question.answer}, "
                f"en.md has answer {original.answer}"
            )
            problems.append(Problem(source, at, message))
    return problems


def read_module(folder: Path) -> tuple[Module | None, list[Problem]]:
    """A module folder: the module, or None and every problem found."""
    name = folder.name
    problems: list[Problem] = []
    if not KEY.match(name):
        problems.append(Problem(name, None, "a module folder's name is lowercase-with-dashes"))
    expected = {f"{language}.md" for language in LANGUAGES}
    for path in sorted(folder.iterdir()):
        if path.name not in expected and not path.name.startswith("."):
            message = "unexpected file: a module folder holds en.md and es.md only"
            problems.append(Problem(f"{name}/{path.name}", None, message))
    parsed: dict[str, _ParsedFile] = {}
    for language in LANGUAGES:
        source = f"{name}/{language}.md"
        path = folder / f"{language}.md"
        if not path.is_file():
            message = "the file is missing (every module has en.md and es.md)"
            problems.append(Problem(source, None, message))
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            problems.append(Problem(source, None, f"not UTF-8 text ({error.reason})"))
            continue
        result, file_problems = parse_module_file(text, source=source, language=language)
        problems += file_problems
        if result is None:
            continue
        if result.front.key != name:
            message = f"key '{result.front.key}' does not match the folder name '{name}'"
            problems.append(Problem(source, result.field_lines.get("key"), message))
        parsed[language] = result
    if "en" in parsed and "es" in parsed:
        problems += _compare(parsed["en"], parsed["es"], source=f"{name}/es.md")
    if problems or len(parsed) != len(LANGUAGES):
        return None, sort_problems(problems)
    front = parsed["en"].front
    module = Module(
        key=front.key,
        version=front.version,
        significant_since=front.significant_since,
        audience=front.audience,
        therapies=front.therapies,
        core=front.core,
        en=parsed["en"].text,
        es=parsed["es"].text,
    )
    return module, []


def load_module(folder: Path) -> Module:
    """Load one module folder; raise ContentError naming every problem."""
    module, problems = read_module(folder)
    if module is None:
        raise ContentError(problems)
    return module


def read_library(directory: Path = MODULE_DIR) -> tuple[list[Module], list[Problem]]:
    """Every module folder in `directory`: the good modules and the problems of the others."""
    if not directory.is_dir():
        return [], [Problem(str(directory), None, "the modules folder does not exist")]
    modules: list[Module] = []
    problems: list[Problem] = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith((".", "_")) or path.name.lower().startswith("readme"):
            continue
        if not path.is_dir():
            message = "a module is a folder <key>/ holding en.md and es.md"
            problems.append(Problem(path.name, None, message))
            continue
        module, module_problems = read_module(path)
        problems += module_problems
        if module is not None:
            modules.append(module)
    return modules, sort_problems(problems)


def load_library(directory: Path = MODULE_DIR) -> ModuleLibrary:
    """Load every module; raise ContentError naming every problem (readability is the
    content check's business, not the loader's)."""
    modules, problems = read_library(directory)
    if problems:
        raise ContentError(problems)
    return ModuleLibrary(modules={module.key: module for module in modules})


@cache
def shipped_modules() -> ModuleLibrary:
    """The modules shipped in `education/modules/` (read once per process)."""
    return load_library()
