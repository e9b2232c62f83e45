"""travel bookings cancelled: when and by whom a booking was cancelled (its cost is kept)

A visit cancelled or moved leaves bookings that a coordinator cancels; the booking stays,
with its cost, marked cancelled, so the request's spend history is complete.

Revision ID: 9e4b7c1d2a60
Revises: 7d2f0c4b8e13
Create Date: 2026-12-07 13:55:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = "9e4b7c1d2a60"
down_revision: str | None = "7d2f0c4b8e13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("travel_arrangements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancelled_at", core.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("cancelled_by_user_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_travel_arrangements_cancelled_by_user_id_users"),
            "users",
            ["cancelled_by_user_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("travel_arrangements", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_travel_arrangements_cancelled_by_user_id_users"), type_="foreignkey"
        )
        batch_op.drop_column("cancelled_by_user_id")
        batch_op.drop_column("cancelled_at")
