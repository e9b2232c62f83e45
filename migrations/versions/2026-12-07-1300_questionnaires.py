"""questionnaires (FHIR R4, one row per url+version+language) and patients' responses

Revision ID: 3c7a9e1f5b20
Revises: 5b0c7e2a91d4
Create Date: 2026-12-07 13:00:00+00:00

A response is tied to a patient and, when it was asked for one, a visit; its answers are
saved page by page as a draft (in-progress), then kept as the FHIR QuestionnaireResponse.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = "3c7a9e1f5b20"
down_revision: str | None = "5b0c7e2a91d4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "questionnaires",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column(
            "language",
            sa.Enum("en", "es", name="language", native_enum=False, create_constraint=True),
            nullable=False,
        ),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "retired",
                name="questionnairestatus",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("resource", sa.JSON(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("loaded_by_user_id", sa.Integer(), nullable=True),
        sa.Column("loaded_by_label", sa.String(length=254), nullable=False),
        sa.Column("loaded_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["loaded_by_user_id"],
            ["users.id"],
            name=op.f("fk_questionnaires_loaded_by_user_id_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_questionnaires")),
        sa.UniqueConstraint(
            "url", "version", "language", name=op.f("uq_questionnaires_url_version_language")
        ),
    )
    op.create_table(
        "questionnaire_responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("questionnaire_id", sa.Integer(), nullable=False),
        sa.Column("visit_id", sa.Integer(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "in-progress",
                "completed",
                name="responsestatus",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("saved_pages", sa.JSON(), nullable=False),
        sa.Column("started_by_user_id", sa.Integer(), nullable=True),
        sa.Column("author_user_id", sa.Integer(), nullable=True),
        sa.Column("author_caregiver_id", sa.Integer(), nullable=True),
        sa.Column("started_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("authored_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resource", sa.JSON(), nullable=True),
        sa.Column("score", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column("observation_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["author_caregiver_id"],
            ["caregivers.id"],
            name=op.f("fk_questionnaire_responses_author_caregiver_id_caregivers"),
        ),
        sa.ForeignKeyConstraint(
            ["author_user_id"],
            ["users.id"],
            name=op.f("fk_questionnaire_responses_author_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["observation_id"],
            ["observations.id"],
            name=op.f("fk_questionnaire_responses_observation_id_observations"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_questionnaire_responses_patient_id_patients"),
        ),
        sa.ForeignKeyConstraint(
            ["questionnaire_id"],
            ["questionnaires.id"],
            name=op.f("fk_questionnaire_responses_questionnaire_id_questionnaires"),
        ),
        sa.ForeignKeyConstraint(
            ["started_by_user_id"],
            ["users.id"],
            name=op.f("fk_questionnaire_responses_started_by_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"], ["visits.id"], name=op.f("fk_questionnaire_responses_visit_id_visits")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_questionnaire_responses")),
    )
    with op.batch_alter_table("questionnaire_responses", schema=None) as batch_op:
        batch_op.create_index(
            "ix_questionnaire_responses_patient_status", ["patient_id", "status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_questionnaire_responses_questionnaire_id"),
            ["questionnaire_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_questionnaire_responses_visit_id"), ["visit_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("questionnaire_responses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_questionnaire_responses_visit_id"))
        batch_op.drop_index(batch_op.f("ix_questionnaire_responses_questionnaire_id"))
        batch_op.drop_index("ix_questionnaire_responses_patient_status")

    op.drop_table("questionnaire_responses")
    op.drop_table("questionnaires")
