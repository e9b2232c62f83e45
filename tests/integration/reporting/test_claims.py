"""Loading Medicaid claims files (`reporting.claims.load_claims`): the flags each code edge
gives, a file loaded again, adjustments, voids and corrections with their history (a report
as of before the change still sees the original), a malformed row that refuses the whole
file, unmatched rows, a file for a state the uploader does not hold, a patient who moved
state, and the flags worked out again after a code list changed.

Each file is written in the test as CSV text; the expected flags and counts are tables
written by hand."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, or_, select
from sqlalchemy.orm import Session

from coordination.followup.protocol import shipped_protocols
from coordination.records import change_record
from core.audit.models import AuditEvent, AuditOutcome
from core.clock import FrozenClock
from core.models import State
from core.service import PatientData
from reporting.claims import ClaimLoad, LoadOutcome, load_claims, rederive_flags
from reporting.claims import loading as claims_loading
from reporting.code_lists import CODES_DIR, load_code_lists
from reporting.models import ClaimFile, ClaimLine
from tests.conftest import Database
from tests.factories import SYSTEM, building

HEADER = (
    "FILE_TYPE,SUBMTG_STATE_CD,MSIS_IDENT_NUM,ORGNL_CLM_NUM,ADJSTMT_CLM_NUM,ADJSTMT_IND,"
    "LINE_NUM,SRVC_BGN_DT,SRVC_END_DT,ADMSN_DT,DSCHRG_DT,DGNS_CD_1,DGNS_CD_2,POS_CD,REV_CD\n"
)
MD_ID = "MD1000001"


def _world(db: Database, clock: FrozenClock) -> int:
    """Maryland with one patient (Medicaid ID MD1000001); returns the patient's id."""
    with building(db.factory, clock) as make:
        return make.patient(
            center=make.center(make.state("MD")),
            medicaid_id=MD_ID,
            infusion_date=date(2025, 3, 1),
            schedule=False,
        ).id


def _load(
    session: Session,
    clock: FrozenClock,
    csv_text: str,
    *,
    state: str = "MD",
    allowed: set[int] | None = None,
    name: str = "claims.csv",
) -> ClaimLoad:
    found = session.scalar(select(State).where(State.code == state))
    assert found is not None
    result = load_claims(
        session,
        clock=clock,
        actor=SYSTEM,
        state=found,
        filename=name,
        data=csv_text.encode(),
        allowed_state_ids=allowed,
    )
    session.commit()
    return result


def _lines(session: Session) -> dict[tuple[str, int], ClaimLine]:
    return {(line.claim_id, line.line_number): line for line in session.scalars(select(ClaimLine))}


def _live_as_of(session: Session, moment: object) -> set[tuple[str, int]]:
    """The claim lines a report as of `moment` reads."""
    return {
        (line.claim_id, line.line_number)
        for line in session.scalars(
            select(ClaimLine).where(
                ClaimLine.loaded_at <= moment,
                or_(ClaimLine.superseded_at.is_(None), ClaimLine.superseded_at > moment),
            )
        )
    }


# --- flags -------------------------------------------------------------------------------

EDGES = (
    # claim, file type, diagnoses, place of service, revenue code
    ("E01", "OT", "D57.00", "", "", ""),
    ("E02", "OT", "D57.1", "", "", ""),
    ("E03", "OT", "D57211", "", "", ""),  # without the dot
    ("E04", "OT", "d57.219", "", "", ""),  # lower case
    ("E05", "OT", "D57.3", "", "", ""),  # the trait
    ("E06", "OT", "R50.9", "", "", "0450"),
    ("E07", "OT", "R52", "", "23", ""),
    ("E08", "IP", "J18.9", "D57.1", "", "0120"),
    ("E09", "IP", "R07.9", "D57.04", "", "0450"),  # a crisis in the second column
    ("E10", "OT", "D57.40", "", "11", "450"),  # a revenue code without its zero
)
# Written by hand from the code lists: (crisis, hospital stay, ED visit).
EXPECTED_FLAGS = {
    "E01": (True, False, False),
    "E02": (False, False, False),
    "E03": (True, False, False),
    "E04": (True, False, False),
    "E05": (False, False, False),
    "E06": (False, False, True),
    "E07": (False, False, True),
    "E08": (False, True, False),
    "E09": (True, True, True),
    "E10": (False, False, True),
}


def test_each_code_edge_gets_its_flags(empty_db: Database, clock: FrozenClock) -> None:
    _world(empty_db, clock)
    rows = "".join(
        f"{kind},MD,{MD_ID},{claim},,0,1,2025-09-01,2025-09-0{3 if kind == 'IP' else 1},"
        f"{'2025-09-01' if kind == 'IP' else ''},{'2025-09-03' if kind == 'IP' else ''},"
        f"{first},{second},{place},{revenue}\n"
        for claim, kind, first, second, place, revenue in EDGES
    )
    with empty_db.factory() as session:
        result = _load(session, clock, HEADER + rows)
        assert result.outcome is LoadOutcome.LOADED
        flags = {
            claim: (line.is_vaso_occlusive, line.is_inpatient_stay, line.is_ed_visit)
            for (claim, _number), line in _lines(session).items()
        }
        codes = _lines(session)[("E03", 1)].diagnoses
    assert flags == EXPECTED_FLAGS
    assert codes == ["D57.211"]  # kept in the dotted form


# --- loading again, adjustments, voids, corrections ----------------------------------------

ORIGINAL = (
    HEADER
    + f"IP,MD,{MD_ID},C100,,0,1,2025-09-01,2025-09-04,2025-09-01,2025-09-04,D57.00,,,0120\n"
    + f"IP,MD,{MD_ID},C100,,0,2,2025-09-01,2025-09-04,2025-09-01,2025-09-04,D57.00,,,0450\n"
    + f"OT,MD,{MD_ID},C200,,0,1,2025-10-02,2025-10-02,,,D57.1,,11,\n"
)


def test_the_same_file_again_changes_nothing(empty_db: Database, clock: FrozenClock) -> None:
    _world(empty_db, clock)
    with empty_db.factory() as session:
        first = _load(session, clock, ORIGINAL)
        clock.advance(timedelta(hours=1))
        again = _load(session, clock, ORIGINAL, name="again.csv")
        # The same lines written another way (dates without dashes, codes without dots).
        other_bytes = (
            ORIGINAL.replace("2025-09-01", "20250901")
            .replace("2025-09-04", "20250904")
            .replace("D57.00", "D5700")
        )
        rewritten = _load(session, clock, other_bytes, name="rewritten.csv")
        lines = session.scalars(select(ClaimLine)).all()
        files = session.scalars(select(ClaimFile)).all()
    assert first.outcome is LoadOutcome.LOADED
    assert again.outcome is LoadOutcome.ALREADY_LOADED
    assert again.file is not None and first.file is not None
    assert again.file.id == first.file.id
    assert rewritten.outcome is LoadOutcome.LOADED
    assert (rewritten.loaded, rewritten.unchanged) == (0, 3)
    assert len(lines) == 3 and all(line.superseded_at is None for line in lines)
    assert len(files) == 2


REPLACEMENT = (
    HEADER
    # C100 adjusted: one line now, no crisis (the diagnosis was corrected), not an ED visit.
    + f"IP,MD,{MD_ID},C100,A100,4,1,2025-09-01,2025-09-03,2025-09-01,2025-09-03,D57.1,,,0120\n"
)


def test_an_adjusted_claim_replaces_the_original_and_the_past_still_sees_it(
    empty_db: Database, clock: FrozenClock
) -> None:
    _world(empty_db, clock)
    with empty_db.factory() as session:
        _load(session, clock, ORIGINAL)
        loaded_first = clock.now()
        clock.advance(timedelta(days=30))
        adjusted = _load(session, clock, REPLACEMENT, name="adjustment.csv")
        adjusted_at = clock.now()
        lines = _lines(session)
        before = _live_as_of(session, adjusted_at - timedelta(seconds=1))
        after = _live_as_of(session, adjusted_at)
        first_day = _live_as_of(session, loaded_first)
    assert (adjusted.loaded, adjusted.replacing, adjusted.superseded) == (1, 1, 2)
    # Hand-written: which lines a report reads, as of each moment.
    assert first_day == before == {("C100", 1), ("C100", 2), ("C200", 1)}
    assert after == {("A100", 1), ("C200", 1)}
    assert lines[("C100", 1)].superseded_at == adjusted_at
    assert adjusted.file is not None
    assert lines[("C100", 1)].superseded_by_file_id == adjusted.file.id
    replacement = lines[("A100", 1)]
    assert (replacement.adjusts_claim_id, replacement.adjustment_indicator) == ("C100", "4")
    assert not replacement.is_vaso_occlusive and replacement.is_inpatient_stay


def test_a_second_adjustment_replaces_the_first_and_an_old_original_stays_replaced(
    empty_db: Database, clock: FrozenClock
) -> None:
    _world(empty_db, clock)
    second = REPLACEMENT.replace("A100,4,1", "A101,4,1").replace("D57.1,", "D57.01,")
    with empty_db.factory() as session:
        _load(session, clock, ORIGINAL)
        clock.advance(timedelta(days=1))
        _load(session, clock, REPLACEMENT)
        clock.advance(timedelta(days=1))
        _load(session, clock, second)
        clock.advance(timedelta(days=1))
        # The original sent again in another file: it was replaced, it stays so.
        resent = _load(session, clock, ORIGINAL + "\n", name="old.csv")
        live = _live_as_of(session, clock.now())
    assert live == {("A101", 1), ("C200", 1)}
    assert (resent.loaded, resent.unchanged) == (0, 3)


def test_a_void_takes_the_claim_away(empty_db: Database, clock: FrozenClock) -> None:
    _world(empty_db, clock)
    void = HEADER + f"OT,MD,{MD_ID},C200,V200,1,1,2025-10-02,2025-10-02,,,D57.1,,11,\n"
    with empty_db.factory() as session:
        _load(session, clock, ORIGINAL)
        clock.advance(timedelta(days=2))
        voided = _load(session, clock, void, name="void.csv")
        clock.advance(timedelta(days=2))
        again = _load(session, clock, void + "\n", name="void-again.csv")
        live = _live_as_of(session, clock.now())
    assert (voided.voids, voided.loaded, voided.superseded) == (1, 0, 1)
    assert (again.voids, again.unchanged) == (0, 1)
    assert live == {("C100", 1), ("C100", 2)}


def test_a_corrected_line_replaces_the_line_sent_before(
    empty_db: Database, clock: FrozenClock
) -> None:
    _world(empty_db, clock)
    corrected = HEADER + f"OT,MD,{MD_ID},C200,,0,1,2025-10-02,2025-10-02,,,D57.00,,23,\n"
    with empty_db.factory() as session:
        _load(session, clock, ORIGINAL)
        clock.advance(timedelta(days=1))
        result = _load(session, clock, corrected, name="corrected.csv")
        c200 = session.scalars(
            select(ClaimLine).where(ClaimLine.claim_id == "C200").order_by(ClaimLine.id)
        ).all()
    assert (result.loaded, result.replacing, result.superseded) == (1, 1, 1)
    assert [line.superseded_at is None for line in c200] == [False, True]
    assert (c200[1].is_vaso_occlusive, c200[1].is_ed_visit) == (True, True)


def test_when_one_file_holds_a_claim_and_its_adjustment_the_adjustment_stands(
    empty_db: Database, clock: FrozenClock
) -> None:
    _world(empty_db, clock)
    with empty_db.factory() as session:
        result = _load(session, clock, ORIGINAL + REPLACEMENT.removeprefix(HEADER))
        live = _live_as_of(session, clock.now())
        stored = len(session.scalars(select(ClaimLine)).all())
    assert live == {("A100", 1), ("C200", 1)}
    assert stored == 4  # the original's two lines are kept, superseded from the start
    assert (result.loaded, result.superseded) == (4, 2)


def test_a_void_in_the_same_file_as_its_claim_leaves_nothing_of_it_live(
    empty_db: Database, clock: FrozenClock
) -> None:
    _world(empty_db, clock)
    void = f"OT,MD,{MD_ID},C200,V200,1,1,2025-10-02,2025-10-02,,,D57.1,,11,\n"
    with empty_db.factory() as session:
        result = _load(session, clock, ORIGINAL + void)
        live = _live_as_of(session, clock.now())
        stored = {line.claim_id for line in session.scalars(select(ClaimLine))}
    assert live == {("C100", 1), ("C100", 2)}
    assert stored == {"C100", "C200"}  # C200 kept, superseded from the start
    assert (result.loaded, result.superseded, result.unchanged) == (3, 1, 1)


def test_an_original_sent_again_after_its_adjustment_in_one_file_stays_replaced(
    empty_db: Database, clock: FrozenClock
) -> None:
    _world(empty_db, clock)
    # The original, its adjustment, then the original's first line again and a third line
    # of it: the adjustment came last as a new version, it stands.
    text = (
        ORIGINAL
        + REPLACEMENT.removeprefix(HEADER)
        + ORIGINAL.removeprefix(HEADER).splitlines(keepends=True)[0]
        + f"IP,MD,{MD_ID},C100,,0,3,2025-09-01,2025-09-04,2025-09-01,2025-09-04,D57.00,,,0300\n"
    )
    with empty_db.factory() as session:
        result = _load(session, clock, text)
        live = _live_as_of(session, clock.now())
    assert live == {("A100", 1), ("C200", 1)}
    assert (result.rows, result.loaded, result.unchanged, result.superseded) == (6, 5, 1, 3)


def test_a_lines_content_digest_is_the_same_as_lines_loaded_before(
    empty_db: Database, clock: FrozenClock
) -> None:
    """Lines loaded by an earlier version of the loader compare by this digest: a file
    sent again must find them unchanged."""
    _world(empty_db, clock)
    with empty_db.factory() as session:
        _load(session, clock, ORIGINAL.replace("C100,,0,1,2025-09-01", "C100,,0,1,20250901"))
        lines = _lines(session)
    # BLAKE2b (16 bytes) of the normalized values joined by \x1f: file type, Medicaid ID,
    # claim number, adjustment number, indicator, line, service dates, admission,
    # discharge, place, revenue code, diagnoses.
    values = (
        ("C100", 1, "IP\x1fMD1000001\x1fC100\x1f\x1f0\x1f1\x1f2025-09-01\x1f2025-09-04\x1f"
         "2025-09-01\x1f2025-09-04\x1f\x1f0120\x1fD57.00"),
        ("C200", 1, "OT\x1fMD1000001\x1fC200\x1f\x1f0\x1f1\x1f2025-10-02\x1f2025-10-02\x1f"
         "\x1f\x1f11\x1f\x1fD57.1"),
    )  # fmt: skip
    for claim, number, joined in values:
        expected = hashlib.blake2b(joined.encode(), digest_size=16).hexdigest()
        assert lines[(claim, number)].content_hash == expected


def test_a_first_big_load_leaves_the_tables_indexes_as_they_were(
    empty_db: Database, clock: FrozenClock
) -> None:
    """A load bigger than the table builds its indexes after the lines (on SQLite): they
    are all there after the commit, and after a rollback nothing of the load is."""
    _world(empty_db, clock)

    def indexes() -> list[tuple[str | None, list[str | None]]]:
        found = inspect(empty_db.engine).get_indexes("claim_lines")
        return sorted((index["name"], index["column_names"]) for index in found)

    before = indexes()
    rows = "".join(
        f"OT,MD,{MD_ID},K{claim:05d},,0,1,2025-10-02,2025-10-02,,,D57.00,,23,\n"
        for claim in range(500)
    )
    with empty_db.factory() as session:
        found = session.scalar(select(State).where(State.code == "MD"))
        assert found is not None
        result = load_claims(
            session,
            clock=clock,
            actor=SYSTEM,
            state=found,
            filename="first.csv",
            data=(HEADER + rows).encode(),
        )
        assert result.loaded == 500
        session.rollback()
    assert indexes() == before
    with empty_db.factory() as session:
        assert session.scalars(select(ClaimLine)).first() is None
        committed = _load(session, clock, HEADER + rows)
        ed_visits = session.scalars(select(ClaimLine).where(ClaimLine.is_ed_visit)).all()
    assert committed.loaded == len(ed_visits) == 500
    assert indexes() == before
    assert len(before) >= 5


def test_lines_written_in_several_batches_are_each_written_once(
    empty_db: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite gets many lines per statement and a batch of statements at a time: with
    small batches, every line of a file whose size is no multiple of either is there once."""
    monkeypatch.setattr(claims_loading, "STATEMENTS_PER_BATCH", 2)
    _world(empty_db, clock)
    count = 3 * claims_loading.ROWS_PER_INSERT * 2 + 7
    rows = "".join(
        f"OT,MD,{MD_ID},K{claim:05d},,0,1,2025-10-02,2025-10-02,,,D57.00,,23,\n"
        for claim in range(count)
    )
    with empty_db.factory() as session:
        result = _load(session, clock, HEADER + rows)
        stored = sorted(session.scalars(select(ClaimLine.claim_id)))
    assert result.loaded == count
    assert stored == [f"K{claim:05d}" for claim in range(count)]


# --- refused files, unmatched rows ----------------------------------------------------------


def test_one_malformed_row_loads_nothing_and_every_problem_is_listed(
    empty_db: Database, clock: FrozenClock
) -> None:
    _world(empty_db, clock)
    bad = (
        ORIGINAL
        + f"OT,MD,{MD_ID},C300,,0,1,2025-02-30,2025-03-01,,,D57.00,,,\n"  # line 5
        + f"OT,MD,{MD_ID},C301,,0,1,2025-03-05,2025-03-01,,,D57.00,,,\n"  # line 6
        + f"XX,MD,{MD_ID},C302,,0,1,2025-03-05,2025-03-05,,,D57.00,,,\n"  # line 7
        + f"OT,MD,{MD_ID},C303,,0,1,2025-03-05\n"  # line 8: fields missing
        + f"OT,MD,{MD_ID},C304,,0,1,2025-03-05,2025-03-05,,,5700,,,\n"  # line 9
    )
    with empty_db.factory() as session:
        result = _load(session, clock, bad)
        problems = [(problem.line, str(problem.message)) for problem in result.problems]
        stored = session.scalars(select(ClaimLine)).all(), session.scalars(select(ClaimFile)).all()
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "claims.load"))
    assert result.outcome is LoadOutcome.REFUSED
    assert problems == [
        (5, "SRVC_BGN_DT is “2025-02-30”, not a date (YYYY-MM-DD or YYYYMMDD)."),
        (6, "The service begins (SRVC_BGN_DT 2025-03-05) after it ends (SRVC_END_DT 2025-03-01)."),
        (7, "FILE_TYPE is “XX”: IP (inpatient) or OT (other services)."),
        (8, "This line has 8 fields; the header has 15."),
        (9, "DGNS_CD_1 is “5700”, not an ICD-10-CM code."),
    ]
    assert stored == ([], [])
    assert event is not None and event.outcome is AuditOutcome.FAILURE
    assert event.detail == {"outcome": "refused", "problems": 5}


def test_a_malformed_row_in_the_middle_of_a_big_file_loads_nothing(
    empty_db: Database, clock: FrozenClock
) -> None:
    _world(empty_db, clock)
    rows = [
        f"OT,MD,{MD_ID},K{claim:05d},,0,1,2025-10-02,2025-10-02,,,D57.00,,23,\n"
        for claim in range(3000)
    ]
    rows[1500] = rows[1500].replace("2025-10-02,2025-10-02", "2025-10-02,2025-13-02")
    rows.append("OT,MD,MD0000000,K99999,,0,1,2025-10-02,2025-10-02,,,D57.00,,23,\n")
    with empty_db.factory() as session:
        result = _load(session, clock, HEADER + "".join(rows))
        stored = session.scalars(select(ClaimLine)).all(), session.scalars(select(ClaimFile)).all()
    assert result.outcome is LoadOutcome.REFUSED
    assert [(problem.line, str(problem.message)) for problem in result.problems] == [
        (1502, "SRVC_END_DT is “2025-13-02”, not a date (YYYY-MM-DD or YYYYMMDD).")
    ]
    assert stored == ([], [])


def test_a_header_without_a_required_column_or_with_an_unknown_one_is_refused(
    empty_db: Database, clock: FrozenClock
) -> None:
    _world(empty_db, clock)
    with empty_db.factory() as session:
        missing = _load(session, clock, "FILE_TYPE,SUBMTG_STATE_CD\nOT,MD\n")
        unknown = _load(session, clock, HEADER.replace("REV_CD", "REVENUE") + "\n")
        empty = _load(session, clock, "")
    assert [str(p.message) for p in missing.problems] == [
        "Missing column(s): MSIS_IDENT_NUM, ORGNL_CLM_NUM, LINE_NUM, SRVC_BGN_DT, SRVC_END_DT."
    ]
    assert [p.line for p in unknown.problems] == [1]
    assert "REVENUE" in str(unknown.problems[0].message)
    assert [str(p.message) for p in empty.problems] == ["The file is empty."]


def test_unmatched_rows_are_listed_by_line_and_the_rest_loads(
    empty_db: Database, clock: FrozenClock
) -> None:
    _world(empty_db, clock)
    text = ORIGINAL + "OT,MD,MD9999999,C400,,0,1,2025-10-05,2025-10-05,,,D57.00,,23,\n"
    with empty_db.factory() as session:
        result = _load(session, clock, text)
        stored = session.scalars(select(ClaimFile)).one()
    assert (result.loaded, result.unmatched) == (3, 1)
    assert stored.unmatched == [{"line": 5, "reason": "no_patient"}]
    assert (stored.rows_total, stored.rows_loaded, stored.rows_unmatched) == (4, 3, 1)


def test_quoted_fields_crlf_and_blank_lines_read_as_plain_rows_and_keep_line_numbers(
    empty_db: Database, clock: FrozenClock
) -> None:
    """Rows without a quotation mark are split at their commas, the others read by the csv
    module: both give the same lines, and every line number counts the file's own lines
    (a quoted value may go on over two)."""
    _world(empty_db, clock)
    quoted = (
        HEADER.replace("\n", "\r\n")
        + f'"IP","MD","{MD_ID}","C100",,"0",1,2025-09-01,2025-09-04,2025-09-01,2025-09-04,'
        + '"D57.00",,,"0120"\r\n'  # line 2
        + "\r\n"  # line 3: blank
        + f"IP,MD,{MD_ID},C100,,0,2,2025-09-01,2025-09-04,2025-09-01,2025-09-04,D57.00,,,0450\r\n"
        + f'OT,MD,{MD_ID},C200,,0,1,2025-10-02,2025-10-02,,,"D57.1",,11,\r\n'  # line 5
        + 'OT,MD,"MD99\n99999",C400,,0,1,2025-10-05,2025-10-05,,,D57.00,,23,\r\n'  # lines 6-7
        + "OT,MD,MD9999999,C401,,0,1,2025-10-05,2025-10-05,,,D57.00,,23,\r\n"  # line 8
    )
    plain = ORIGINAL + "OT,MD,MD9999999,C401,,0,1,2025-10-05,2025-10-05,,,D57.00,,23,\n"
    with empty_db.factory() as session:
        broken = _load(session, clock, quoted)
        # A line break at the end of a quoted value is a blank the ID is read without.
        fixed = _load(session, clock, quoted.replace("MD99\n99999", "MD9999999\n"))
        again = _load(session, clock, plain)
        stored = session.scalars(select(ClaimFile).order_by(ClaimFile.id)).all()
        lines = _lines(session)
    # The Medicaid ID with a line break in it is refused on the line its row ends on.
    assert [problem.line for problem in broken.problems] == [7]
    assert (fixed.outcome, fixed.loaded, fixed.unmatched) == (LoadOutcome.LOADED, 3, 2)
    assert stored[0].unmatched == [
        {"line": 7, "reason": "no_patient"},
        {"line": 8, "reason": "no_patient"},
    ]
    assert set(lines) == {("C100", 1), ("C100", 2), ("C200", 1)}
    assert lines[("C200", 1)].diagnoses == ["D57.1"]
    # The same rows without quotes are the same lines: nothing new.
    assert (again.outcome, again.loaded, again.unchanged) == (LoadOutcome.LOADED, 0, 3)


def test_a_quotation_mark_never_closed_refuses_the_file(
    empty_db: Database, clock: FrozenClock
) -> None:
    _world(empty_db, clock)
    text = ORIGINAL + f'OT,MD,{MD_ID},"C500,,0,1,2025-10-05,2025-10-05,,,D57.00,,23,\n'
    with empty_db.factory() as session:
        result = _load(session, clock, text)
        stored = session.scalars(select(ClaimLine)).all()
    assert result.outcome is LoadOutcome.REFUSED
    assert stored == []


def test_a_file_for_a_state_the_uploader_does_not_hold_is_refused(
    empty_db: Database, clock: FrozenClock
) -> None:
    _world(empty_db, clock)
    with building(empty_db.factory, clock) as make:
        colorado = make.state("CO")
        maryland_id = make.state("MD").id
        make.patient(center=make.center(colorado), medicaid_id="CO2000002", schedule=False)
    colorado_file = HEADER + "OT,CO,CO2000002,K1,,0,1,2025-10-02,2025-10-02,,,D57.00,,,\n"
    with empty_db.factory() as session:
        # An analyst of Maryland only, loading for Colorado.
        for_colorado = _load(session, clock, colorado_file, state="CO", allowed={maryland_id})
        # ... or loading Colorado's rows as if they were Maryland's.
        as_maryland = _load(session, clock, colorado_file, state="MD", allowed={maryland_id})
        # An admin (every state) may load it for Colorado.
        admin = _load(session, clock, colorado_file, state="CO", allowed=None)
    assert [str(p.message) for p in for_colorado.problems] == [
        "You may load claims only for your own states; CO is not one of them."
    ]
    assert [(p.line, str(p.message)) for p in as_maryland.problems] == [
        (None, "This file is for CO, not MD. You may load claims only for your own states."),
        (2, "The claim is for CO; this file is loaded for MD."),
    ]
    assert (admin.outcome, admin.loaded) == (LoadOutcome.LOADED, 1)


def test_a_patient_who_moved_state_is_matched_by_each_states_medicaid_id(
    empty_db: Database, clock: FrozenClock
) -> None:
    with building(empty_db.factory, clock) as make:
        maryland_center = make.center(make.state("MD"))
        patient = make.patient(
            center=make.center(make.state("CO")), medicaid_id="CO3000003", schedule=False
        )
        patient_id = patient.id
    clock.advance(timedelta(days=90))
    with empty_db.factory() as session:
        moving = session.get(type(patient), patient_id)
        assert moving is not None
        change_record(
            session,
            clock=clock,
            actor=SYSTEM,
            library=shipped_protocols(),
            patient=moving,
            data=replace(
                PatientData.of(moving),
                state_id=maryland_center.state_id,
                center_id=maryland_center.id,
                medicaid_id="MD3000003",
            ),
            allowed_state_ids=None,
        )
        session.commit()
        in_colorado = _load(
            session,
            clock,
            HEADER + "OT,CO,CO3000003,K10,,0,1,2025-06-01,2025-06-01,,,D57.00,,,\n",
            state="CO",
        )
        in_maryland = _load(
            session,
            clock,
            HEADER + "OT,MD,MD3000003,M10,,0,1,2025-12-01,2025-12-01,,,D57.00,,,\n",
        )
        # Colorado's ID is not Maryland's: it matches nobody in a Maryland file.
        crossed = _load(
            session,
            clock,
            HEADER + "OT,MD,CO3000003,M11,,0,1,2025-12-02,2025-12-02,,,D57.00,,,\n",
        )
        owners = {line.claim_id: line.patient_id for line in session.scalars(select(ClaimLine))}
    assert (in_colorado.loaded, in_maryland.loaded, crossed.unmatched) == (1, 1, 1)
    assert owners == {"K10": patient_id, "M10": patient_id}


# --- the code lists changed -----------------------------------------------------------------


def test_rederive_works_the_flags_out_again_after_a_list_changed(
    empty_db: Database, clock: FrozenClock, tmp_path: Path
) -> None:
    _world(empty_db, clock)
    shipped = CODES_DIR
    for source in shipped.glob("*.yaml"):
        text = source.read_text(encoding="utf-8")
        if source.name == "emergency_department.yaml":
            text = text.replace('code: "23"', 'code: "11"')  # office visits count, say
        (tmp_path / source.name).write_text(text, encoding="utf-8")
    with empty_db.factory() as session:
        _load(session, clock, ORIGINAL)
        done = rederive_flags(session, clock=clock, actor=SYSTEM, codes=load_code_lists(tmp_path))
        session.commit()
        flags = {key: line.is_ed_visit for key, line in _lines(session).items()}
    assert (done.lines, done.changed) == (3, 1)
    assert flags == {("C100", 1): False, ("C100", 2): True, ("C200", 1): True}
