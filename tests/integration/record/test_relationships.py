"""Who a caregiver is to a patient (issue 10, defect 12): chosen from a list the pages can
translate, or said in the coordinator's own words ("other"); a caregiver's pages say it from
the caregiver's side ("You are Maya's mother.", not "Maya (mother)", which reads as if Maya
were the mother), in their language; staff read the relationship in theirs. Links made
before the list keep their meaning: the migration maps the words typed then.

Page tests run as plain requests and as htmx requests; every test on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from core.db import make_engine
from core.models import Caregiver, CaregiverLink, Patient, Relation
from portal.migrate import alembic_config, upgrade_database
from tests.conftest import (
    CAREGIVER_CO,
    CAREGIVER_MD,
    COORDINATOR_MD,
    HTMX,
    Browser,
    Database,
    _seed_world,
    plain,
)
from tests.support.pg_cluster import PostgresCluster

BOTH_WAYS = pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
# The revision before caregiver relationships came from a list.
# The revision before the list of relationships (its migration's parent, whatever comes after).
BEFORE_THE_LIST = str(
    ScriptDirectory.from_config(alembic_config()).get_revision("92049d04bea0").down_revision
)


def patient_named(db: Database, given_name: str) -> Patient:
    with db.factory() as session:
        patient = session.scalar(select(Patient).where(Patient.given_name == given_name))
        assert patient is not None
        return patient


def relations_of(db: Database, patient: Patient) -> list[tuple[str, Relation, str | None]]:
    """(caregiver's first name, relation, the coordinator's words) of each link."""
    with db.factory() as session:
        return [
            (link.caregiver.given_name, link.relation, link.relation_other)
            for link in session.scalars(
                select(CaregiverLink)
                .where(CaregiverLink.patient_id == patient.id)
                .order_by(CaregiverLink.id)
            )
        ]


def in_spanish(person: Browser) -> None:
    switched = person.post("/language", {"lang": "es", "next": "/"})
    assert switched.status_code == 303


# --- what caregivers read ------------------------------------------------------------------


@BOTH_WAYS
def test_a_caregivers_home_says_who_they_are_to_each_patient(
    browsers: Callable[[str], Browser], htmx: bool
) -> None:
    page = browsers(CAREGIVER_MD).get("/home", htmx=htmx)
    assert page.status_code == 200
    words = plain(page.text)
    assert "You are Maya's mother." in words
    assert "You are Imani's aunt." in words
    # Not "Maya (mother)": that reads as if Maya were the mother.
    assert "(mother)" not in words and "(aunt)" not in words


@BOTH_WAYS
def test_a_spanish_speaking_caregiver_reads_it_in_spanish(
    browsers: Callable[[str], Browser], htmx: bool
) -> None:
    words = plain(browsers(CAREGIVER_CO).get("/home", htmx=htmx).text)
    assert "Usted es la abuela de Andre." in words
    assert "grandmother" not in words


@BOTH_WAYS
def test_the_choice_of_schedules_says_it_too(
    browsers: Callable[[str], Browser], htmx: bool
) -> None:
    page = browsers(CAREGIVER_MD).get("/schedule", htmx=htmx)
    assert page.status_code == 200
    words = plain(page.text)
    assert "You are Maya's mother." in words
    assert "(mother)" not in words


def test_a_relationship_in_the_coordinators_own_words_reads_right_for_the_caregiver(
    db: Database, browsers: Callable[[str], Browser]
) -> None:
    with db.factory() as session:
        link = session.scalar(
            select(CaregiverLink).join(Caregiver).where(Caregiver.given_name == "Denise")
        )
        assert link is not None
        link.relation, link.relation_other = Relation.OTHER, "godmother"
        session.commit()
    words = plain(browsers(CAREGIVER_MD).get("/home").text)
    assert "Your relationship to Maya: godmother." in words


# --- what staff read and write ---------------------------------------------------------------


def test_staff_read_the_relationship_in_their_language(
    db: Database, browsers: Callable[[str], Browser]
) -> None:
    coordinator = browsers(COORDINATOR_MD)
    maya = patient_named(db, "Maya")
    assert "Denise Johnson (mother)" in plain(coordinator.get(f"/patients/{maya.id}").text)
    in_spanish(coordinator)
    assert "Denise Johnson (madre)" in plain(coordinator.get(f"/patients/{maya.id}").text)


def test_a_coordinator_chooses_the_relationship_from_a_list_or_says_it(
    db: Database, browsers: Callable[[str], Browser]
) -> None:
    coordinator = browsers(COORDINATOR_MD)
    imani = patient_named(db, "Imani")
    url = f"/patients/{imani.id}/caregivers/new"
    form = coordinator.get(url).text
    assert re.search(r'<select id="f-relationship" name="relationship"', form)
    assert '<option value="grandmother">Grandmother</option>' in form
    assert 'value="other"' in form
    assert 'name="relationship_other"' in form

    def add(given: str, **fields: str) -> int:
        response = coordinator.post(
            url,
            {
                "given_name": given,
                "family_name": "Davis",
                "preferred_language": "en",
                "rights": "view_schedule",
                **fields,
            },
        )
        return response.status_code

    assert add("Tanya", relationship="grandmother") == 303
    assert add("Olu", relationship="other", relationship_other="godmother") == 303
    assert add("Pat", relationship="other", relationship_other="Grandpa") == 303
    missing = coordinator.post(
        url,
        {"given_name": "Ann", "family_name": "Davis", "relationship": "other"},
    )
    assert missing.status_code == 400
    assert "Say how they are related" in plain(missing.text)
    assert relations_of(db, imani)[-3:] == [
        ("Tanya", Relation.GRANDMOTHER, None),
        ("Olu", Relation.OTHER, "godmother"),
        ("Pat", Relation.GRANDFATHER, None),  # the words were on the list after all
    ]


# --- links made before the list ------------------------------------------------------------


@pytest.fixture
def blank_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = f"relations{os.getpid()}"
    url = cluster.create_database(name)
    try:
        yield url
    finally:
        cluster.drop_database(name)


def test_the_migration_maps_the_words_typed_before(blank_url: str) -> None:
    """The seeded world goes back to free words (the downgrade writes each link's words),
    gets the words coordinators typed then, and comes up again."""
    upgrade_database(blank_url)
    _seed_world(blank_url)
    command.downgrade(alembic_config(blank_url), BEFORE_THE_LIST)
    typed = ["Mom ", "Tía", "legal guardian", "godmother"]
    engine = make_engine(blank_url)
    with engine.begin() as connection:
        ids = connection.scalars(text("SELECT id FROM caregiver_links ORDER BY id")).all()
        assert len(ids) == len(typed)
        for link_id, words in zip(ids, typed, strict=True):
            connection.execute(
                text("UPDATE caregiver_links SET relationship = :words WHERE id = :id"),
                {"words": words, "id": link_id},
            )
    upgrade_database(blank_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT relationship, relationship_other FROM caregiver_links ORDER BY id")
        ).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [
        ("mother", None),
        ("aunt", None),
        ("guardian", None),
        ("other", "godmother"),
    ]


def test_a_client_that_types_words_still_gets_the_list(client: TestClient) -> None:
    """Code and tests that set `relationship_label` in words keep working: the words are
    read into the list (or kept as "other")."""
    link = CaregiverLink(relationship_label="Sister")
    assert (link.relation, link.relation_other) == (Relation.SISTER, None)
    link.relationship_label = "neighbour"
    assert (link.relation, link.relation_other) == (Relation.OTHER, "neighbour")
    assert link.relationship_label == "neighbour"
    assert HTMX  # the page tests above run both ways
