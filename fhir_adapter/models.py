"""Tables of the FHIR adapter.

SMART Backend Services: the treatment centers' registered clients, their key sets (with the
history of rotations), the client-assertion ids already used, and the access tokens issued.
Everything a token check needs is a row, so any number of process copies agree at once (a
disabled client is refused by every copy on its next request).

Resources received: which record each resource a center sent became (`ResourceKey`), under
which identifiers (`ResourceIdentifier`) and with what content, so that a resent resource
updates or matches its record instead of duplicating it.

Bulk export: each `$export` a client started (`ExportJob`), the truth the workers run it from
and the status endpoint answers from."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, UTCDateTime
from core.identity.models import User
from core.models import TreatmentCenter, enum_column


class FhirClient(Base):
    """A treatment center's system allowed to use the FHIR API (a SMART backend service).

    It acts for exactly one center, and sees and writes only that center's patients."""

    __tablename__ = "fhir_clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The OAuth client_id: `iss` and `sub` of its assertions. Never changes once registered.
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    center_id: Mapped[int] = mapped_column(ForeignKey("treatment_centers.id"), index=True)
    # What it may be granted: canonical SMART v2 scopes, space-separated
    # (e.g. "system/Observation.cruds system/Patient.rs").
    scopes: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    center: Mapped[TreatmentCenter] = relationship()
    created_by: Mapped[User | None] = relationship()
    key_sets: Mapped[list[FhirClientKeySet]] = relationship(
        back_populates="client", order_by="FhirClientKeySet.id"
    )

    @property
    def is_enabled(self) -> bool:
        return self.disabled_at is None

    @property
    def current_key_set(self) -> FhirClientKeySet | None:
        """The key set in force (the newest one that was not replaced)."""
        current = [key_set for key_set in self.key_sets if key_set.replaced_at is None]
        return current[-1] if current else None


class FhirClientKeySet(Base):
    """The public keys a client signs its assertions with: a JWKS URL (the fetched copy is
    cached here, with when it was fetched) or a pasted JWK Set. Rotating keys adds a row and
    marks the old one replaced; the old one keeps verifying until `accepted_until` (a grace
    period lets a center roll its keys without a gap), then it is only history."""

    __tablename__ = "fhir_client_key_sets"
    __table_args__ = (Index("ix_fhir_client_key_sets_client", "client_pk", "replaced_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("fhir_clients.id"))
    jwks_url: Mapped[str | None] = mapped_column(String(500))
    # The pasted set, or the last copy fetched from `jwks_url` (public keys only).
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    replaced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # NULL while in force; after a rotation, the end of the grace period (= replaced_at
    # when there is none).
    accepted_until: Mapped[datetime | None] = mapped_column(UTCDateTime())

    client: Mapped[FhirClient] = relationship(back_populates="key_sets")
    created_by: Mapped[User | None] = relationship()

    def accepted_at(self, now: datetime) -> bool:
        return self.accepted_until is None or now < self.accepted_until


class FhirAssertionJti(Base):
    """A client assertion's `jti`, kept until the assertion expires: the unique constraint
    refuses a replay in any process copy."""

    __tablename__ = "fhir_assertion_jtis"
    __table_args__ = (
        UniqueConstraint("client_pk", "jti"),
        Index("ix_fhir_assertion_jtis_expires", "client_pk", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("fhir_clients.id"))
    jti: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FhirAccessToken(Base):
    """An issued access token: opaque and random; the table keeps only its SHA-256, so a
    leaked table opens nothing. Disabling the client, changing its scopes or replacing its
    keys at once deletes its rows."""

    __tablename__ = "fhir_access_tokens"
    __table_args__ = (Index("ix_fhir_access_tokens_client_expires", "client_pk", "expires_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("fhir_clients.id"))
    # Canonical scopes granted, space-separated.
    scopes: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

    client: Mapped[FhirClient] = relationship()


class ResourceKey(Base):
    """The record a center's FHIR resource became: its type, the local row it maps to (a
    patient, an observation, a caregiver link, a condition, a visit), and a digest of the
    resource as last accepted (references resolved, without id and meta), so the same
    content sent again changes nothing."""

    __tablename__ = "fhir_resource_keys"
    __table_args__ = (
        UniqueConstraint("resource_type", "local_id"),
        Index("ix_fhir_resource_keys_content", "center_id", "resource_type", "content_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    center_id: Mapped[int] = mapped_column(ForeignKey("treatment_centers.id"))
    resource_type: Mapped[str] = mapped_column(String(40))
    local_id: Mapped[int] = mapped_column()
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ResourceIdentifier(Base):
    """An identifier (system and value) a center gave a resource: conditional creates and
    updates find the record by it, and it is unique per center and type."""

    __tablename__ = "fhir_resource_identifiers"
    __table_args__ = (UniqueConstraint("center_id", "resource_type", "system", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    center_id: Mapped[int] = mapped_column(ForeignKey("treatment_centers.id"))
    resource_type: Mapped[str] = mapped_column(String(40))
    system: Mapped[str] = mapped_column(String(200))
    value: Mapped[str] = mapped_column(String(200))
    local_id: Mapped[int] = mapped_column(index=True)


class ExportStatus(enum.StrEnum):
    """Where a bulk export stands. QUEUED until a worker claims it; RUNNING while one
    writes its files; then COMPLETE (files downloadable until `expires_at`), ERROR or
    CANCELLED (files deleted); EXPIRED once the cleanup deleted a complete job's files."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class ExportJob(Base):
    """A bulk `$export` a client started: what it asked for, for which center, and where the
    work stands. A worker claims it with an UPDATE guarded by its status and lease, so of
    several workers one runs it; it keeps the lease while it writes, and a job whose worker
    died is claimed again once the lease ran out."""

    __tablename__ = "fhir_export_jobs"
    __table_args__ = (
        Index("ix_fhir_export_jobs_status_requested", "status", "requested_at"),
        Index("ix_fhir_export_jobs_client_status", "client_pk", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The job's name in URLs: random, unguessable, says nothing about anyone.
    job_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("fhir_clients.id"))
    center_id: Mapped[int] = mapped_column(ForeignKey("treatment_centers.id"))
    # system, patient or group: which kick-off started it (the same patients: the center's).
    level: Mapped[str] = mapped_column(String(16))
    # The kick-off URL as the client sent it (the manifest's `request`).
    request_url: Mapped[str] = mapped_column(Text)
    # The resource types to export, in the order they are written.
    types: Mapped[list[str]] = mapped_column(JSON)
    since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    output_format: Mapped[str] = mapped_column(String(40))
    status: Mapped[ExportStatus] = mapped_column(enum_column(ExportStatus, 16))
    # What the status endpoint says in X-Progress ("Observation 40%").
    progress: Mapped[str | None] = mapped_column(String(120))
    # Claims so far (more than one: a worker died and another started again).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The worker running it and until when its claim holds without news from it.
    owner: Mapped[str | None] = mapped_column(String(120))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The instant the export's snapshot of the database was taken (`transactionTime`).
    transaction_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When a complete job's files are deleted.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The files written: [{"type": "Observation", "file": "Observation-1.ndjson", "count": 9}].
    outputs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # Why it failed, in words for the client (no PHI; the details are in the log).
    error: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    client: Mapped[FhirClient] = relationship()
