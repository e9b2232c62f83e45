"""Tables of the worklist: who follows which patient day to day."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime


class CareAssignment(Base):
    """The coordinator who follows a patient day to day (set from the worklist)."""

    __tablename__ = "care_assignments"

    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), primary_key=True)
    coordinator_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    assigned_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
