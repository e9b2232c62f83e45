"""The claims CSV: its columns (`COLUMNS`, documented in README "Medicaid claims"), the
state codes it may use, what a refused file says (`Problem`), and the claim line's values as
the database driver takes them."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect

from core.text import N_
from reporting.models import ClaimLine, ClaimType

# --- the layout -------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A column of the claims CSV: its name, the other names it may go by (TAF's research
    file names where they differ), and whether every file must have it."""

    name: str
    required: bool
    aliases: tuple[str, ...] = ()


DIAGNOSIS_COLUMNS = tuple(f"DGNS_CD_{number}" for number in range(1, 13))
COLUMNS: tuple[Column, ...] = (
    Column("FILE_TYPE", required=True),
    Column("SUBMTG_STATE_CD", required=True, aliases=("STATE_CD",)),
    Column("MSIS_IDENT_NUM", required=True, aliases=("MSIS_ID",)),
    Column("ORGNL_CLM_NUM", required=True, aliases=("CLM_NUM_ORIG",)),
    Column("ADJSTMT_CLM_NUM", required=False, aliases=("CLM_NUM_ADJ",)),
    Column("ADJSTMT_IND", required=False, aliases=("ADJUST_CD",)),
    Column("LINE_NUM", required=True, aliases=("ORGNL_LINE_NUM",)),
    Column("SRVC_BGN_DT", required=True, aliases=("SRVC_BGNNG_DT",)),
    Column("SRVC_END_DT", required=True, aliases=("SRVC_ENDG_DT",)),
    Column("ADMSN_DT", required=False),
    Column("DSCHRG_DT", required=False),
    *(
        Column(name, required=False, aliases=(f"DGNS_{number}_CD",))
        for number, name in enumerate(DIAGNOSIS_COLUMNS, start=1)
    ),
    Column("POS_CD", required=False, aliases=("SRVC_PLC_CD",)),
    Column("REV_CD", required=False),
)
ORIGINAL, VOID, REPLACEMENT = "0", "1", "4"
ADJUSTMENT_INDICATORS = (ORIGINAL, VOID, REPLACEMENT)
MAX_LINE_NUMBER = 9999
# The problems of a refused file listed one by one (all are counted).
MAX_PROBLEMS = 1000
# The unmatched rows kept with a load, by line (all are counted).
MAX_UNMATCHED_LISTED = 5000
UNMATCHED_NO_PATIENT = "no_patient"

# State FIPS codes (TAF's SUBMTG_STATE_CD) and the postal abbreviations (TAF's STATE_CD).
_FIPS = {
    "01": "AL", "02": "AK", "04": "AZ", "05": "AR", "06": "CA", "08": "CO", "09": "CT",
    "10": "DE", "11": "DC", "12": "FL", "13": "GA", "15": "HI", "16": "ID", "17": "IL",
    "18": "IN", "19": "IA", "20": "KS", "21": "KY", "22": "LA", "23": "ME", "24": "MD",
    "25": "MA", "26": "MI", "27": "MN", "28": "MS", "29": "MO", "30": "MT", "31": "NE",
    "32": "NV", "33": "NH", "34": "NJ", "35": "NM", "36": "NY", "37": "NC", "38": "ND",
    "39": "OH", "40": "OK", "41": "OR", "42": "PA", "44": "RI", "45": "SC", "46": "SD",
    "47": "TN", "48": "TX", "49": "UT", "50": "VT", "51": "VA", "53": "WA", "54": "WV",
    "55": "WI", "56": "WY", "72": "PR", "78": "VI",
}  # fmt: skip
STATE_CODES = {**_FIPS, **{code: code for code in _FIPS.values()}}
# Claim numbers (ICNs): letters, digits and a few separators, at most 50 (T-MSIS X(50), no
# pipe or asterisk). Medicaid IDs as the patient record keeps them.
CLAIM_NUMBER = re.compile(r"[0-9A-Za-z][0-9A-Za-z._/:#-]{0,49}")
MEDICAID_ID = re.compile(r"[0-9A-Z-]{1,32}")
DASHED_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
PLAIN_DATE = re.compile(r"[0-9]{8}")


@dataclass(frozen=True)
class Problem:
    """Why a file is refused: a row's line and reason, or (line None) the file's."""

    line: int | None
    message: str  # in English; a `core.text.Text` the portal translates


class Refused(Exception):
    def __init__(self, problems: list[Problem], count: int | None = None) -> None:
        super().__init__(problems[0].message if problems else "refused")
        self.problems = problems
        self.count = count if count is not None else len(problems)


# A parsed and matched claim line: its values in `LINE_COLUMNS` order, as the driver takes
# them (the columns a load fills with one value for all its lines, `FILE_COLUMNS`, are not in
# it). Plain tuples: a million lines are a million of these, and they go to the driver as
# they are.
Line = tuple[Any, ...]
LINE_COLUMNS = (
    "patient_id",
    "medicaid_id",
    "claim_id",
    "line_number",
    "claim_type",
    "adjusts_claim_id",
    "adjustment_indicator",
    "service_begin",
    "service_end",
    "admission_date",
    "discharge_date",
    "place_of_service",
    "revenue_code",
    "diagnoses",
    "is_vaso_occlusive",
    "is_inpatient_stay",
    "is_ed_visit",
    "content_hash",
)
PATIENT, CLAIM, NUMBER, ADJUSTS, INDICATOR, DIGEST = (
    LINE_COLUMNS.index(name)
    for name in (
        "patient_id",
        "claim_id",
        "line_number",
        "adjusts_claim_id",
        "adjustment_indicator",
        "content_hash",
    )
)
FILE_COLUMNS = ("file_id", "state_id", "loaded_at", "superseded_at", "superseded_by_file_id")


MARK = "\x00"  # a statement's placeholder, the driver's own put in by `execute_many`
# The claim line's columns that may be NULL (see `DriverValues.null`).
NULLABLE_COLUMNS = frozenset(
    {
        "adjusts_claim_id",
        "admission_date",
        "discharge_date",
        "place_of_service",
        "revenue_code",
        "superseded_at",
        "superseded_by_file_id",
    }
)


class DriverValues:
    """Values as the database driver takes them, converted by the columns' own types (what
    SQLAlchemy does for each row, done once per distinct value)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        table = ClaimLine.__table__
        assert isinstance(table, Table)
        self.table = table

        def processor(name: str) -> Callable[[Any], Any]:
            found = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            return found if found is not None else (lambda value: value)

        self.date = processor("service_begin")
        self.json = processor("diagnoses")
        self.instant = processor("loaded_at")
        boolean = processor("is_vaso_occlusive")
        self.true, self.false = boolean(True), boolean(False)
        kind = processor("claim_type")
        self.claim_type = {member.value: kind(member) for member in ClaimType}
        # SQLite's driver adapts a None slowly (it looks for an adapter each time): there,
        # an empty value stands for NULL and the statement turns it back (`NULLIF`).
        sqlite = dialect.name == "sqlite"
        self.null: Any = "" if sqlite else None
        self.null_id: Any = 0 if sqlite else None

    def placeholder(self, column: str) -> str:
        """The statement's placeholder for a value of `column` (see `null`)."""
        if self.null is None or column not in NULLABLE_COLUMNS:
            return MARK
        empty = "0" if column == "superseded_by_file_id" else "''"
        return f"NULLIF({MARK}, {empty})"


def header_positions(names: list[str]) -> list[int]:
    """The position of each of `COLUMNS` in the file (-1: an optional column left out)."""
    known = {column.name: column for column in COLUMNS}
    for column in COLUMNS:
        for alias in column.aliases:
            known[alias] = column
    positions: dict[str, int] = {}
    unknown: list[str] = []
    for position, raw in enumerate(names):
        name = raw.strip().upper()
        found = known.get(name)
        if found is None:
            unknown.append(raw.strip()[:40] or f"#{position + 1}")
            continue
        if found.name in positions:
            raise Refused(
                [Problem(1, N_("The column %(column)s appears twice.", column=found.name))]
            )
        positions[found.name] = position
    problems = []
    if unknown:
        problems.append(
            Problem(
                1,
                N_(
                    "Unknown column(s): %(columns)s. The layout is in the README, under "
                    "“Medicaid claims”.",
                    columns=", ".join(unknown[:10]),
                ),
            )
        )
    missing = [
        column.name for column in COLUMNS if column.required and column.name not in positions
    ]
    if missing:
        problems.append(
            Problem(1, N_("Missing column(s): %(columns)s.", columns=", ".join(missing)))
        )
    if problems:
        raise Refused(problems)
    return [positions.get(column.name, -1) for column in COLUMNS]
