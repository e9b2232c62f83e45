"""Indexes the outcome measures read through: the claim lines of a vaso-occlusive crisis by
patient and day (partial, covering what an event rule reads), a patient's observations of a
code by when they were taken, observation versions by when they were replaced.

Revision ID: 5b0c7e2a91d4
Revises: a1e4a12c7e02
Create Date: 2026-12-06 23:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b0c7e2a91d4"
down_revision: str | None = "a1e4a12c7e02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_claim_lines_voc",
        "claim_lines",
        [
            "patient_id",
            "service_begin",
            "is_vaso_occlusive",
            "is_inpatient_stay",
            "is_ed_visit",
            "loaded_at",
            "superseded_at",
        ],
        unique=False,
        sqlite_where=sa.text("is_vaso_occlusive = 1"),
        postgresql_where=sa.text("is_vaso_occlusive = true"),
    )
    op.create_index(
        "ix_observations_patient_code_effective",
        "observations",
        ["patient_id", "code", "effective_at"],
        unique=False,
    )
    op.create_index(
        "ix_observation_revisions_replaced_at",
        "observation_revisions",
        ["replaced_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_observation_revisions_replaced_at", table_name="observation_revisions")
    op.drop_index("ix_observations_patient_code_effective", table_name="observations")
    op.drop_index("ix_claim_lines_voc", table_name="claim_lines")
