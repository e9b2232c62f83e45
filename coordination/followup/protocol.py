"""Follow-up protocols: versioned YAML data (`coordination/followup/protocols/*.yaml`), one
per therapy, loaded and validated at start. A broken file is refused with its name, line and
problem."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.yaml_lines import LineLoader, line_of, strip_lines

PROTOCOL_DIR = Path(__file__).parent / "protocols"
FIFTEEN_YEARS_DAYS = 15 * 365 + 4


class Assessment(enum.StrEnum):
    """What a visit assesses; each maps to fields of the outcome form."""

    CBC = "cbc"
    HEMOGLOBIN = "hemoglobin"
    FETAL_HEMOGLOBIN = "fetal_hemoglobin"
    INTEGRATION_SITE = "integration_site"
    PRO_QUESTIONNAIRE = "pro_questionnaire"
    SAFETY_SCREEN = "safety_screen"


class _VisitProblem(ValueError):
    """A problem across visits (repeated key, order, overlap): points at visit `index`."""

    def __init__(self, message: str, *, index: int) -> None:
        super().__init__(message)
        self.index = index


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    en: str = Field(min_length=1, max_length=80)
    es: str = Field(min_length=1, max_length=80)

    def text(self, language: str) -> str:
        return self.es if language == "es" else self.en


class ReminderKind(enum.StrEnum):
    """What a reminder is about; each kind has its own text."""

    WINDOW_OPENS = "window_opens"  # a visit's window opens soon and nothing is booked yet
    APPOINTMENT = "appointment"  # a booked appointment comes up
    OVERDUE = "overdue"  # the window closed without the visit (an urgent notice)


class ReminderRule(BaseModel):
    """When to text about a visit: `days_before` the window opens or the appointment, or
    the morning after the window closed (overdue)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,15}$")
    kind: ReminderKind
    days_before: int = Field(default=0, ge=0, le=60)

    @model_validator(mode="after")
    def _overdue_has_no_lead(self) -> ReminderRule:
        if self.kind is ReminderKind.OVERDUE and self.days_before:
            raise ValueError("an overdue reminder goes after the window closed: no days_before")
        return self


DEFAULT_REMINDERS = (
    ReminderRule(key="window-14d", kind=ReminderKind.WINDOW_OPENS, days_before=14),
    ReminderRule(key="appt-3d", kind=ReminderKind.APPOINTMENT, days_before=3),
    ReminderRule(key="appt-1d", kind=ReminderKind.APPOINTMENT, days_before=1),
    ReminderRule(key="overdue", kind=ReminderKind.OVERDUE),
)


# A questionnaire is named by its canonical url (the version loaded newest is the one asked).
QuestionnaireUrl = Annotated[str, Field(pattern=r"^https?://[^\s|]+$", max_length=255)]


def _distinct_urls(urls: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(urls)) != len(urls):
        raise ValueError("a questionnaire is listed twice")
    return urls


def _distinct_rules(rules: tuple[ReminderRule, ...] | None) -> tuple[ReminderRule, ...] | None:
    if rules is not None and len({rule.key for rule in rules}) != len(rules):
        raise ValueError("a reminder key is used twice")
    return rules


class ProtocolVisit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    label: Label
    offset_days: int = Field(ge=0, le=FIFTEEN_YEARS_DAYS + 366)
    window_before_days: int = Field(ge=0, le=120)
    window_after_days: int = Field(ge=0, le=120)
    assessments: tuple[Assessment, ...] = Field(min_length=1)
    # The protocol's reminders apply unless a visit lists its own ([] for none).
    reminders: tuple[ReminderRule, ...] | None = None
    # The questionnaires the patient answers for this visit (a visit assessing
    # pro_questionnaire). Whether each is loaded is checked where it is used, not here: a
    # program may load it after the protocol ships.
    questionnaires: tuple[QuestionnaireUrl, ...] = ()

    _rules = field_validator("reminders")(_distinct_rules)
    _urls = field_validator("questionnaires")(_distinct_urls)

    @model_validator(mode="after")
    def _questionnaires_need_the_assessment(self) -> ProtocolVisit:
        if self.questionnaires and Assessment.PRO_QUESTIONNAIRE not in self.assessments:
            raise ValueError("a visit with questionnaires must assess pro_questionnaire")
        return self

    @field_validator("assessments")
    @classmethod
    def _no_repeats(cls, value: tuple[Assessment, ...]) -> tuple[Assessment, ...]:
        if len(set(value)) != len(value):
            raise ValueError("an assessment is listed twice")
        return value

    def window(self, anchor: date) -> tuple[date, date, date]:
        """(window opens, target day, window closes) for an infusion on `anchor`."""
        target = anchor + timedelta(days=self.offset_days)
        return (
            target - timedelta(days=self.window_before_days),
            target,
            target + timedelta(days=self.window_after_days),
        )


class BeforeInfusion(BaseModel):
    """The CIBMTR baseline: questionnaires answered before the infusion. It is no visit
    (a patient has no visits until the infusion date is known): it is due from enrolment
    until the infusion day, and a response is its own record of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    label: Label = Label(en="Before your infusion", es="Antes de su infusión")
    questionnaires: tuple[QuestionnaireUrl, ...] = Field(min_length=1)

    _urls = field_validator("questionnaires")(_distinct_urls)


class Protocol(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    therapy: str = Field(pattern=r"^[a-z0-9-]{1,32}$")
    version: int = Field(ge=1)
    title: Label
    visits: tuple[ProtocolVisit, ...] = Field(min_length=1)
    reminders: tuple[ReminderRule, ...] = DEFAULT_REMINDERS
    before_infusion: BeforeInfusion | None = None

    _rules = field_validator("reminders")(_distinct_rules)

    @model_validator(mode="after")
    def _coherent(self) -> Protocol:
        seen: set[str] = set()
        for index, visit in enumerate(self.visits):
            if visit.key in seen:
                raise _VisitProblem(f"visit key {visit.key} is used twice", index=index)
            seen.add(visit.key)
        for index, (earlier, later) in enumerate(itertools.pairwise(self.visits), start=1):
            if later.offset_days < earlier.offset_days:
                raise _VisitProblem("visits must be listed in order of offset_days", index=index)
            closes = earlier.offset_days + earlier.window_after_days
            opens = later.offset_days - later.window_before_days
            if opens <= closes:
                raise _VisitProblem(
                    f"the windows of {earlier.key} and {later.key} overlap ({earlier.key} "
                    f"closes on day {closes}, {later.key} opens on day {opens}); "
                    "a day may belong to one visit only",
                    index=index,
                )
        return self

    def visit(self, key: str) -> ProtocolVisit | None:
        return next((visit for visit in self.visits if visit.key == key), None)

    def questionnaire_urls(self) -> set[str]:
        """Every questionnaire the protocol asks for, before infusion and at its visits."""
        urls = set(self.before_infusion.questionnaires) if self.before_infusion else set()
        for visit in self.visits:
            urls.update(visit.questionnaires)
        return urls

    def reminder_rules(self, visit_key: str) -> tuple[ReminderRule, ...]:
        """The reminders of one visit: its own list, else the protocol's."""
        visit = self.visit(visit_key)
        if visit is not None and visit.reminders is not None:
            return visit.reminders
        return self.reminders


class ProtocolError(ValueError):
    """A protocol file is wrong; the message names the file, the line and the problem."""


def parse_protocol(text: str, *, source: str) -> Protocol:
    """Parse and validate one protocol file's text; raise ProtocolError naming `source`."""
    try:
        raw = yaml.load(text, Loader=LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line = mark.line + 1 if mark is not None else "?"
        raise ProtocolError(f"{source}, line {line}: not valid YAML: {error.problem}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"{source}, line 1: a protocol is a mapping with therapy, version, ...")
    try:
        return Protocol.model_validate(strip_lines(raw))
    except ValidationError as error:
        problems = []
        for item in error.errors():
            location = tuple(item["loc"])
            cause = item.get("ctx", {}).get("error")
            if isinstance(cause, _VisitProblem):
                location = ("visits", cause.index)
            where = ".".join(str(part) for part in location) or "(file)"
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{source}, line {line_of(raw, location) or '?'}: {where}: {message}")
        raise ProtocolError("\n".join(problems)) from None


@dataclass(frozen=True)
class ProtocolLibrary:
    """Every protocol version, by therapy code; the newest applies to new patients."""

    versions: dict[str, dict[int, Protocol]]

    def current(self, therapy: str) -> Protocol | None:
        versions = self.versions.get(therapy)
        return versions[max(versions)] if versions else None

    def get(self, therapy: str, version: int) -> Protocol | None:
        return self.versions.get(therapy, {}).get(version)

    def version_or_current(self, therapy: str, version: int | None) -> Protocol | None:
        """The protocol a visit or plan was made from (`version`), or the therapy's current
        one when that version is gone (or none is known): the one lookup every reader of a
        visit's protocol makes."""
        found = self.get(therapy, version) if version is not None else None
        return found or self.current(therapy)

    def visit_of(self, therapy: str, version: int | None, key: str) -> ProtocolVisit | None:
        """A visit's definition (label, window, assessments) from its protocol, or None when
        the protocol no longer has that visit."""
        protocol = self.version_or_current(therapy, version)
        return protocol.visit(key) if protocol is not None else None


def load_protocols(directory: Path = PROTOCOL_DIR) -> ProtocolLibrary:
    """Read every `*.yaml` in `directory`. Several versions of a therapy's protocol may be
    kept side by side (e.g. `lyfgenia.yaml` and `lyfgenia-v2.yaml`)."""
    versions: dict[str, dict[int, Protocol]] = {}
    sources: dict[tuple[str, int], str] = {}
    for path in sorted(directory.glob("*.yaml")):
        protocol = parse_protocol(path.read_text(encoding="utf-8"), source=path.name)
        therapy_versions = versions.setdefault(protocol.therapy, {})
        if protocol.version in therapy_versions:
            raise ProtocolError(
                f"{path.name}, line 1: {protocol.therapy} version {protocol.version} "
                f"is defined twice (also in {sources[protocol.therapy, protocol.version]})"
            )
        therapy_versions[protocol.version] = protocol
        sources[protocol.therapy, protocol.version] = path.name
    return ProtocolLibrary(versions=versions)


@cache
def shipped_protocols() -> ProtocolLibrary:
    """The protocols shipped in `coordination/followup/protocols/` (read once per process)."""
    return load_protocols()
