"""Tables of the questionnaires: each loaded Questionnaire (its resource as sent) and each
response a patient (or a caregiver for them) is answering or has submitted."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, UTCDateTime
from core.models import Language, enum_column


class QuestionnaireStatus(enum.StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


class ResponseStatus(enum.StrEnum):
    """FHIR's QuestionnaireResponse.status, the two we use."""

    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"


class Questionnaire(Base):
    """One language of one version of a questionnaire, as loaded. The English and Spanish
    versions of the same url and version are the same instrument (linked by url+version)."""

    __tablename__ = "questionnaires"
    __table_args__ = (UniqueConstraint("url", "version", "language"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(64))
    language: Mapped[Language] = mapped_column(enum_column(Language, 2))
    title: Mapped[str] = mapped_column(String(255))
    status: Mapped[QuestionnaireStatus] = mapped_column(enum_column(QuestionnaireStatus, 16))
    # The resource exactly as loaded (parsed and checked), and its digest: loading the same
    # file again changes nothing, a changed one under the same url+version is refused.
    resource: Mapped[dict[str, Any]] = mapped_column(JSON)
    digest: Mapped[str] = mapped_column(String(64))
    loaded_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    loaded_by_label: Mapped[str] = mapped_column(String(254))
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @property
    def canonical(self) -> str:
        """`url|version`, as a QuestionnaireResponse names it."""
        return f"{self.url}|{self.version}"


class QuestionnaireResponse(Base):
    """A patient's answers to one questionnaire: a draft saved page by page (in-progress),
    then, once submitted, the FHIR QuestionnaireResponse and the score it gave."""

    __tablename__ = "questionnaire_responses"
    __table_args__ = (Index("ix_questionnaire_responses_patient_status", "patient_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    questionnaire_id: Mapped[int] = mapped_column(ForeignKey("questionnaires.id"), index=True)
    # The visit it was asked for, when it was (the due-questionnaire planning decides).
    visit_id: Mapped[int | None] = mapped_column(ForeignKey("visits.id"), index=True)
    status: Mapped[ResponseStatus] = mapped_column(enum_column(ResponseStatus, 16))
    # The answers so far: linkId -> list of answers ({"option": n} or {"value": ...}).
    answers: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The pages (by index) saved at least once: the person resumes at the first page that
    # applies and is not among them.
    saved_pages: Mapped[list[int]] = mapped_column(JSON)
    started_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Who submitted: the patient, or a caregiver acting for them (a RelatedPerson in FHIR).
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    author_caregiver_id: Mapped[int | None] = mapped_column(ForeignKey("caregivers.id"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    authored_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resource: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    score: Mapped[Decimal | None] = mapped_column(Numeric(14, 4))
    observation_id: Mapped[int | None] = mapped_column(ForeignKey("observations.id"))

    questionnaire: Mapped[Questionnaire] = relationship()
