"""Tables of reporting: the Medicaid claims states load (T-MSIS extracts), and report
snapshots (the figures of a report as of a moment, kept so that a figure sent to CMS can be
shown again exactly).

Claims are kept with their history: a line replaced by an adjustment, or by a later load of
a corrected file, is not deleted but `superseded_at`; a report run as of a past date reads
the lines that were loaded and not yet superseded then."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime
from core.models import Observation, ObservationRevision, enum_column


class ClaimType(enum.StrEnum):
    """The T-MSIS Analytic Files a line comes from: inpatient (IP) or other services (OT)."""

    INPATIENT = "IP"
    OTHER_SERVICES = "OT"


class ClaimFile(Base):
    """One claims extract a state loaded: who loaded it, when, its digest (loading the same
    file again changes nothing), and what came of its rows."""

    __tablename__ = "claim_files"
    __table_args__ = (UniqueConstraint("state_id", "sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    state_id: Mapped[int] = mapped_column(ForeignKey("states.id"), index=True)
    filename: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    loaded_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    loaded_by_label: Mapped[str] = mapped_column(String(254))
    rows_total: Mapped[int] = mapped_column(Integer)
    rows_loaded: Mapped[int] = mapped_column(Integer)
    rows_replacing: Mapped[int] = mapped_column(Integer)  # adjustments that replaced a line
    rows_unchanged: Mapped[int] = mapped_column(Integer)  # lines already loaded as they are
    rows_unmatched: Mapped[int] = mapped_column(Integer)  # no patient with that Medicaid ID
    rows_voids: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # voids
    # Earlier lines this load superseded (replaced by an adjustment or a corrected line, or
    # voided), counting a version of a claim that a later one in the same file replaced.
    lines_superseded: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The unmatched rows (line number and reason; no names), shown on the load's page.
    unmatched: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class ClaimLine(Base):
    """One claim line of a matched patient, with what reports read from it already worked
    out at load time: a vaso-occlusive crisis (any diagnosis in the code list), an inpatient
    stay, an emergency-department visit (`reporting/codes/*.yaml`). `diagnoses` keeps the
    codes in ICD-10-CM's dotted form, in the order sent.

    `claim_id` is the line's own claim number: the original claim's (TAF ORGNL_CLM_NUM), or
    for an adjustment its own (ADJSTMT_CLM_NUM), with the original's in `adjusts_claim_id`.
    A claim's versions are the lines whose `claim_id` or `adjusts_claim_id` is the
    original's number (see `reporting.claims`)."""

    __tablename__ = "claim_lines"
    __table_args__ = (
        Index("ix_claim_lines_key", "state_id", "claim_id", "line_number"),
        Index("ix_claim_lines_patient_service", "patient_id", "service_begin"),
        # Only adjustments carry an adjusted claim: the index holds those alone.
        Index(
            "ix_claim_lines_adjusts",
            "state_id",
            "adjusts_claim_id",
            sqlite_where=text("adjusts_claim_id IS NOT NULL"),
            postgresql_where=text("adjusts_claim_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("claim_files.id"), index=True)
    state_id: Mapped[int] = mapped_column(ForeignKey("states.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    medicaid_id: Mapped[str] = mapped_column(String(32))
    claim_id: Mapped[str] = mapped_column(String(50))
    line_number: Mapped[int] = mapped_column(Integer)
    claim_type: Mapped[ClaimType] = mapped_column(enum_column(ClaimType, 2))
    # The original claim this one adjusts (TAF ORGNL_CLM_NUM), when it is an adjustment.
    adjusts_claim_id: Mapped[str | None] = mapped_column(String(50))
    adjustment_indicator: Mapped[str | None] = mapped_column(String(2))
    service_begin: Mapped[date] = mapped_column(Date)
    service_end: Mapped[date] = mapped_column(Date)
    admission_date: Mapped[date | None] = mapped_column(Date)
    discharge_date: Mapped[date | None] = mapped_column(Date)
    place_of_service: Mapped[str | None] = mapped_column(String(2))
    revenue_code: Mapped[str | None] = mapped_column(String(4))
    diagnoses: Mapped[list[str]] = mapped_column(JSON)
    is_vaso_occlusive: Mapped[bool] = mapped_column(Boolean)
    is_inpatient_stay: Mapped[bool] = mapped_column(Boolean)
    is_ed_visit: Mapped[bool] = mapped_column(Boolean)
    # A digest of the line as sent: loading the same line again changes nothing.
    content_hash: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    superseded_by_file_id: Mapped[int | None] = mapped_column(ForeignKey("claim_files.id"))


class ReportSnapshot(Base):
    """A report's figures as of a moment: which report, with which filters, over which
    agreement version, computed when and from data as of when. The nightly job makes them;
    a figure sent to CMS is shown again from its snapshot."""

    __tablename__ = "report_snapshots"
    __table_args__ = (Index("ix_report_snapshots_report_as_of", "report", "as_of"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    report: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The agreements' files' digest when the report rests on them (a changed file is a new
    # version of the terms: its snapshot says so).
    definition_hash: Mapped[str | None] = mapped_column(String(64))
    as_of: Mapped[datetime] = mapped_column(UTCDateTime())
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    computed_by: Mapped[str] = mapped_column(String(254))
    figures: Mapped[dict[str, Any]] = mapped_column(JSON)


# --- indexes the outcome measures read through (reporting/outcomes.py) ------------------------

# The claim lines of a vaso-occlusive crisis by patient and day, with every column an event
# rule reads: the measures' main read never touches the table (a small share of all lines).
Index(
    "ix_claim_lines_voc",
    ClaimLine.patient_id,
    ClaimLine.service_begin,
    ClaimLine.is_vaso_occlusive,
    ClaimLine.is_inpatient_stay,
    ClaimLine.is_ed_visit,
    ClaimLine.loaded_at,
    ClaimLine.superseded_at,
    sqlite_where=ClaimLine.is_vaso_occlusive == true(),
    postgresql_where=ClaimLine.is_vaso_occlusive == true(),
)
# A patient's observations of a code by when they were taken (a measure's window).
Index(
    "ix_observations_patient_code_effective",
    Observation.patient_id,
    Observation.code,
    Observation.effective_at,
)
# The versions replaced after a moment (what a report as of a past date reads back).
Index("ix_observation_revisions_replaced_at", ObservationRevision.replaced_at)
