"""Claims: what a load voided and superseded (counts of the load), and an index to find the
adjustments of a claim (partial: only adjustments have an adjusted claim), used to supersede
a claim's lines when a later adjustment or a void arrives.

Revision ID: 5c1d7e2a9b40
Revises: 88a2e219cbcd
Create Date: 2026-12-06 22:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c1d7e2a9b40"
down_revision: str | None = "88a2e219cbcd"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "claim_files", sa.Column("rows_voids", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column(
        "claim_files",
        sa.Column("lines_superseded", sa.Integer(), server_default="0", nullable=False),
    )
    op.create_index(
        "ix_claim_lines_adjusts",
        "claim_lines",
        ["state_id", "adjusts_claim_id"],
        unique=False,
        sqlite_where=sa.text("adjusts_claim_id IS NOT NULL"),
        postgresql_where=sa.text("adjusts_claim_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_claim_lines_adjusts", table_name="claim_lines")
    # Dropping columns on SQLite rebuilds the table: in a batch (nothing points at claim_files
    # but claim_lines, rebuilt with it in the same transaction).
    with op.batch_alter_table("claim_files", schema=None) as batch_op:
        batch_op.drop_column("lines_superseded")
        batch_op.drop_column("rows_voids")
