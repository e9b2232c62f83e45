"""Tables of identity: users and their scopes, login sessions and attempts, invitations,
password-reset codes. Everything that must survive across process copies lives here."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, UTCDateTime
from core.models import Caregiver, Language, Patient, State, TreatmentCenter, enum_column


class Role(enum.StrEnum):
    PATIENT = "patient"
    CAREGIVER = "caregiver"
    COORDINATOR = "coordinator"
    STATE_ANALYST = "state_analyst"
    ADMIN = "admin"

    @property
    def is_staff(self) -> bool:
        return self in (Role.COORDINATOR, Role.STATE_ANALYST, Role.ADMIN)


class User(Base):
    """Someone who can log in. Patients and caregivers point at their record."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(
            "(role <> 'patient') OR (patient_id IS NOT NULL)", name="patient_user_has_patient"
        ),
        CheckConstraint(
            "(role <> 'caregiver') OR (caregiver_id IS NOT NULL)",
            name="caregiver_user_has_caregiver",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # NULL until an invited person chooses it; always stored lower-case.
    login: Mapped[str | None] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(160))
    email: Mapped[str | None] = mapped_column(String(254))
    role: Mapped[Role] = mapped_column(enum_column(Role, 16))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), unique=True)
    caregiver_id: Mapped[int | None] = mapped_column(ForeignKey("caregivers.id"), unique=True)
    center_id: Mapped[int | None] = mapped_column(ForeignKey("treatment_centers.id"))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The last accepted TOTP time step, so a code cannot be replayed.
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    phone_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    preferred_language: Mapped[Language] = mapped_column(enum_column(Language, 2))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    patient: Mapped[Patient | None] = relationship()
    caregiver: Mapped[Caregiver | None] = relationship()
    center: Mapped[TreatmentCenter | None] = relationship()
    state_scopes: Mapped[list[UserStateScope]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    @property
    def state_ids(self) -> set[int]:
        return {scope.state_id for scope in self.state_scopes}

    @property
    def needs_mfa(self) -> bool:
        return self.role.is_staff


class UserStateScope(Base):
    """A state whose patients (coordinator) or figures (analyst) a staff user may see."""

    __tablename__ = "user_state_scopes"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    state_id: Mapped[int] = mapped_column(ForeignKey("states.id"), primary_key=True)

    user: Mapped[User] = relationship(back_populates="state_scopes")
    state: Mapped[State] = relationship()


class LoginSession(Base):
    """A signed-in browser. The cookie carries a signed random token; only its hash is kept."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    mfa_passed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(200))

    user: Mapped[User] = relationship()


class LoginAttempt(Base):
    """One try at a password (or a second-factor or reset code), kept so every process copy
    throttles the same way."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_login_at", "login", "at"),
        Index("ix_login_attempts_ip_at", "ip", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(254))
    ip: Mapped[str] = mapped_column(String(45))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    succeeded: Mapped[bool] = mapped_column(Boolean)
    # The digest of the known device the try came from (a browser where this login
    # succeeded before), or NULL: each known device has its own count of failures.
    device: Mapped[str | None] = mapped_column(String(64))


class InvitationDelivery(enum.StrEnum):
    SMS = "sms"
    PRINT = "print"


class Invitation(Base):
    """A single-use, expiring link that lets a person set their password."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    delivery: Mapped[InvitationDelivery] = mapped_column(enum_column(InvitationDelivery, 8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_user_id])


class PasswordResetRequest(Base):
    """Someone asked for a reset code for a username (whether or not it exists), kept so
    that every process copy limits the texts per username and per address the same way."""

    __tablename__ = "password_reset_requests"
    __table_args__ = (
        Index("ix_password_reset_requests_login_at", "login", "at"),
        Index("ix_password_reset_requests_ip_at", "ip", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(254))
    ip: Mapped[str] = mapped_column(String(45))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class PasswordResetCode(Base):
    """A short code texted to a verified phone to reset a forgotten password."""

    __tablename__ = "password_reset_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
