"""Loading a state's Medicaid claims extract (a CSV modelled on the inpatient and
other-services files of the T-MSIS Analytic Files; the layout is `COLUMNS`, documented in
README "Medicaid claims") into `ClaimFile` and `ClaimLine`.

What a load does, in order:
1. A file whose bytes were loaded for the state before changes nothing (its SHA-256).
2. Every row is read and checked; one malformed row (a missing or extra field, a bad date, a
   service that begins after it ends, an unknown file type, another state, a repeated claim
   line with other content, ...) refuses the whole file, and every problem is listed with its
   line: nothing is loaded.
3. Rows are matched to patients by the state and the Medicaid ID (the patient's current ID,
   or one they held in that state before: `PatientHistory`). Rows without a patient do not
   block the load: they are listed by line (no IDs, no names) in `ClaimFile.unmatched`.
4. Each matched row is compared with what is loaded:
   - a line sent before exactly as it is now (claim number, line number, content) changes
     nothing, even if it has been replaced since;
   - an original claim line (TAF ADJSTMT_IND 0) with new content is loaded; it supersedes the
     line of the same claim and line number (a corrected re-send); an original whose claim has
     been adjusted since is left replaced;
   - a replacement (ADJSTMT_IND 4, its own number in ADJSTMT_CLM_NUM, the original's in
     ORGNL_CLM_NUM) that brings something new is loaded and supersedes every live line of the
     claim (the original's, and earlier adjustments') it does not repeat;
   - a void (ADJSTMT_IND 1) supersedes every live line of the claim and loads nothing;
   - when one file holds several versions of a claim, the last one in the file stands; the
     earlier ones are loaded already superseded, so that no moment ever shows them.
   Superseded lines are kept (`superseded_at`, `superseded_by_file_id`): a report as of a
   past moment T reads the lines with `loaded_at <= T` and no `superseded_at` or one after T.
5. The flags reports read (vaso-occlusive crisis, hospital stay, emergency-department visit)
   are worked out from the code lists (`reporting/codes/*.yaml`, `reporting.code_lists`).

Speed: each row is read, checked and matched in one pass into one plain tuple, the values
it goes to the database with (`layout.Line`); a row without a quotation mark is split at
its commas (the csv module reads the others); a row's dates, and its file type, state,
indicator, codes and places, are each checked once per distinct value and found again with
one lookup; lines go to the database with the driver's executemany on SQLite, 55 lines per
INSERT (the load's own values written once in the statement; a load bigger than the table
builds the indexes after its lines) and COPY on PostgreSQL. A million rows load in well
under a minute (`make bench ONLY=reporting.claims`)."""

from reporting.claims.layout import COLUMNS, UNMATCHED_NO_PATIENT, Column, Problem
from reporting.claims.loading import ClaimLoad, LoadOutcome, load_claims
from reporting.claims.queries import Rederived, get_load, list_loads, rederive_flags

__all__ = [
    "COLUMNS",
    "UNMATCHED_NO_PATIENT",
    "ClaimLoad",
    "Column",
    "LoadOutcome",
    "Problem",
    "Rederived",
    "get_load",
    "list_loads",
    "load_claims",
    "rederive_flags",
]
