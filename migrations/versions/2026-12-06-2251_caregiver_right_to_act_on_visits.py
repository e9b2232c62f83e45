"""caregiver links: the right to act on visits (confirm, ask to move) apart from seeing them

Revision ID: a1e4a12c7e02
Revises: 92049d04bea0
Create Date: 2026-12-07 11:00:00+00:00

Seeing the schedule used to be enough to confirm a visit or ask to move it. Links that also
get the reminders (which ask to reply C to confirm, R to change) keep acting on visits; a
link that only shows the schedule no longer does, until a coordinator gives the right.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a1e4a12c7e02"
down_revision: str | None = "92049d04bea0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

links = sa.table(
    "caregiver_links",
    sa.column("can_view_schedule", sa.Boolean),
    sa.column("can_receive_reminders", sa.Boolean),
    sa.column("can_manage_visits", sa.Boolean),
)


def upgrade() -> None:
    with op.batch_alter_table("caregiver_links", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("can_manage_visits", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.get_bind().execute(
        links.update()
        .where(links.c.can_view_schedule.is_(True), links.c.can_receive_reminders.is_(True))
        .values(can_manage_visits=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("caregiver_links", schema=None) as batch_op:
        batch_op.drop_column("can_manage_visits")
