"""Loading questionnaires: a FHIR R4 Questionnaire file checked item by item and kept (its
resource and a row per url+version+language), the list admins see, retiring one.

Loading the same file again changes nothing; a different resource under a url+version that
is already loaded is refused (a changed instrument gets a new version). The English and
Spanish versions of one url+version must ask the same items (the same linkIds, types,
options and conditions): answers started in one language are read in the other."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.questionnaires.items import Form, QuestionnaireRefused, read_questionnaire
from coordination.questionnaires.models import Questionnaire, QuestionnaireStatus
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.models import Language

FILE_MAX_BYTES = 2_000_000
_FORMS: dict[str, Form] = {}  # by digest: a stored resource never changes


@dataclass(frozen=True)
class LoadResult:
    questionnaire: Questionnaire
    created: bool  # False: the same resource was already loaded


def digest_of(resource: Mapping[str, Any]) -> str:
    text = json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_file(raw: bytes) -> dict[str, Any]:
    """A file's bytes as a JSON object; raises QuestionnaireRefused when it is not one."""
    if len(raw) > FILE_MAX_BYTES:
        raise QuestionnaireRefused(["the file is larger than 2 MB"])
    try:
        resource = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise QuestionnaireRefused([f"the file is not JSON ({problem})"]) from None
    if not isinstance(resource, dict):
        raise QuestionnaireRefused(["the file is not a FHIR Questionnaire (resourceType)"])
    return resource


def form_of(questionnaire: Questionnaire) -> Form:
    """The items of a loaded questionnaire, read once per process."""
    form = _FORMS.get(questionnaire.digest)
    if form is None:
        form = read_questionnaire(questionnaire.resource, check_structure=False)
        if len(_FORMS) > 200:
            _FORMS.clear()
        _FORMS[questionnaire.digest] = form
    return form


def load_questionnaire(
    session: Session, *, clock: Clock, actor: Actor, resource: Mapping[str, Any]
) -> LoadResult:
    """Check and keep a Questionnaire (audited). Raises QuestionnaireRefused with every
    reason: items outside the supported subset, a missing url/version/language, a changed
    resource under a loaded url+version, another language's version asking other items."""
    form = read_questionnaire(resource)
    digest = digest_of(resource)
    same_version = list(
        session.scalars(
            select(Questionnaire).where(
                Questionnaire.url == form.url, Questionnaire.version == form.version
            )
        )
    )
    for existing in same_version:
        if existing.language is form.language:
            if existing.digest == digest:
                return LoadResult(existing, created=False)
            raise QuestionnaireRefused(
                [
                    f"version {form.version} of {form.url} ({form.language.value}) is already "
                    "loaded with other content: give the changed questionnaire a new version"
                ]
            )
        if form_of(existing).shape() != form.shape():
            raise QuestionnaireRefused(
                [
                    f"the {existing.language.value} version of {form.url} {form.version} asks "
                    "other items (linkIds, types, answer options or conditions differ): the "
                    "languages of one version must ask the same items"
                ]
            )
    questionnaire = Questionnaire(
        url=form.url,
        version=form.version,
        language=form.language,
        title=form.title,
        status=(
            QuestionnaireStatus.RETIRED if form.status == "retired" else QuestionnaireStatus.ACTIVE
        ),
        resource=dict(resource),
        digest=digest,
        loaded_by_user_id=actor.user_id,
        loaded_by_label=actor.label[:254],
        loaded_at=clock.now(),
    )
    session.add(questionnaire)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="questionnaire.load",
        target=f"questionnaire:{questionnaire.id}",
    )
    return LoadResult(questionnaire, created=True)


def list_questionnaires(session: Session) -> list[Questionnaire]:
    """Every loaded questionnaire, newest first."""
    return list(
        session.scalars(
            select(Questionnaire).order_by(Questionnaire.loaded_at.desc(), Questionnaire.id.desc())
        )
    )


def set_questionnaire_status(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    questionnaire: Questionnaire,
    status: QuestionnaireStatus,
) -> bool:
    """Retire a questionnaire (no new responses start) or make it active again, with its
    other languages of the same version (audited). False when nothing changed."""
    rows = session.scalars(
        select(Questionnaire).where(
            Questionnaire.url == questionnaire.url,
            Questionnaire.version == questionnaire.version,
        )
    ).all()
    changed = [row for row in rows if row.status is not status]
    action = "retire" if status is QuestionnaireStatus.RETIRED else "activate"
    for row in changed:
        row.status = status
        record_event(
            session,
            clock=clock,
            actor=actor,
            action=f"questionnaire.{action}",
            target=f"questionnaire:{row.id}",
        )
    session.flush()
    return bool(changed)


def in_language(
    session: Session, *, questionnaire: Questionnaire, language: Language
) -> Questionnaire:
    """The version of `questionnaire` in `language` when one is loaded, else itself."""
    if questionnaire.language is language:
        return questionnaire
    other = session.scalar(
        select(Questionnaire).where(
            Questionnaire.url == questionnaire.url,
            Questionnaire.version == questionnaire.version,
            Questionnaire.language == language,
        )
    )
    return other or questionnaire


SHIPPED_DIR = Path(__file__).parent / "shipped"


def load_shipped_questionnaires(
    session: Session, *, clock: Clock, actor: Actor
) -> list[LoadResult]:
    """Load the questionnaires written for the project (the demo's check-in, en and es)."""
    return [
        load_questionnaire(
            session, clock=clock, actor=actor, resource=parse_file(path.read_bytes())
        )
        for path in sorted(SHIPPED_DIR.glob("*.json"))
    ]
