"""Education test set-up shared by several test modules."""

from __future__ import annotations

from sqlalchemy import delete

from education.models import ModuleFunding
from tests.conftest import Database


def without_funding(db: Database) -> None:
    """Remove the demo states' funding windows (portal/dev/demo.py), for tests that build
    their own windows from none; what the demo funds is checked in test_demo_education.py."""
    with db.factory() as session:
        session.execute(delete(ModuleFunding))
        session.commit()
