"""Reading a claims file: every row checked and normalized (`parse_file`); a file with any
malformed row is refused whole, each problem with its line."""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from operator import itemgetter
from typing import IO, Any

from core.models import State
from core.text import N_
from reporting.claims.layout import (
    ADJUSTMENT_INDICATORS,
    CLAIM_NUMBER,
    DASHED_DATE,
    DIAGNOSIS_COLUMNS,
    MAX_LINE_NUMBER,
    MEDICAID_ID,
    ORIGINAL,
    PLAIN_DATE,
    STATE_CODES,
    DriverValues,
    Problem,
    Refused,
    Row,
    header_positions,
)
from reporting.code_lists import (
    ClaimCodes,
    FlagSet,
    normalize_diagnosis,
    normalize_place_of_service,
    normalize_revenue_code,
)


@dataclass
class Parsed:
    rows: list[Row]
    count: int  # data rows (a repeated identical row counts, and is unchanged)
    repeats: int


def parse_file(
    stream: IO[bytes],
    *,
    state: State,
    allowed_state_ids: set[int] | None,
    codes: ClaimCodes,
    binds: DriverValues,
) -> Parsed:
    # A BOM, if any, is skipped; the caller's stream stays open (detached below).
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    problems: list[Problem] = []
    count = 0
    try:
        try:
            header = next(reader)
        except StopIteration:
            raise Refused([Problem(None, N_("The file is empty."))]) from None
        positions = header_positions(header)
        checker = _RowChecker(state=state, codes=codes, binds=binds, positions=positions)
        width = len(header)
        rows: list[Row] = []
        seen: dict[tuple[str, int], tuple[str, int]] = {}
        repeats = 0
        for fields in reader:
            if not fields:
                continue  # a blank line
            count += 1
            line = reader.line_num
            if len(fields) != width:
                problems.append(
                    Problem(
                        line,
                        N_(
                            "This line has %(found)s fields; the header has %(expected)s.",
                            found=len(fields),
                            expected=width,
                        ),
                    )
                )
                continue
            row = checker.check(fields, line, problems)
            if row is None:
                continue
            key = (row[3], row[5])
            earlier = seen.get(key)
            if earlier is None:
                seen[key] = (row[6], line)
                rows.append(row)
            elif earlier[0] == row[6]:
                repeats += 1  # the same line twice: loaded once
            else:
                problems.append(
                    Problem(
                        line,
                        N_(
                            "Claim %(claim)s line %(number)s is also on line %(other)s, with "
                            "other content.",
                            claim=row[3],
                            number=row[5],
                            other=earlier[1],
                        ),
                    )
                )
    except UnicodeDecodeError:
        problems.append(
            Problem(
                None,
                N_("The file is not UTF-8 text (from line %(line)s on).", line=reader.line_num),
            )
        )
    except csv.Error:
        problems.append(
            Problem(
                reader.line_num,
                N_("This line cannot be read as CSV (a quotation mark not closed?)."),
            )
        )
    finally:
        text.detach()
    if problems:
        raise Refused(
            _with_state_reason(problems, count, state, allowed_state_ids),
            count=len(problems),
        )
    if count == 0:
        raise Refused([Problem(None, N_("The file has no claim rows."))])
    return Parsed(rows=rows, count=count, repeats=repeats)


def _other_states(problems: list[Problem]) -> Counter[str]:
    """The other states named by rows refused for their state (see `_RowChecker`)."""
    return Counter(
        str(problem.message.params["found"])  # type: ignore[attr-defined]
        for problem in problems
        if getattr(problem.message, "msgid", None) == _OTHER_STATE
    )


_OTHER_STATE = N_("The claim is for %(found)s; this file is loaded for %(state)s.")


def _with_state_reason(
    problems: list[Problem], rows: int, state: State, allowed: set[int] | None
) -> list[Problem]:
    """A file whose every row is for one other state says so first, in words about the
    file (the rows' own problems follow)."""
    problems = sorted(problems, key=lambda problem: (problem.line is not None, problem.line or 0))
    others = _other_states(problems)
    if len(others) != 1 or sum(others.values()) != rows:
        return problems
    (found,) = others
    reason = N_(
        "This file is for %(found)s, not %(state)s: choose %(found)s to load it, if it is one "
        "of your states.",
        found=found,
        state=state.code,
    )
    if allowed is not None:
        reason = N_(
            "This file is for %(found)s, not %(state)s. You may load claims only for your own "
            "states.",
            found=found,
            state=state.code,
        )
    return [Problem(None, reason), *problems]


class _RowChecker:
    """Checks and normalizes one row.

    `check` takes the fast way: every value is looked up among the values already found
    valid (a date, a code, an ID is checked once however many rows repeat it). Anything not
    seen yet goes the careful way (`_check_new`), which explains every problem of the row
    and remembers the valid values for the next rows."""

    def __init__(
        self, *, state: State, codes: ClaimCodes, binds: DriverValues, positions: list[int]
    ) -> None:
        self.state = state.code
        self.codes = codes
        self.binds = binds
        (
            self.p_type,
            self.p_state,
            self.p_msis,
            self.p_original,
            self.p_adjustment,
            self.p_indicator,
            self.p_line,
            self.p_begin,
            self.p_end,
            self.p_admission,
            self.p_discharge,
            *rest,
        ) = positions
        diagnosis_positions = rest[: len(DIAGNOSIS_COLUMNS)]
        self.p_diagnoses = [p for p in diagnosis_positions if p >= 0]
        self.diagnosis_names = [
            name for name, p in zip(DIAGNOSIS_COLUMNS, diagnosis_positions, strict=True) if p >= 0
        ]
        self.p_place, self.p_revenue = rest[len(DIAGNOSIS_COLUMNS) :]
        self.raw_codes = _picker(self.p_diagnoses)
        # What the careful way worked out, valid or not (None: not valid).
        self.dates: dict[str, tuple[str, Any] | None] = {"": ("", binds.null)}
        self.diagnoses: dict[tuple[str, ...], tuple[tuple[str, ...], Any] | None] = {}
        self.places: dict[str, str | None] = {"": ""}
        self.revenues: dict[str, str | None] = {"": ""}
        self.flags: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}
        self.states: dict[str, str | None] = {}
        # The values found valid, as the fast way reads them (raw text -> normalized).
        self.ok_types: dict[str, str] = {}
        self.ok_states: set[str] = set()
        self.ok_ids: dict[str, str] = {}
        self.ok_indicators: dict[str, str] = {}
        self.ok_numbers: dict[str, int] = {}
        self.ok_days: dict[str, tuple[str, Any]] = {}  # a required date
        self.ok_optional_days: dict[str, tuple[str, Any]] = {"": ("", binds.null)}
        self.ok_codes: dict[Any, tuple[tuple[str, ...], Any]] = {}
        self.ok_places: dict[str, str] = {"": ""}
        self.ok_revenues: dict[str, str] = {"": ""}
        self.fast = self._fast_check()

    def check(self, fields: list[str], line: int, problems: list[Problem]) -> Row | None:
        """The row normalized (see `Row`), or None after adding its problems to `problems`."""
        return self.fast(fields, line, problems)

    def _fast_check(self) -> Callable[[list[str], int, list[Problem]], Row | None]:
        """`check`'s fast way, as a closure: its positions and tables are local names (a
        name lookup per value instead of an attribute lookup: a third of the time)."""
        p_type, p_state, p_msis = self.p_type, self.p_state, self.p_msis
        p_original = self.p_original
        p_indicator, p_adjustment, p_line = self.p_indicator, self.p_adjustment, self.p_line
        p_begin, p_end, p_admission, p_discharge = (
            self.p_begin,
            self.p_end,
            self.p_admission,
            self.p_discharge,
        )
        p_place, p_revenue = self.p_place, self.p_revenue
        ok_types, ok_states, ok_ids = self.ok_types, self.ok_states, self.ok_ids
        ok_indicators, ok_numbers, ok_days = self.ok_indicators, self.ok_numbers, self.ok_days
        ok_optional_days, ok_codes = self.ok_optional_days, self.ok_codes
        ok_places, ok_revenues, flag_table = self.ok_places, self.ok_revenues, self.flags
        raw_codes, careful, work_flags = self.raw_codes, self._check_new, self._flags
        null = self.binds.null
        claim_types = self.binds.claim_type
        no_day = ("", null)
        claim_number = CLAIM_NUMBER.fullmatch
        medicaid_check = MEDICAID_ID.fullmatch
        blake2b = hashlib.blake2b

        def fast(fields: list[str], line: int, problems: list[Problem]) -> Row | None:
            try:
                file_type = ok_types[fields[p_type]]
                if fields[p_state] not in ok_states:
                    raise KeyError
                raw_id = fields[p_msis]
                medicaid_id = ok_ids.get(raw_id)
                if medicaid_id is None:  # most IDs come once or a few times: checked here
                    medicaid_id = raw_id.strip().upper()
                    if medicaid_check(medicaid_id) is None:
                        raise KeyError
                    ok_ids[raw_id] = medicaid_id
                original = fields[p_original]
                if claim_number(original) is None:
                    raise KeyError
                indicator = ok_indicators[fields[p_indicator]] if p_indicator >= 0 else ORIGINAL
                adjustment = fields[p_adjustment] if p_adjustment >= 0 else ""
                if adjustment:
                    if indicator == ORIGINAL or claim_number(adjustment) is None:
                        raise KeyError
                elif indicator != ORIGINAL:
                    raise KeyError
                number = ok_numbers[fields[p_line]]
                begin, begin_value = ok_days[fields[p_begin]]
                end, end_value = ok_days[fields[p_end]]
                admitted, admitted_value = (
                    ok_optional_days[fields[p_admission]] if p_admission >= 0 else no_day
                )
                discharged, discharged_value = (
                    ok_optional_days[fields[p_discharge]] if p_discharge >= 0 else no_day
                )
                if begin > end or (admitted and discharged and admitted > discharged):
                    raise KeyError
                codes, codes_value = ok_codes[raw_codes(fields)]
                place = ok_places[fields[p_place]] if p_place >= 0 else ""
                revenue = ok_revenues[fields[p_revenue]] if p_revenue >= 0 else ""
            except KeyError:
                return careful(fields, line, problems)
            flag_key = (file_type, codes, place, revenue)
            flags = flag_table.get(flag_key)
            if flags is None:
                flags = flag_table[flag_key] = work_flags(file_type, codes, place, revenue)
            # The digest of the line as read (normalized): the same line written another way
            # (dates without dashes, codes without dots) has the same digest.
            digest = blake2b(
                "\x1f".join(
                    (
                        file_type,
                        medicaid_id,
                        original,
                        adjustment,
                        indicator,
                        str(number),
                        begin,
                        end,
                        admitted,
                        discharged,
                        place,
                        revenue,
                        *codes,
                    )
                ).encode(),
                digest_size=16,
            ).hexdigest()
            own = adjustment or original
            return (
                line,
                medicaid_id,
                original,
                own,
                indicator,
                number,
                digest,
                (
                    medicaid_id,
                    own,
                    number,
                    claim_types[file_type],
                    original if adjustment else null,
                    indicator,
                    begin_value,
                    end_value,
                    admitted_value,
                    discharged_value,
                    place or null,
                    revenue or null,
                    codes_value,
                    *flags,
                    digest,
                ),
            )

        return fast

    def _date(self, text: str) -> tuple[str, Any] | None:
        """(ISO text, the driver's value) of `YYYY-MM-DD` or `YYYYMMDD`; None if not a date."""
        try:
            return self.dates[text]
        except KeyError:
            pass
        plain = text.strip()
        value: tuple[str, Any] | None = None
        if PLAIN_DATE.fullmatch(plain):
            plain = f"{plain[:4]}-{plain[4:6]}-{plain[6:]}"
        if DASHED_DATE.fullmatch(plain):
            try:
                day = date.fromisoformat(plain)
            except ValueError:
                day = None
            if day is not None and day.year >= 1900:
                value = (plain, self.binds.date(day))
        self.dates[text] = value
        return value

    def _check_new(self, fields: list[str], line: int, problems: list[Problem]) -> Row | None:
        """The careful way: every problem of the row, in words; for a valid row, its values
        are remembered for the fast way and the row goes through it."""
        found: list[Problem] = []

        def problem(message: str) -> None:
            found.append(Problem(line, message))

        file_type = fields[self.p_type].strip().upper()
        if file_type not in ("IP", "OT"):
            problem(
                N_(
                    "FILE_TYPE is “%(value)s”: IP (inpatient) or OT (other services).",
                    value=_shown(fields[self.p_type]),
                )
            )
        raw_state = fields[self.p_state]
        claim_state = self.states.get(raw_state, "")
        if claim_state == "":
            claim_state = STATE_CODES.get(raw_state.strip().upper())
            self.states[raw_state] = claim_state
        if claim_state is None:
            problem(
                N_(
                    "SUBMTG_STATE_CD “%(value)s” is not a state (a postal or FIPS code).",
                    value=_shown(raw_state),
                )
            )
        elif claim_state != self.state:
            problem(N_(_OTHER_STATE, found=claim_state, state=self.state))
        medicaid_id = fields[self.p_msis].strip().upper()
        if not MEDICAID_ID.fullmatch(medicaid_id):
            problem(
                N_(
                    "MSIS_IDENT_NUM is missing or not a Medicaid ID (letters, digits and "
                    "hyphens, at most 32)."
                )
            )
        original = fields[self.p_original].strip()
        if not CLAIM_NUMBER.fullmatch(original):
            problem(
                N_(
                    "%(column)s is missing or not a claim number (letters, digits and . _ / : "
                    "# -, at most 50).",
                    column="ORGNL_CLM_NUM",
                )
            )
        indicator = fields[self.p_indicator].strip() if self.p_indicator >= 0 else ""
        indicator = indicator or ORIGINAL
        adjustment = fields[self.p_adjustment].strip() if self.p_adjustment >= 0 else ""
        if indicator not in ADJUSTMENT_INDICATORS:
            problem(
                N_(
                    "ADJSTMT_IND is “%(value)s”: 0 (original), 1 (void) or 4 (replacement).",
                    value=_shown(indicator),
                )
            )
        elif indicator == ORIGINAL and adjustment:
            problem(N_("ADJSTMT_CLM_NUM is given on an original claim (ADJSTMT_IND 0)."))
        elif indicator != ORIGINAL and not CLAIM_NUMBER.fullmatch(adjustment):
            problem(
                N_(
                    "%(column)s is missing or not a claim number (letters, digits and . _ / : "
                    "# -, at most 50).",
                    column="ADJSTMT_CLM_NUM",
                )
            )
        raw_number = fields[self.p_line].strip()
        number = int(raw_number) if raw_number.isdigit() and raw_number.isascii() else 0
        if not 1 <= number <= MAX_LINE_NUMBER:
            problem(
                N_(
                    "LINE_NUM is “%(value)s”: a line number from 1 to 9999.",
                    value=_shown(raw_number),
                )
            )
        dates = []
        for column, position, required in (
            ("SRVC_BGN_DT", self.p_begin, True),
            ("SRVC_END_DT", self.p_end, True),
            ("ADMSN_DT", self.p_admission, False),
            ("DSCHRG_DT", self.p_discharge, False),
        ):
            raw = fields[position] if position >= 0 else ""
            parsed = self._date(raw)
            if parsed is None or (required and not parsed[0]):
                problem(
                    N_(
                        "%(column)s is “%(value)s”, not a date (YYYY-MM-DD or YYYYMMDD).",
                        column=column,
                        value=_shown(raw),
                    )
                )
                parsed = ("", self.binds.null)
            dates.append(parsed)
        (
            (begin, begin_value),
            (end, end_value),
            (admitted, admitted_value),
            (
                discharged,
                discharged_value,
            ),
        ) = dates
        if begin and end and begin > end:
            problem(
                N_(
                    "The service begins (SRVC_BGN_DT %(begin)s) after it ends "
                    "(SRVC_END_DT %(end)s).",
                    begin=begin,
                    end=end,
                )
            )
        if admitted and discharged and admitted > discharged:
            problem(
                N_(
                    "The admission (ADMSN_DT %(begin)s) is after the discharge "
                    "(DSCHRG_DT %(end)s).",
                    begin=admitted,
                    end=discharged,
                )
            )
        raw_codes = tuple(fields[position] for position in self.p_diagnoses)
        try:
            diagnoses = self.diagnoses[raw_codes]
        except KeyError:
            diagnoses = self.diagnoses[raw_codes] = self._diagnoses(raw_codes)
        if diagnoses is None:
            for name, raw in zip(self.diagnosis_names, raw_codes, strict=True):
                if raw.strip() and normalize_diagnosis(raw) is None:
                    problem(
                        N_(
                            "%(column)s is “%(value)s”, not an ICD-10-CM code.",
                            column=name,
                            value=_shown(raw),
                        )
                    )
        place = self._code(self.places, self.p_place, fields, normalize_place_of_service)
        if place is None:
            problem(
                N_(
                    "POS_CD is “%(value)s”, not a place-of-service code (two digits).",
                    value=_shown(fields[self.p_place]),
                )
            )
        revenue = self._code(self.revenues, self.p_revenue, fields, normalize_revenue_code)
        if revenue is None:
            problem(
                N_(
                    "REV_CD is “%(value)s”, not a revenue code (four digits).",
                    value=_shown(fields[self.p_revenue]),
                )
            )
        if found:
            problems.extend(found)
            return None
        assert diagnoses is not None and place is not None and revenue is not None
        # Valid: remember each value as the fast way reads it, then take the fast way.
        self.ok_types[fields[self.p_type]] = file_type
        self.ok_states.add(raw_state)
        self.ok_ids[fields[self.p_msis]] = medicaid_id
        if self.p_indicator >= 0:
            self.ok_indicators[fields[self.p_indicator]] = indicator
        self.ok_numbers[fields[self.p_line]] = number
        self.ok_days[fields[self.p_begin]] = (begin, begin_value)
        self.ok_days[fields[self.p_end]] = (end, end_value)
        if self.p_admission >= 0:
            self.ok_optional_days[fields[self.p_admission]] = (admitted, admitted_value)
        if self.p_discharge >= 0:
            self.ok_optional_days[fields[self.p_discharge]] = (discharged, discharged_value)
        self.ok_codes[self.raw_codes(fields)] = diagnoses
        if self.p_place >= 0:
            self.ok_places[fields[self.p_place]] = place
        if self.p_revenue >= 0:
            self.ok_revenues[fields[self.p_revenue]] = revenue
        fast = fields[:]
        fast[self.p_original] = original
        if self.p_adjustment >= 0:
            fast[self.p_adjustment] = adjustment
        return self.check(fast, line, problems)

    def _diagnoses(self, raw_codes: tuple[str, ...]) -> tuple[tuple[str, ...], Any] | None:
        codes = []
        for raw in raw_codes:
            if not raw.strip():
                continue
            code = normalize_diagnosis(raw)
            if code is None:
                return None
            codes.append(code)
        return tuple(codes), self.binds.json(codes)

    @staticmethod
    def _code(
        cache: dict[str, str | None],
        position: int,
        fields: list[str],
        normalize: Callable[[str], str | None],
    ) -> str | None:
        if position < 0:
            return ""
        raw = fields[position]
        try:
            return cache[raw]
        except KeyError:
            found = cache[raw] = normalize(raw) if raw.strip() else ""
            return found

    def _flags(
        self, file_type: str, codes: tuple[str, ...], place: str, revenue: str
    ) -> tuple[Any, Any, Any]:
        flags: FlagSet = self.codes.flags(
            file_type=file_type,
            diagnoses=codes,
            revenue_code=revenue or None,
            place_of_service=place or None,
        )
        binds = self.binds
        return tuple(binds.true if flag else binds.false for flag in flags)


def _claim_number(text: str) -> bool:
    return CLAIM_NUMBER.fullmatch(text) is not None


def _picker(positions: list[int]) -> Callable[[list[str]], Any]:
    """A function picking these fields of a row (a hashable value: a tuple, or one field)."""
    if not positions:
        return lambda _fields: ()
    return itemgetter(*positions)


def _shown(value: str) -> str:
    """A value as a problem shows it: short, on one line."""
    value = value.strip().replace("\n", " ")
    return value if len(value) <= 20 else value[:19] + "…"
