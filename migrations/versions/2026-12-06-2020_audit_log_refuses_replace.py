"""audit log: SQLite refuses INSERT OR REPLACE over an existing event

Revision ID: 5b7e2c91d4a0
Revises: 8ad3f27e0dd6
Create Date: 2026-12-06 20:20:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5b7e2c91d4a0"
down_revision: str | None = "8ad3f27e0dd6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite's REPLACE deletes the old row without firing the DELETE trigger (unless
    # recursive_triggers is on), so an INSERT OR REPLACE could rewrite an audit event.
    # PostgreSQL has no REPLACE, and its upsert (ON CONFLICT DO UPDATE) fires the UPDATE
    # trigger that already refuses it.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events "
            "WHEN EXISTS (SELECT 1 FROM audit_events WHERE id = NEW.id) "
            "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_replace")
