"""The code lists that turn a Medicaid claim line into the facts reports read: a
vaso-occlusive crisis, a hospital stay, an emergency-department visit. They are data
(`reporting/codes/*.yaml`), validated at start like the follow-up protocols: a broken file is
refused with its name, line and problem.

Each file sets one flag of `ClaimLine` and says what sets it: diagnosis codes (ICD-10-CM,
with or without the dot), revenue codes (four digits), places of service (two digits) or the
TAF file a line comes from (IP, OT). A line has the flag when any of its values is listed.
Changing a list does not change loaded lines by itself: `cgt-access claims rederive` works
their flags out again (`reporting.claims.rederive_flags`)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.yaml_lines import LineLoader, line_of, strip_lines

CODES_DIR = Path(__file__).parent / "codes"

Flag = Literal["is_vaso_occlusive", "is_inpatient_stay", "is_ed_visit"]
FLAGS: tuple[Flag, ...] = ("is_vaso_occlusive", "is_inpatient_stay", "is_ed_visit")
MatchKind = Literal["diagnosis", "revenue_code", "place_of_service", "file_type"]

# ICD-10-CM: a letter, a digit, then one to five letters or digits (3 to 7 characters); the
# dot after the third character is optional in claims data.
_ICD10CM = re.compile(r"[A-Z][0-9][0-9A-Z]{1,5}")
_REVENUE = re.compile(r"[0-9]{4}")
_PLACE = re.compile(r"[0-9]{2}")
FILE_TYPES = ("IP", "OT")


def normalize_diagnosis(text: str) -> str | None:
    """An ICD-10-CM code in its dotted form (`D57.00`) from `D57.00`, `d5700` or ` D5700 `;
    None when it is not shaped like one."""
    plain = text.strip().upper().replace(".", "", 1)
    if not _ICD10CM.fullmatch(plain):
        return None
    return plain if len(plain) == 3 else f"{plain[:3]}.{plain[3:]}"


def normalize_revenue_code(text: str) -> str | None:
    """A revenue code as four digits (`0450`; `450` as some extracts drop the zero)."""
    plain = text.strip()
    if len(plain) == 3:
        plain = "0" + plain
    return plain if _REVENUE.fullmatch(plain) else None


def normalize_place_of_service(text: str) -> str | None:
    """A place-of-service code as two digits (`23`; `9` becomes `09`)."""
    plain = text.strip()
    if len(plain) == 1:
        plain = "0" + plain
    return plain if _PLACE.fullmatch(plain) else None


def normalize_file_type(text: str) -> str | None:
    """A TAF file type: IP (inpatient) or OT (other services)."""
    plain = text.strip().upper()
    return plain if plain in FILE_TYPES else None


_NORMALIZERS: dict[str, Callable[[str], str | None]] = {
    "diagnosis": normalize_diagnosis,
    "revenue_code": normalize_revenue_code,
    "place_of_service": normalize_place_of_service,
    "file_type": normalize_file_type,
}


class _Label(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    en: str = Field(min_length=1, max_length=120)
    es: str = Field(min_length=1, max_length=120)


class _Code(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(min_length=1, max_length=10)
    display: str = Field(min_length=1, max_length=200)

    @field_validator("code", mode="before")
    @classmethod
    def _text(cls, value: object) -> object:
        # YAML reads 23 or 0450 as numbers: ask for quotes rather than guess the digits.
        if not isinstance(value, str):
            raise ValueError('write the code in quotes (e.g. "0450"), as text')
        return value


class CodeListFile(BaseModel):
    """One file of `reporting/codes/`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    flag: Flag
    title: _Label
    source: str = Field(min_length=1, max_length=300)
    match: dict[MatchKind, list[_Code]] = Field(min_length=1)


_WHAT = {
    "diagnosis": "an ICD-10-CM code (a letter, a digit, then 1 to 5 letters or digits)",
    "revenue_code": "a revenue code (four digits)",
    "place_of_service": "a place-of-service code (two digits)",
    "file_type": "a TAF file type (IP or OT)",
}


def _code_problems(parsed: CodeListFile) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Each listed code that is not a code of its kind, or listed twice (where, problem)."""
    for kind, codes in parsed.match.items():
        if not codes:
            yield ("match", kind), "list at least one code"
        seen: set[str] = set()
        for index, entry in enumerate(codes):
            normal = _NORMALIZERS[kind](entry.code)
            if normal is None:
                yield ("match", kind, index), f"{entry.code!r} is not {_WHAT[kind]}"
            elif normal in seen:
                yield ("match", kind, index), f"{entry.code!r} is listed twice"
            else:
                seen.add(normal)


class CodeListError(ValueError):
    """A code list file is wrong; the message names the file, the line and the problem."""


def parse_code_list(text: str, *, source: str) -> CodeListFile:
    """Parse and validate one code list file's text; raise CodeListError naming `source`."""
    try:
        raw = yaml.load(text, Loader=LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line = mark.line + 1 if mark is not None else "?"
        raise CodeListError(f"{source}, line {line}: not valid YAML: {error.problem}") from None
    if not isinstance(raw, dict):
        raise CodeListError(f"{source}, line 1: a code list is a mapping with key, flag, match")
    try:
        parsed = CodeListFile.model_validate(strip_lines(raw))
    except ValidationError as error:
        found = [
            (tuple(item["loc"]), item["msg"].removeprefix("Value error, "))
            for item in error.errors()
        ]
    else:
        found = list(_code_problems(parsed))
        if not found:
            return parsed
    problems = []
    for location, message in found:
        where = ".".join(str(part) for part in location) or "(file)"
        problems.append(f"{source}, line {line_of(raw, location) or '?'}: {where}: {message}")
    raise CodeListError("\n".join(problems))


FlagSet = tuple[bool, bool, bool]  # is_vaso_occlusive, is_inpatient_stay, is_ed_visit


@dataclass(frozen=True)
class ClaimCodes:
    """Every flag's codes, normalized, ready to flag claim lines."""

    # flag -> match kind -> codes (normalized as the claims loader normalizes a line's values)
    codes: dict[str, dict[str, frozenset[str]]]
    files: tuple[CodeListFile, ...]
    digest: str  # of the files' text: which lists flagged a line

    def flags(
        self,
        *,
        file_type: str,
        diagnoses: Iterable[str],
        revenue_code: str | None,
        place_of_service: str | None,
    ) -> FlagSet:
        """The three flags of a line whose values are already normalized."""
        values = {
            "file_type": (file_type,),
            "diagnosis": tuple(diagnoses),
            "revenue_code": (revenue_code,) if revenue_code else (),
            "place_of_service": (place_of_service,) if place_of_service else (),
        }
        result = []
        for flag in FLAGS:
            wanted = self.codes.get(flag, {})
            result.append(
                any(value in listed for kind, listed in wanted.items() for value in values[kind])
            )
        return (result[0], result[1], result[2])


def load_code_lists(directory: Path = CODES_DIR) -> ClaimCodes:
    """Read every `*.yaml` in `directory`: each flag must be set by exactly one file."""
    files: list[CodeListFile] = []
    sources: dict[str, str] = {}
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        digest.update(path.name.encode() + b"\0" + text.encode() + b"\0")
        parsed = parse_code_list(text, source=path.name)
        if parsed.flag in sources:
            raise CodeListError(
                f"{path.name}, line 1: the flag {parsed.flag} is already set by "
                f"{sources[parsed.flag]} (one file per flag)"
            )
        sources[parsed.flag] = path.name
        files.append(parsed)
    missing = [flag for flag in FLAGS if flag not in sources]
    if missing:
        raise CodeListError(
            f"{directory.name}/: no code list sets {', '.join(missing)} (one file per flag)"
        )
    codes: dict[str, dict[str, frozenset[str]]] = {}
    for parsed in files:
        codes[parsed.flag] = {
            kind: frozenset(
                normal
                for entry in entries
                if (normal := _NORMALIZERS[kind](entry.code)) is not None
            )
            for kind, entries in parsed.match.items()
        }
    return ClaimCodes(codes=codes, files=tuple(files), digest=digest.hexdigest())


@cache
def shipped_code_lists() -> ClaimCodes:
    """The code lists shipped in `reporting/codes/` (read once per process)."""
    return load_code_lists()
