"""Reading a claims file: every row checked, normalized and matched to its patient
(`parse_file`); a file with any malformed row is refused whole, each problem with its line."""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from itertools import chain
from operator import itemgetter
from typing import IO, Any

from core.models import State
from core.text import N_
from reporting.claims.layout import (
    ADJUSTMENT_INDICATORS,
    CLAIM,
    CLAIM_NUMBER,
    DASHED_DATE,
    DIAGNOSIS_COLUMNS,
    DIGEST,
    MAX_LINE_NUMBER,
    MEDICAID_ID,
    NUMBER,
    ORIGINAL,
    PATIENT,
    PLAIN_DATE,
    STATE_CODES,
    DriverValues,
    Line,
    Problem,
    Refused,
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
    lines: list[Line]  # the matched rows, in the file's order (a repeated row once)
    unmatched: list[int]  # the file's line of each row without a patient
    count: int  # data rows (a repeated identical row counts, and is unchanged)
    repeats: int


def parse_file(
    stream: IO[bytes],
    *,
    state: State,
    allowed_state_ids: set[int] | None,
    codes: ClaimCodes,
    binds: DriverValues,
    patients: dict[str, int],
) -> Parsed:
    """Every row of the file checked and normalized, and matched to its patient by its
    Medicaid ID (`patients`: the state's IDs, upper case); raises `Refused` with every
    problem by line when any row is malformed."""
    # A BOM, if any, is skipped; the caller's stream stays open (detached below).
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    source = iter(text)
    problems: list[Problem] = []
    count = 0
    line_num = 0  # the file's line the row read last ends on
    try:
        try:
            reader = csv.reader(source)
            header = next(reader)
            line_num = reader.line_num
        except StopIteration:
            raise Refused([Problem(None, N_("The file is empty."))]) from None
        positions = header_positions(header)
        checker = _RowChecker(
            state=state, codes=codes, binds=binds, positions=positions, patients=patients
        )
        fast, careful = checker.fast, checker.check_new
        width = len(header)
        lines: list[Line] = []
        unmatched: list[int] = []
        keep, skip = lines.append, unmatched.append
        # Each claim line seen: its content digest and the file's line it is on.
        seen: dict[tuple[str, int], tuple[str, int]] = {}
        seen_get = seen.get
        repeats = 0
        for raw in source:
            line_num += 1
            if '"' in raw or "\x00" in raw:
                # Quoted fields (they may go on over the next lines), or what the csv
                # module refuses: read by it. Other rows are split at their commas, which
                # reads them the same, in a fraction of the time.
                reader = csv.reader(chain((raw,), source))
                try:
                    fields = next(reader, [])
                finally:
                    line_num += max(reader.line_num - 1, 0)
            else:
                raw = raw.rstrip("\r\n")
                fields = raw.split(",") if raw else []
            if len(fields) != width:
                if not fields:
                    continue  # a blank line
                count += 1
                problems.append(
                    Problem(
                        line_num,
                        N_(
                            "This line has %(found)s fields; the header has %(expected)s.",
                            found=len(fields),
                            expected=width,
                        ),
                    )
                )
                continue
            count += 1
            try:
                values = fast(fields)
            except KeyError:  # something not seen valid yet: the careful way
                fixed = careful(fields, line_num, problems)
                if fixed is None:
                    continue
                values = fast(fixed)
            key = (values[CLAIM], values[NUMBER])
            earlier = seen_get(key)
            if earlier is None:
                seen[key] = (values[DIGEST], line_num)
                if values[PATIENT] is None:
                    skip(line_num)
                else:
                    keep(values)
            elif earlier[0] == values[DIGEST]:
                repeats += 1  # the same line twice: loaded once
            else:
                problems.append(
                    Problem(
                        line_num,
                        N_(
                            "Claim %(claim)s line %(number)s is also on line %(other)s, with "
                            "other content.",
                            claim=key[0],
                            number=key[1],
                            other=earlier[1],
                        ),
                    )
                )
    except UnicodeDecodeError:
        problems.append(
            Problem(
                None,
                N_("The file is not UTF-8 text (from line %(line)s on).", line=line_num),
            )
        )
    except csv.Error:
        problems.append(
            Problem(
                line_num,
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
    return Parsed(lines=lines, unmatched=unmatched, count=count, repeats=repeats)


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
    """Checks, normalizes and matches one row.

    `fast` looks every value up among the values already found valid (a date, a code, an
    ID is checked once however many rows repeat it; the dates of a row, and its file type,
    codes and places, are each one lookup of the raw fields together). Anything not seen yet
    raises KeyError, and the row goes the careful way (`check_new`), which explains every
    problem of the row and remembers the valid values for the next rows."""

    def __init__(
        self,
        *,
        state: State,
        codes: ClaimCodes,
        binds: DriverValues,
        positions: list[int],
        patients: dict[str, int],
    ) -> None:
        self.state = state.code
        self.codes = codes
        self.binds = binds
        self.patients = patients
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
        # The raw fields looked up together: what kind of line it is (file type, state,
        # adjustment indicator, codes, places: few distinct together), and its dates.
        self.kind_of = _picker(
            [
                p
                for p in (
                    self.p_type,
                    self.p_state,
                    self.p_indicator,
                    *self.p_diagnoses,
                    self.p_place,
                    self.p_revenue,
                )
                if p >= 0
            ]
        )
        self.days_of = _picker(
            [p for p in (self.p_begin, self.p_end, self.p_admission, self.p_discharge) if p >= 0]
        )
        # What the careful way worked out, valid or not (None: not valid).
        self.dates: dict[str, tuple[str, Any] | None] = {"": ("", binds.null)}
        self.diagnoses: dict[tuple[str, ...], tuple[tuple[str, ...], Any] | None] = {}
        self.places: dict[str, str | None] = {"": ""}
        self.revenues: dict[str, str | None] = {"": ""}
        self.flags: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}
        self.states: dict[str, str | None] = {}
        # The content digest of every line starts the same way for a file type.
        self.seeds = {
            kind: hashlib.blake2b(f"{kind}\x1f".encode(), digest_size=16) for kind in ("IP", "OT")
        }
        # The values found valid, as the fast way reads them (raw text -> normalized).
        # A kind: the claim type, the codes, place and revenue code, the flags (as the driver
        # takes them), the digest's start for the file type, and its end (places and codes),
        # the adjustment indicator and its part of the digest.
        self.ok_kinds: dict[Any, tuple[Any, ...]] = {}
        # Dates: service begin and end, admission, discharge (as the driver takes them), and
        # their part of the digest.
        self.ok_days: dict[Any, tuple[Any, Any, Any, Any, str]] = {}
        self.ok_ids: dict[str, tuple[str, int | None]] = {}  # the ID, its patient
        self.ok_numbers: dict[str, tuple[int, str]] = {}  # the line number, its digest part
        self.fast = self._fast_check()

    def _fast_check(self) -> Callable[[list[str]], Line]:
        """`fast`, as a closure: its positions and tables are local names (a name lookup
        per value instead of an attribute lookup: a third of the time)."""
        p_msis, p_original, p_adjustment = self.p_msis, self.p_original, self.p_adjustment
        ok_kinds, ok_days, ok_ids, ok_numbers = (
            self.ok_kinds,
            self.ok_days,
            self.ok_ids,
            self.ok_numbers,
        )
        p_line = self.p_line
        kind_of, days_of, patients = self.kind_of, self.days_of, self.patients
        null = self.binds.null
        claim_number = CLAIM_NUMBER.fullmatch
        medicaid_check = MEDICAID_ID.fullmatch
        checked_claim = ""  # the last claim number found valid (a claim's lines come together)

        def fast(fields: list[str]) -> Line:
            """The row's `Line` (patient None: unmatched); KeyError for anything not seen
            valid before."""
            nonlocal checked_claim
            # One lookup: the row's file type, state, indicator, codes and places found valid.
            claim_type, place, revenue, codes, f1, f2, f3, seed, tail, indicator, marked = ok_kinds[
                kind_of(fields)
            ]
            raw_id = fields[p_msis]
            known = ok_ids.get(raw_id)
            if known is None:  # most IDs come once or a few times: checked here
                medicaid_id = raw_id.strip().upper()
                if medicaid_check(medicaid_id) is None:
                    raise KeyError
                known = ok_ids[raw_id] = (medicaid_id, patients.get(medicaid_id))
            medicaid_id, patient_id = known
            original = fields[p_original]
            if original != checked_claim:
                if claim_number(original) is None:
                    raise KeyError
                checked_claim = original
            adjustment = fields[p_adjustment] if p_adjustment >= 0 else ""
            if adjustment:
                if indicator == ORIGINAL or claim_number(adjustment) is None:
                    raise KeyError
            elif indicator != ORIGINAL:
                raise KeyError
            number, numbered = ok_numbers[fields[p_line]]
            begin, end, admitted, discharged, days = ok_days[days_of(fields)]
            # The digest of the line as read (normalized): the same line written another
            # way (dates without dashes, codes without dots) has the same digest. It is the
            # BLAKE2b of the normalized values joined by \x1f (file type, Medicaid ID, claim
            # numbers, indicator, line, dates, place, revenue code, codes), fed in parts.
            digest = seed.copy()
            digest.update(
                f"{medicaid_id}\x1f{original}\x1f{adjustment}\x1f{marked}{numbered}{days}{tail}".encode()
            )
            return (
                patient_id,
                medicaid_id,
                adjustment or original,
                number,
                claim_type,
                original if adjustment else null,
                indicator,
                begin,
                end,
                admitted,
                discharged,
                place,
                revenue,
                codes,
                f1,
                f2,
                f3,
                digest.hexdigest(),
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

    def check_new(self, fields: list[str], line: int, problems: list[Problem]) -> list[str] | None:
        """The careful way: every problem of the row, in words (None); for a valid row, its
        values are remembered for the fast way, and the row is returned as the fast way
        reads it (claim numbers without blanks)."""
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
        # Valid: remember each value as the fast way reads it.
        codes, codes_value = diagnoses
        f1, f2, f3 = self._flags(file_type, codes, place, revenue)
        null = self.binds.null
        self.ok_kinds[self.kind_of(fields)] = (
            self.binds.claim_type[file_type],
            place or null,
            revenue or null,
            codes_value,
            f1,
            f2,
            f3,
            self.seeds[file_type],
            "\x1f".join((place, revenue, *codes)),
            indicator,
            f"{indicator}\x1f",
        )
        self.ok_days[self.days_of(fields)] = (
            begin_value,
            end_value,
            admitted_value,
            discharged_value,
            f"{begin}\x1f{end}\x1f{admitted}\x1f{discharged}\x1f",
        )
        self.ok_ids[fields[self.p_msis]] = (medicaid_id, self.patients.get(medicaid_id))
        self.ok_numbers[fields[self.p_line]] = (number, f"{number}\x1f")
        fixed = fields[:]
        fixed[self.p_original] = original
        if self.p_adjustment >= 0:
            fixed[self.p_adjustment] = adjustment
        return fixed

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


def _picker(positions: list[int]) -> Callable[[list[str]], Any]:
    """A function picking these fields of a row (a hashable value: a tuple, or one field)."""
    if not positions:
        return lambda _fields: ()
    return itemgetter(*positions)


def _shown(value: str) -> str:
    """A value as a problem shows it: short, on one line."""
    value = value.strip().replace("\n", " ")
    return value if len(value) <= 20 else value[:19] + "…"
