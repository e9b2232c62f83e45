"""caregiver links: the relationship from a list (translatable, said from either side), or
"other" with the coordinator's words

Revision ID: 92049d04bea0
Revises: 5c1d7e2a9b40
Create Date: 2026-12-07 10:00:00+00:00

Until now `caregiver_links.relationship` held whatever a coordinator typed ("Mom", "abuela",
"godmother"). It now holds a code of the list (core.models.Relation); words that name an
entry of the list become that entry, anything else becomes "other" with the words kept in
`relationship_other`. Going down writes the words back (the code, or the kept words).
"""

import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "92049d04bea0"
down_revision: str | None = "5c1d7e2a9b40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CODES = (
    "mother",
    "father",
    "parent",
    "stepmother",
    "stepfather",
    "grandmother",
    "grandfather",
    "aunt",
    "uncle",
    "sister",
    "brother",
    "partner",
    "guardian",
    "foster_parent",
    "friend",
    "other",
)
# A frozen copy of core.models._RELATION_WORDS as it was when this migration was written.
WORDS = {
    **dict.fromkeys(("mother", "mom", "mum", "mommy", "mama", "madre"), "mother"),
    **dict.fromkeys(("father", "dad", "daddy", "papa", "padre"), "father"),
    **dict.fromkeys(("parent", "madre o padre", "padre o madre"), "parent"),
    **dict.fromkeys(("stepmother", "step-mother", "madrastra"), "stepmother"),
    **dict.fromkeys(("stepfather", "step-father", "padrastro"), "stepfather"),
    **dict.fromkeys(("grandmother", "grandma", "granny", "abuela"), "grandmother"),
    **dict.fromkeys(("grandfather", "grandpa", "abuelo"), "grandfather"),
    **dict.fromkeys(("aunt", "auntie", "tia"), "aunt"),
    **dict.fromkeys(("uncle", "tio"), "uncle"),
    **dict.fromkeys(("sister", "hermana"), "sister"),
    **dict.fromkeys(("brother", "hermano"), "brother"),
    **dict.fromkeys(
        (
            "partner",
            "spouse",
            "wife",
            "husband",
            "boyfriend",
            "girlfriend",
            "pareja",
            "esposa",
            "esposo",
            "novia",
            "novio",
        ),
        "partner",
    ),
    **dict.fromkeys(("guardian", "legal guardian", "tutor", "tutora", "tutor legal"), "guardian"),
    **dict.fromkeys(
        ("foster parent", "foster mother", "foster father", "foster_parent"), "foster_parent"
    ),
    **dict.fromkeys(("friend", "amigo", "amiga"), "friend"),
}
CHECK = "ck_caregiver_links_relation"

links = sa.table(
    "caregiver_links",
    sa.column("id", sa.Integer),
    sa.column("relationship", sa.String),
    sa.column("relationship_other", sa.String),
)


def _code(words: str) -> tuple[str, str | None]:
    typed = " ".join(words.split())
    key = "".join(
        ch for ch in unicodedata.normalize("NFD", typed.casefold()) if not unicodedata.combining(ch)
    )
    if key in WORDS:
        return WORDS[key], None
    return "other", typed[:40] or "?"


def upgrade() -> None:
    with op.batch_alter_table("caregiver_links", schema=None) as batch_op:
        batch_op.add_column(sa.Column("relationship_other", sa.String(length=40), nullable=True))
    connection = op.get_bind()
    for link_id, words in connection.execute(sa.select(links.c.id, links.c.relationship)).all():
        code, other = _code(words or "")
        connection.execute(
            links.update()
            .where(links.c.id == link_id)
            .values(relationship=code, relationship_other=other)
        )
    quoted = ", ".join(f"'{code}'" for code in CODES)
    with op.batch_alter_table("caregiver_links", schema=None) as batch_op:
        batch_op.create_check_constraint(op.f(CHECK), f"relationship IN ({quoted})")


def downgrade() -> None:
    with op.batch_alter_table("caregiver_links", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(CHECK), type_="check")
    connection = op.get_bind()
    connection.execute(
        links.update()
        .where(links.c.relationship == "other", links.c.relationship_other.is_not(None))
        .values(relationship=links.c.relationship_other)
    )
    with op.batch_alter_table("caregiver_links", schema=None) as batch_op:
        batch_op.drop_column("relationship_other")
