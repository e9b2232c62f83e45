"""The shared patient record: states, therapies, treatment centers, patients, caregivers,
observations. Every room reads these; only `core` defines them."""

from __future__ import annotations

import enum
import unicodedata
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Enum,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    case,
    false,
    type_coerce,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

from core.db import Base, UTCDateTime


def enum_column(enum_type: type[enum.Enum], length: int = 32) -> Enum:
    """A portable enum: a VARCHAR with a CHECK constraint, storing the enum's values."""
    return Enum(
        enum_type,
        native_enum=False,
        create_constraint=True,
        length=length,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


# Our own namespace for identifier systems nobody configured yet.
SID_BASE = "https://cgt-access.org/fhir/sid"


class Language(enum.StrEnum):
    EN = "en"
    ES = "es"


class PatientStatus(enum.StrEnum):
    ENROLLED = "enrolled"
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"
    DECEASED = "deceased"
    LOST_TO_FOLLOW_UP = "lost_to_follow_up"


class ObservationStatus(enum.StrEnum):
    """FHIR's Observation.status (required binding), as stored: what counts as a result is
    final, amended or corrected; entered-in-error is kept but counts nowhere."""

    REGISTERED = "registered"
    PRELIMINARY = "preliminary"
    FINAL = "final"
    AMENDED = "amended"
    CORRECTED = "corrected"
    CANCELLED = "cancelled"
    ENTERED_IN_ERROR = "entered-in-error"
    UNKNOWN = "unknown"


# The statuses of an observation that stands as a result (reports and pages count these).
RESULT_STATUSES = (ObservationStatus.FINAL, ObservationStatus.AMENDED, ObservationStatus.CORRECTED)


class ObservationSource(enum.StrEnum):
    COORDINATOR = "coordinator"
    PATIENT = "patient"
    CENTER = "center"


class State(Base):
    """A state (or DC, Puerto Rico) running the model: its program, zone and help line."""

    __tablename__ = "states"
    __table_args__ = (Index("ix_states_medicaid_id_system", "medicaid_id_system", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(2), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    time_zone: Mapped[str] = mapped_column(String(64))
    program_name: Mapped[str] = mapped_column(String(120))
    program_phone: Mapped[str] = mapped_column(String(16))
    # Outside quiet hours: texts reach people only from `texts_from_hour` until
    # `texts_until_hour`, in the recipient's own zone (default 8:00-21:00).
    texts_from_hour: Mapped[int] = mapped_column(Integer, default=8, server_default="8")
    texts_until_hour: Mapped[int] = mapped_column(Integer, default=21, server_default="21")
    # The system URI of this state's Medicaid IDs in FHIR identifiers (set by admins; None:
    # `medicaid_system`'s default), so a center's Patient names its state by its identifier.
    medicaid_id_system: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    centers: Mapped[list[TreatmentCenter]] = relationship(back_populates="state")

    @property
    def medicaid_system(self) -> str:
        """The system URI of this state's Medicaid IDs: the configured one, or the default."""
        return self.medicaid_id_system or self.default_medicaid_system

    @property
    def default_medicaid_system(self) -> str:
        return f"{SID_BASE}/medicaid/{self.code.lower()}"


class Therapy(Base):
    """An approved gene therapy covered by an outcomes-based agreement."""

    __tablename__ = "therapies"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    brand_name: Mapped[str] = mapped_column(String(80))
    generic_name: Mapped[str] = mapped_column(String(120))
    manufacturer: Mapped[str] = mapped_column(String(120))


class TherapyCode(Base):
    """A code that names a therapy in data from outside (an NDC, RxNorm or HCPCS code), so a
    center's infusion Procedure or MedicationAdministration says which therapy it was."""

    __tablename__ = "therapy_codes"
    __table_args__ = (UniqueConstraint("system", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    therapy_id: Mapped[int] = mapped_column(ForeignKey("therapies.id"), index=True)
    system: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(64))
    display: Mapped[str | None] = mapped_column(String(200))


class TreatmentCenter(Base):
    """A qualified treatment center that infuses and follows patients."""

    __tablename__ = "treatment_centers"
    __table_args__ = (UniqueConstraint("state_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    state_id: Mapped[int] = mapped_column(ForeignKey("states.id"), index=True)
    name: Mapped[str] = mapped_column(String(160))
    city: Mapped[str] = mapped_column(String(80))
    phone: Mapped[str | None] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # The system URI of the center's medical record numbers in FHIR identifiers (admins).
    mrn_system: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    state: Mapped[State] = relationship(back_populates="centers")

    @property
    def record_number_system(self) -> str:
        """The system URI of the center's record numbers: the configured one, or the default."""
        return self.mrn_system or self.default_record_number_system

    @property
    def default_record_number_system(self) -> str:
        return f"{SID_BASE}/mrn/center-{self.id}"


class Patient(Base):
    """A person who received (or will receive) a gene therapy and is followed for 15 years."""

    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("state_id", "medicaid_id"),
        UniqueConstraint("center_id", "center_mrn"),
        Index("ix_patients_state_status", "state_id", "status"),
        Index("ix_patients_family_given", "family_name", "given_name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    state_id: Mapped[int] = mapped_column(ForeignKey("states.id"))
    therapy_id: Mapped[int] = mapped_column(ForeignKey("therapies.id"), index=True)
    center_id: Mapped[int] = mapped_column(ForeignKey("treatment_centers.id"), index=True)
    medicaid_id: Mapped[str] = mapped_column(String(32))
    center_mrn: Mapped[str | None] = mapped_column(String(32))
    given_name: Mapped[str] = mapped_column(String(80))
    family_name: Mapped[str] = mapped_column(String(80))
    birth_date: Mapped[date] = mapped_column(Date)
    preferred_language: Mapped[Language] = mapped_column(enum_column(Language, 2))
    time_zone: Mapped[str] = mapped_column(String(64))
    mobile_phone: Mapped[str | None] = mapped_column(String(16), index=True)
    infusion_date: Mapped[date | None] = mapped_column(Date)
    status: Mapped[PatientStatus] = mapped_column(enum_column(PatientStatus))
    # Raised by every change of the record: the FHIR versionId (and ETag) of the Patient.
    version_id: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    state: Mapped[State] = relationship()
    therapy: Mapped[Therapy] = relationship()
    center: Mapped[TreatmentCenter] = relationship()
    caregiver_links: Mapped[list[CaregiverLink]] = relationship(back_populates="patient")

    @property
    def full_name(self) -> str:
        return f"{self.given_name} {self.family_name}"


class PatientHistory(Base):
    """The facts of a patient's record that reports look back on (state, center, therapy,
    Medicaid ID, infusion date, status), one row per version from when it held: a report
    run as of a past date reads the version that held then (a patient who moved state, an
    infusion date corrected later, a death recorded after the quarter)."""

    __tablename__ = "patient_history"
    __table_args__ = (
        UniqueConstraint("patient_id", "version_id"),
        Index("ix_patient_history_patient_valid_from", "patient_id", "valid_from"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    version_id: Mapped[int] = mapped_column(Integer)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    state_id: Mapped[int] = mapped_column(ForeignKey("states.id"))
    center_id: Mapped[int] = mapped_column(ForeignKey("treatment_centers.id"))
    therapy_id: Mapped[int] = mapped_column(ForeignKey("therapies.id"))
    medicaid_id: Mapped[str] = mapped_column(String(32))
    infusion_date: Mapped[date | None] = mapped_column(Date)
    status: Mapped[PatientStatus] = mapped_column(enum_column(PatientStatus))


class Caregiver(Base):
    """A parent, partner or other person who helps one or more patients."""

    __tablename__ = "caregivers"

    id: Mapped[int] = mapped_column(primary_key=True)
    given_name: Mapped[str] = mapped_column(String(80))
    family_name: Mapped[str] = mapped_column(String(80))
    mobile_phone: Mapped[str | None] = mapped_column(String(16), index=True)
    preferred_language: Mapped[Language] = mapped_column(enum_column(Language, 2))
    time_zone: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    links: Mapped[list[CaregiverLink]] = relationship(back_populates="caregiver")

    @property
    def full_name(self) -> str:
        return f"{self.given_name} {self.family_name}"


class ProxyRight(enum.StrEnum):
    VIEW_SCHEDULE = "view_schedule"
    # Confirm a visit or ask to move it: seeing the schedule alone does not allow it.
    MANAGE_VISITS = "manage_visits"
    RECEIVE_REMINDERS = "receive_reminders"
    VIEW_EDUCATION = "view_education"
    REPORT_EVENTS = "report_events"
    # Answer the patient's questionnaires for them (a parent for a child).
    ANSWER_QUESTIONNAIRES = "answer_questionnaires"


class Relation(enum.StrEnum):
    """Who a caregiver is to the patient: a list the pages can translate and say from either
    side ("Denise, mother" to staff; "You are Maya's mother." to Denise), and OTHER with the
    coordinator's own words when nothing on the list fits."""

    MOTHER = "mother"
    FATHER = "father"
    PARENT = "parent"
    STEPMOTHER = "stepmother"
    STEPFATHER = "stepfather"
    GRANDMOTHER = "grandmother"
    GRANDFATHER = "grandfather"
    AUNT = "aunt"
    UNCLE = "uncle"
    SISTER = "sister"
    BROTHER = "brother"
    PARTNER = "partner"  # a spouse or partner
    GUARDIAN = "guardian"  # a legal guardian
    FOSTER_PARENT = "foster_parent"
    FRIEND = "friend"
    OTHER = "other"


RELATION_WORDS_MAX = 40
# Words coordinators type for an entry of the list, in English and Spanish (lower case,
# accents off): "Mom" and "mamá" are the mother. Migration 2026-12-07-1000 keeps a copy.
_RELATION_WORDS: dict[str, Relation] = {
    **dict.fromkeys(("mother", "mom", "mum", "mommy", "mama", "madre"), Relation.MOTHER),
    **dict.fromkeys(("father", "dad", "daddy", "papa", "padre"), Relation.FATHER),
    **dict.fromkeys(("parent", "madre o padre", "padre o madre"), Relation.PARENT),
    **dict.fromkeys(("stepmother", "step-mother", "madrastra"), Relation.STEPMOTHER),
    **dict.fromkeys(("stepfather", "step-father", "padrastro"), Relation.STEPFATHER),
    **dict.fromkeys(("grandmother", "grandma", "granny", "abuela"), Relation.GRANDMOTHER),
    **dict.fromkeys(("grandfather", "grandpa", "abuelo"), Relation.GRANDFATHER),
    **dict.fromkeys(("aunt", "auntie", "tia"), Relation.AUNT),
    **dict.fromkeys(("uncle", "tio"), Relation.UNCLE),
    **dict.fromkeys(("sister", "hermana"), Relation.SISTER),
    **dict.fromkeys(("brother", "hermano"), Relation.BROTHER),
    **dict.fromkeys(
        (
            "partner",
            "spouse",
            "wife",
            "husband",
            "boyfriend",
            "girlfriend",
            "pareja",
            "esposa",
            "esposo",
            "novia",
            "novio",
        ),
        Relation.PARTNER,
    ),
    **dict.fromkeys(
        ("guardian", "legal guardian", "tutor", "tutora", "tutor legal"), Relation.GUARDIAN
    ),
    **dict.fromkeys(
        ("foster parent", "foster mother", "foster father", "foster_parent"), Relation.FOSTER_PARENT
    ),
    **dict.fromkeys(("friend", "amigo", "amiga"), Relation.FRIEND),
}


def parse_relation(words: str) -> tuple[Relation, str | None]:
    """Words typed for a relationship ("Mom", "abuela", "godmother", or a code such as
    "foster_parent") as the list's entry, else OTHER with the words themselves."""
    typed = " ".join(words.split())
    key = "".join(
        ch for ch in unicodedata.normalize("NFD", typed.casefold()) if not unicodedata.combining(ch)
    )
    if key in _RELATION_WORDS:
        return _RELATION_WORDS[key], None
    return Relation.OTHER, typed[:RELATION_WORDS_MAX] or None


class CaregiverLink(Base):
    """What a caregiver may do for one patient (proxy access), given by the patient or staff."""

    __tablename__ = "caregiver_links"
    __table_args__ = (UniqueConstraint("caregiver_id", "patient_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    caregiver_id: Mapped[int] = mapped_column(ForeignKey("caregivers.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    relation: Mapped[Relation] = mapped_column("relationship", enum_column(Relation, 40))
    # The coordinator's own words when `relation` is OTHER ("godmother"), else None.
    relation_other: Mapped[str | None] = mapped_column(
        "relationship_other", String(RELATION_WORDS_MAX)
    )
    can_view_schedule: Mapped[bool] = mapped_column(Boolean, default=True)
    can_manage_visits: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    can_receive_reminders: Mapped[bool] = mapped_column(Boolean, default=False)
    can_view_education: Mapped[bool] = mapped_column(Boolean, default=True)
    can_report_events: Mapped[bool] = mapped_column(Boolean, default=False)
    can_answer_questionnaires: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    caregiver: Mapped[Caregiver] = relationship(back_populates="links")
    patient: Mapped[Patient] = relationship(back_populates="caregiver_links")

    @hybrid_property
    def relationship_label(self) -> str:
        """The relationship in stored words: the list's code ("mother"), or the coordinator's
        own words for OTHER. Pages show it through `word("relation", ...)`, which translates
        a code and leaves a person's words as they are."""
        if self.relation is Relation.OTHER and self.relation_other:
            return self.relation_other
        return self.relation.value

    @relationship_label.inplace.setter
    def _relationship_label_setter(self, words: str) -> None:
        # Words are read into the list (code that sets them, e.g. tests, keeps working).
        self.relation, self.relation_other = parse_relation(words)

    @relationship_label.inplace.expression
    @classmethod
    def _relationship_label_expression(cls) -> ColumnElement[str]:
        return case(
            (cls.relation == Relation.OTHER, cls.relation_other),
            else_=type_coerce(cls.relation, String(RELATION_WORDS_MAX)),
        )

    def has(self, right: ProxyRight) -> bool:
        return bool(getattr(self, f"can_{right.value}"))

    def rights(self) -> set[ProxyRight]:
        return {right for right in ProxyRight if self.has(right)}


class Observation(Base):
    """One measured or reported fact about a patient, coded so FHIR maps it 1:1."""

    __tablename__ = "observations"
    __table_args__ = (
        Index("ix_observations_patient_code", "patient_id", "code"),
        # A center's results of one kind in id order: FHIR searches page by (code, id)
        # without sorting all of them (measured on 300,000 rows: 28 ms a page -> 0.4 ms).
        Index("ix_observations_code_id", "code", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    code_system: Mapped[str] = mapped_column(String(120))
    code: Mapped[str] = mapped_column(String(64))
    display: Mapped[str] = mapped_column(String(200))
    value_quantity: Mapped[Decimal | None] = mapped_column(Numeric(14, 4))
    value_unit: Mapped[str | None] = mapped_column(String(32))
    value_code_system: Mapped[str | None] = mapped_column(String(120))
    value_code: Mapped[str | None] = mapped_column(String(64))
    value_text: Mapped[str | None] = mapped_column(Text)
    value_boolean: Mapped[bool | None] = mapped_column(Boolean)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[ObservationSource] = mapped_column(enum_column(ObservationSource, 16))
    recorded_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    extra: Mapped[dict[str, object] | None] = mapped_column(JSON)
    status: Mapped[ObservationStatus] = mapped_column(
        enum_column(ObservationStatus, 20), default=ObservationStatus.FINAL, server_default="final"
    )
    # Raised by every correction: the FHIR versionId (and ETag) of the observation.
    version_id: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def last_updated(self) -> datetime:
        return self.updated_at or self.created_at


class ObservationRevision(Base):
    """A version of an observation that a correction replaced: what it said, who recorded
    it and when, and who replaced it, when and why. The first recorded value is never lost."""

    __tablename__ = "observation_revisions"
    __table_args__ = (UniqueConstraint("observation_id", "version_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    observation_id: Mapped[int] = mapped_column(ForeignKey("observations.id"), index=True)
    version_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    value_quantity: Mapped[Decimal | None] = mapped_column(Numeric(14, 4))
    value_unit: Mapped[str | None] = mapped_column(String(32))
    value_code_system: Mapped[str | None] = mapped_column(String(120))
    value_code: Mapped[str | None] = mapped_column(String(64))
    value_text: Mapped[str | None] = mapped_column(Text)
    value_boolean: Mapped[bool | None] = mapped_column(Boolean)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    replaced_at: Mapped[datetime] = mapped_column(UTCDateTime())
    replaced_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    replaced_by_label: Mapped[str] = mapped_column(String(254))
    reason: Mapped[str] = mapped_column(String(500))


class Condition(Base):
    """A coded diagnosis a treatment center sent (e.g. sickle cell disease, ICD-10-CM D57.*),
    kept as a fact of the record: what it is, whether it is active and confirmed, since when."""

    __tablename__ = "conditions"
    __table_args__ = (Index("ix_conditions_patient_code", "patient_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    code_system: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(64))
    display: Mapped[str | None] = mapped_column(String(200))
    clinical_status: Mapped[str | None] = mapped_column(String(20))
    verification_status: Mapped[str | None] = mapped_column(String(20))
    onset_date: Mapped[date | None] = mapped_column(Date)
    recorded_date: Mapped[date | None] = mapped_column(Date)
    source: Mapped[ObservationSource] = mapped_column(enum_column(ObservationSource, 16))
    version_id: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
