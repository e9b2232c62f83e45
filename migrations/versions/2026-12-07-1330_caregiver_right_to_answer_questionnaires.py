"""caregiver links: the right to answer the patient's questionnaires for them

Revision ID: 7d2f0c4b8e13
Revises: 63c2ff9fa6f9
Create Date: 2026-12-07 13:30:00+00:00

A parent answers a child's questionnaires. No existing link gets it: a coordinator (or the
patient's admin) gives it, since answers speak for the patient.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7d2f0c4b8e13"
down_revision: str | None = "63c2ff9fa6f9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("caregiver_links", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "can_answer_questionnaires",
                sa.Boolean(),
                server_default=sa.false(),
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("caregiver_links", schema=None) as batch_op:
        batch_op.drop_column("can_answer_questionnaires")
