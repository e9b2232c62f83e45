"""Tables of education: what each state funds and when, what coordinators assign, and each
reader's progress and completions. The modules' text lives in files (`modules/`); rows name
a module by its key and the version that was read."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime


class ModuleFunding(Base):
    """A state funds a module from `funded_from` until `funded_until` (inclusive; open-ended
    when None). New readers are offered a funded module only inside a window; what they
    completed stays visible after it."""

    __tablename__ = "module_fundings"
    __table_args__ = (Index("ix_module_fundings_state_module", "state_id", "module_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    state_id: Mapped[int] = mapped_column(ForeignKey("states.id"))
    module_key: Mapped[str] = mapped_column(String(64))
    funded_from: Mapped[date] = mapped_column(Date)
    funded_until: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ModuleAssignment(Base):
    """A coordinator asked a patient or caregiver (their login) to read a module by a date."""

    __tablename__ = "module_assignments"
    __table_args__ = (Index("ix_module_assignments_patient", "patient_id", "module_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    module_key: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # The patient the assignment is about (the reader, or the patient a caregiver helps).
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    due_on: Mapped[date | None] = mapped_column(Date)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    assigned_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # The outbox row of the text that sent its link, when one was sent.
    message_id: Mapped[int | None] = mapped_column(ForeignKey("outbound_messages.id"))


class ModuleProgress(Base):
    """Where one reader is in one module: resumable on any device."""

    __tablename__ = "module_progress"
    __table_args__ = (UniqueConstraint("user_id", "module_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    module_key: Mapped[str] = mapped_column(String(64))
    module_version: Mapped[int] = mapped_column(Integer)
    current_section: Mapped[str] = mapped_column(String(64))
    # Section ids read so far, in reading order.
    sections_done: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # The knowledge check's first tries (question id -> choice): the score counts them, so
    # they are kept here, where no reload or second device can reset them.
    check_first: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ModuleCompletion(Base):
    """A reader finished a module and passed its knowledge check: which version, what
    score. `state_id` and `reader_role` are kept for the state's reach figures."""

    __tablename__ = "module_completions"
    __table_args__ = (
        UniqueConstraint("user_id", "module_key", "module_version"),
        Index("ix_module_completions_state_completed", "state_id", "completed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    module_key: Mapped[str] = mapped_column(String(64))
    module_version: Mapped[int] = mapped_column(Integer)
    score: Mapped[int] = mapped_column(Integer)  # questions right at the first try
    questions: Mapped[int] = mapped_column(Integer)
    completed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state_id: Mapped[int] = mapped_column(ForeignKey("states.id"))
    reader_role: Mapped[str] = mapped_column(String(16))  # patient | caregiver
    # The reader's own patient record (patients) — None for caregivers.
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
