"""Loading questionnaires into the database: the demo's check-in is there in both languages,
loading a file again changes nothing, a changed resource under a loaded version is refused,
and the languages of one version must ask the same items. SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from coordination.questionnaires.items import QuestionnaireRefused
from coordination.questionnaires.loading import (
    SHIPPED_DIR,
    in_language,
    list_questionnaires,
    load_questionnaire,
    parse_file,
    set_questionnaire_status,
)
from coordination.questionnaires.models import Questionnaire, QuestionnaireStatus
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.models import Language
from core.settings import get_settings
from portal.cli import app as cli
from tests.conftest import ADMIN, Database, user_by_login

CHECK_IN = "https://cgt-access.example/fhir/Questionnaire/living-after-gene-therapy"


def _actor(session: Session) -> Actor:
    user = user_by_login(session, ADMIN)
    return Actor(user_id=user.id, label=ADMIN, role=user.role.value)


def _shipped(language: str) -> dict[str, Any]:
    return parse_file((SHIPPED_DIR / f"living-after-gene-therapy.{language}.json").read_bytes())


def _count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Questionnaire)) or 0


def test_the_demo_check_in_is_loaded_in_both_languages_and_linked(session: Session) -> None:
    rows = [row for row in list_questionnaires(session) if row.url == CHECK_IN]
    assert sorted(row.language.value for row in rows) == ["en", "es"]
    assert {row.version for row in rows} == {"1.0.0"}
    assert all(row.status is QuestionnaireStatus.ACTIVE for row in rows)
    assert all(row.loaded_by_label == ADMIN for row in rows)
    english = next(row for row in rows if row.language is Language.EN)
    spanish = in_language(session, questionnaire=english, language=Language.ES)
    assert spanish.language is Language.ES and spanish.url == english.url


def test_loading_the_same_file_again_changes_nothing(session: Session, clock: FrozenClock) -> None:
    before = _count(session)
    result = load_questionnaire(
        session, clock=clock, actor=_actor(session), resource=_shipped("en")
    )
    assert not result.created
    assert _count(session) == before


def test_a_changed_resource_under_a_loaded_version_is_refused(
    session: Session, clock: FrozenClock
) -> None:
    changed = _shipped("en")
    changed["item"][0]["item"][0]["text"] = "Something else?"
    with pytest.raises(QuestionnaireRefused) as refused:
        load_questionnaire(session, clock=clock, actor=_actor(session), resource=changed)
    assert refused.value.errors == [
        f"version 1.0.0 of {CHECK_IN} (en) is already loaded with other content: "
        "give the changed questionnaire a new version"
    ]
    # Under a new version it loads, and is audited.
    changed["version"] = "1.1.0"
    result = load_questionnaire(session, clock=clock, actor=_actor(session), resource=changed)
    assert result.created and result.questionnaire.canonical == f"{CHECK_IN}|1.1.0"
    events = session.scalars(
        select(AuditEvent).where(
            AuditEvent.action == "questionnaire.load",
            AuditEvent.target == f"questionnaire:{result.questionnaire.id}",
        )
    ).all()
    assert len(events) == 1


def test_the_languages_of_one_version_must_ask_the_same_items(
    session: Session, clock: FrozenClock
) -> None:
    english = _shipped("en")
    english["version"] = "2.0.0"
    load_questionnaire(session, clock=clock, actor=_actor(session), resource=english)
    spanish = _shipped("es")
    spanish["version"] = "2.0.0"
    spanish["item"][3]["item"][1]["enableWhen"][0]["answerBoolean"] = False
    with pytest.raises(QuestionnaireRefused) as refused:
        load_questionnaire(session, clock=clock, actor=_actor(session), resource=spanish)
    assert "the en version of" in refused.value.errors[0]
    assert "must ask the same items" in refused.value.errors[0]


def test_retiring_a_version_retires_its_languages(session: Session, clock: FrozenClock) -> None:
    english = next(row for row in list_questionnaires(session) if row.url == CHECK_IN)
    assert set_questionnaire_status(
        session,
        clock=clock,
        actor=_actor(session),
        questionnaire=english,
        status=QuestionnaireStatus.RETIRED,
    )
    rows = [row for row in list_questionnaires(session) if row.url == CHECK_IN]
    assert {row.status for row in rows} == {QuestionnaireStatus.RETIRED}


def test_a_file_that_is_not_json_is_refused_in_words() -> None:
    with pytest.raises(QuestionnaireRefused) as refused:
        parse_file(b"{not json")
    assert refused.value.errors[0].startswith("the file is not JSON")
    with pytest.raises(QuestionnaireRefused):
        parse_file(copy.copy(b"[1, 2]"))


# --- the command -----------------------------------------------------------------------


def _run(db: Database, *args: str) -> Result:
    env = {
        "DATABASE_URL": db.url,
        "DEMO_MODE": "true",
        "PUBLIC_BASE_URL": "http://testserver",
    }
    try:
        return CliRunner().invoke(cli, ["questionnaires", "load", *args], env=env)
    finally:
        get_settings.cache_clear()


# The command's own logic (the services it calls run on both backends above).
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_command_loads_a_file_once_and_lists_what_it_refuses(
    db: Database, tmp_path: Path
) -> None:
    resource = _shipped("en")
    resource["version"] = "3.0.0"
    good = tmp_path / "check-in.json"
    good.write_text(json.dumps(resource), encoding="utf-8")
    first = _run(db, str(good), "--as", ADMIN)
    assert first.exit_code == 0, first.output
    assert f"loaded {CHECK_IN} 3.0.0 (en)" in first.output
    again = _run(db, str(good))
    assert again.exit_code == 0 and "already loaded; nothing changed" in again.output
    resource["version"] = "3.0.1"
    resource["item"][0]["item"][0]["type"] = "attachment"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(resource), encoding="utf-8")
    refused = _run(db, str(bad))
    assert refused.exit_code == 1
    assert "item 'pain-days' (item[0].item[0]): type 'attachment' is not supported" in (
        refused.output
    )
    with db.factory() as session:
        versions = session.scalars(
            select(Questionnaire.version).where(Questionnaire.url == CHECK_IN)
        ).all()
    assert sorted(versions) == ["1.0.0", "1.0.0", "3.0.0"]
