"""Outcomes-based agreements: versioned YAML data (`reporting/agreements/*.yaml`), one file per
agreement and version, loaded and validated at start like the follow-up protocols. A broken
file is refused with its name, line and problem (`cgt-access agreements check`).

An agreement says who pays whom for what: the manufacturer, the therapy, the states and the
infusion dates it covers (its population), the price basis, and its outcome measures. Each
measure has a window in months after the infusion, a rule (an observation threshold, or no
event of a kind in the window) and the rebate owed for a patient who does not meet it. The
evaluation is `reporting.outcomes`; this module only reads and checks the terms.

The shipped agreements are ILLUSTRATIVE: real terms are confidential. Every page and export
that uses an agreement with `illustrative: true` says so."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from coordination.followup.protocol import shipped_protocols
from core.yaml_lines import LineLoader, line_of, strip_lines

AGREEMENT_DIR = Path(__file__).parent / "agreements"
# Fifteen years of follow-up: no window reaches beyond it.
MAX_MONTH = 180
STATE_CODE = r"^[A-Z]{2}$"


class Text(BaseModel):
    """Words in English and Spanish."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    en: str = Field(min_length=1, max_length=600)
    es: str = Field(min_length=1, max_length=600)

    def text(self, language: str) -> str:
        return self.es if language == "es" else self.en


class EventKind(enum.StrEnum):
    """What an event rule counts (see `reporting.outcomes.EVENT_SOURCES` for where each
    comes from: claim lines and confirmed patient reports)."""

    VOC_INPATIENT_STAY = "voc_inpatient_stay"  # a hospital stay for a vaso-occlusive crisis
    VOC_ANY = "voc_any"  # a vaso-occlusive crisis in any setting, or reported by the patient
    INPATIENT_STAY = "inpatient_stay"  # any hospital stay
    ED_VISIT = "ed_visit"  # an emergency department visit


class Comparator(enum.StrEnum):
    AT_LEAST = ">="
    MORE_THAN = ">"
    AT_MOST = "<="
    LESS_THAN = "<"

    def holds(self, value: Decimal, threshold: Decimal) -> bool:
        match self:
            case Comparator.AT_LEAST:
                return value >= threshold
            case Comparator.MORE_THAN:
                return value > threshold
            case Comparator.AT_MOST:
                return value <= threshold
            case _:
                return value < threshold


class Pick(enum.StrEnum):
    """Which of several values in the window decides: the last or first taken, the highest
    or the lowest."""

    LAST = "last"
    FIRST = "first"
    MAX = "max"
    MIN = "min"


class Window(BaseModel):
    """From `from_month` months after the infusion day (that day included) until
    `to_month` months after it (that day excluded): months 6 to 18 are twelve months."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    from_month: int = Field(ge=0, le=MAX_MONTH)
    to_month: int = Field(ge=1, le=MAX_MONTH)

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.to_month <= self.from_month:
            raise ValueError("to_month must come after from_month")
        return self


class NoEventRule(BaseModel):
    """Met when no event of `event` is known in the window once it has closed; not met as
    soon as one is known."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["no_event"]
    event: EventKind


class ObservationRule(BaseModel):
    """Met when the observation picked from the window (coded `system|code`, in `unit`)
    compares to `value` as `comparator` says; decided once the window has closed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["observation"]
    code: str = Field(pattern=r"^[^|\s]+\|[^|\s]+$", max_length=200)
    unit: str = Field(min_length=1, max_length=32)
    comparator: Comparator
    value: Decimal
    pick: Pick = Pick.LAST

    @property
    def code_system(self) -> str:
        return self.code.split("|", 1)[0]

    @property
    def code_value(self) -> str:
        return self.code.split("|", 1)[1]


Rule = Annotated[NoEventRule | ObservationRule, Field(discriminator="kind")]


class Rebate(BaseModel):
    """What the manufacturer owes for a patient who does not meet the measure: a share of
    the price basis or a fixed amount (exactly one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    percent_of_price: Decimal | None = Field(default=None, gt=0, le=100)
    amount: Decimal | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> Rebate:
        if (self.percent_of_price is None) == (self.amount is None):
            raise ValueError("a rebate is either percent_of_price or amount (one of them)")
        return self


class Measure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,47}$")
    title: Text
    # What the measure means, in plain words (shown on the pages, above the figures).
    description: Text
    window: Window
    rule: Rule
    rebate: Rebate


class PriceBasis(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["wholesale_acquisition_cost", "list_price", "net_price"]
    amount: Decimal = Field(gt=0)
    currency: Literal["USD"] = "USD"


class Infusions(BaseModel):
    """The population: patients infused from `from` (included) until `until` (included;
    none: still open)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: date = Field(alias="from")
    until: date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Infusions:
        if self.until is not None and self.until < self.from_:
            raise ValueError("until must not come before from")
        return self


class _MeasureProblem(ValueError):
    """A problem across measures (a repeated key): points at measure `index`."""

    def __init__(self, message: str, *, index: int) -> None:
        super().__init__(message)
        self.index = index


class Agreement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,47}$")
    version: int = Field(ge=1)
    illustrative: bool
    title: Text
    manufacturer: str = Field(min_length=1, max_length=120)
    therapy: str = Field(pattern=r"^[a-z0-9-]{1,32}$")
    states: Literal["all"] | tuple[Annotated[str, Field(pattern=STATE_CODE)], ...]
    infusions: Infusions
    price_basis: PriceBasis
    measures: tuple[Measure, ...] = Field(min_length=1)

    @field_validator("states")
    @classmethod
    def _distinct_states(
        cls, value: Literal["all"] | tuple[str, ...]
    ) -> Literal["all"] | tuple[str, ...]:
        if value != "all":
            if not value:
                raise ValueError('list at least one state, or write "all"')
            if len(set(value)) != len(value):
                raise ValueError("a state is listed twice")
        return value

    @model_validator(mode="after")
    def _distinct_measures(self) -> Agreement:
        seen: set[str] = set()
        for index, measure in enumerate(self.measures):
            if measure.key in seen:
                raise _MeasureProblem(f"measure key {measure.key} is used twice", index=index)
            seen.add(measure.key)
        return self

    def measure(self, key: str) -> Measure | None:
        return next((measure for measure in self.measures if measure.key == key), None)

    def covers_state(self, code: str) -> bool:
        return self.states == "all" or code in self.states

    def rebate_amount(self, measure: Measure) -> Decimal:
        """What is owed for one patient who does not meet `measure`, in the price's
        currency, to the cent."""
        if measure.rebate.amount is not None:
            amount = measure.rebate.amount
        else:
            assert measure.rebate.percent_of_price is not None
            amount = self.price_basis.amount * measure.rebate.percent_of_price / 100
        return amount.quantize(Decimal("0.01"))


class _AgreementLoader(LineLoader):
    """The line-keeping loader; an impossible date (2025-13-01) is a problem at its line."""


def _timestamp(loader: _AgreementLoader, node: yaml.ScalarNode) -> object:
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value} is not a real date", node.start_mark
        ) from None


_AgreementLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)


class AgreementError(ValueError):
    """An agreement file is wrong; the message names the file, the line and the problem."""


def parse_agreement(text: str, *, source: str) -> Agreement:
    """Parse and validate one agreement file's text; raise AgreementError naming `source`."""
    try:
        raw = yaml.load(text, Loader=_AgreementLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line = mark.line + 1 if mark is not None else "?"
        raise AgreementError(f"{source}, line {line}: not valid YAML: {error.problem}") from None
    if not isinstance(raw, dict):
        raise AgreementError(
            f"{source}, line 1: an agreement is a mapping with key, version, measures, ..."
        )
    try:
        return Agreement.model_validate(strip_lines(raw))
    except ValidationError as error:
        problems = []
        for item in error.errors():
            location = tuple(item["loc"])
            cause = item.get("ctx", {}).get("error")
            if isinstance(cause, _MeasureProblem):
                location = ("measures", cause.index)
            # A discriminated union names the chosen kind in the location: not a key.
            location = tuple(part for part in location if part not in ("no_event", "observation"))
            where = ".".join(str(part) for part in location) or "(file)"
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{source}, line {line_of(raw, location) or '?'}: {where}: {message}")
        raise AgreementError("\n".join(problems)) from None


@dataclass(frozen=True)
class AgreementLibrary:
    """Every agreement version read, and the digest of the files they came from."""

    versions: dict[str, dict[int, Agreement]]
    definition_hash: str

    def current(self) -> list[Agreement]:
        """The newest version of each agreement, by key: the terms reports apply."""
        return [versions[max(versions)] for _key, versions in sorted(self.versions.items())]

    def get(self, key: str) -> Agreement | None:
        versions = self.versions.get(key)
        return versions[max(versions)] if versions else None


def definition_hash(directory: Path = AGREEMENT_DIR) -> str:
    """A digest of the agreement files (names and bytes): a snapshot keeps it, so that a
    figure computed under other terms says so."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.yaml")):
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def load_agreements(
    directory: Path = AGREEMENT_DIR, *, known_therapies: set[str] | None = None
) -> AgreementLibrary:
    """Read every `*.yaml` in `directory`. Several versions of an agreement may sit side by
    side (`casgevy-2025.yaml`, `casgevy-2025-v2.yaml`); reports apply the newest.
    `known_therapies`: when given, an agreement for another therapy is refused."""
    versions: dict[str, dict[int, Agreement]] = {}
    sources: dict[tuple[str, int], str] = {}
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        agreement = parse_agreement(text, source=path.name)
        if known_therapies is not None and agreement.therapy not in known_therapies:
            raise AgreementError(
                f"{path.name}, line {_line_of_key(text, 'therapy')}: therapy: "
                f"{agreement.therapy} is not a therapy with a follow-up protocol "
                f"({', '.join(sorted(known_therapies))})"
            )
        by_version = versions.setdefault(agreement.key, {})
        if agreement.version in by_version:
            raise AgreementError(
                f"{path.name}, line 1: {agreement.key} version {agreement.version} is "
                f"defined twice (also in {sources[agreement.key, agreement.version]})"
            )
        by_version[agreement.version] = agreement
        sources[agreement.key, agreement.version] = path.name
    return AgreementLibrary(versions=versions, definition_hash=definition_hash(directory))


def _line_of_key(text: str, key: str) -> int | str:
    raw = yaml.load(text, Loader=_AgreementLoader)  # noqa: S506 (a SafeLoader subclass)
    return line_of(raw, (key,)) or "?"


@cache
def shipped_agreements() -> AgreementLibrary:
    """The agreements shipped in `reporting/agreements/` (read once per process), checked
    against the therapies that have a follow-up protocol."""
    return load_agreements(known_therapies=set(shipped_protocols().versions))
