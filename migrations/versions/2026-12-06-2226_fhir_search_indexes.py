"""FHIR search: observations by code in id order, so a center-wide search pages by keyset
without sorting every match (a plain index, no table rebuild).

Revision ID: 88a2e219cbcd
Revises: d3fde89f1099
Create Date: 2026-12-06 22:26:57.019243+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "88a2e219cbcd"
down_revision: str | None = "d3fde89f1099"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_observations_code_id", "observations", ["code", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_observations_code_id", table_name="observations")
