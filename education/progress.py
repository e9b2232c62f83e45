"""Reading a module: sections read (resumable on any device: the progress row is the truth),
the knowledge check (immediate feedback, retries) and the completion it records.

The score counts the questions answered right at the first try. The first tries are kept in
the progress row (a reload, a second device or a forged form cannot reset them); the
signed hidden field of the check's form (bound to the reader, the module and its version)
carries what the page shows: which questions are answered right so far."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.clock import Clock
from education.content import Module, Question
from education.models import ModuleCompletion, ModuleProgress
from education.offer import OfferedModule, Reader

_SALT = "cgt-access.education.check"


# --- sections ------------------------------------------------------------------------------


def record_section_read(
    session: Session, *, clock: Clock, reader: Reader, offered: OfferedModule, section_id: str
) -> str | None:
    """The reader finished `section_id`: remember it and where to resume (never moving the
    resume point back when they re-read an earlier section). Returns the next section's id,
    or None when the knowledge check comes next."""
    module = offered.module
    ids = module.section_ids
    index = ids.index(section_id)  # the route checked the id
    following = ids[index + 1] if index + 1 < len(ids) else None
    now = clock.now()
    row = offered.progress
    if row is None:
        row = ModuleProgress(
            user_id=reader.user_id,
            module_key=module.key,
            module_version=module.version,
            current_section=section_id,
            sections_done=[],
            started_at=now,
            updated_at=now,
        )
        session.add(row)
    elif not offered.progress_is_current:
        _restart(row, module=module, now=now)
    done = [s for s in (row.sections_done or []) if s in ids]
    if section_id not in done:
        done.append(section_id)
    row.sections_done = done  # a new list: JSON columns do not see in-place changes
    stored = ids.index(row.current_section) if row.current_section in ids else 0
    row.current_section = ids[max(stored, ids.index(following or section_id))]
    row.module_version = module.version
    row.updated_at = now
    session.flush()
    return following


def _restart(row: ModuleProgress, *, module: Module, now: datetime) -> None:
    """A significant change since this reading began: it starts over (sections and the
    check's first tries)."""
    row.sections_done, row.current_section, row.started_at = [], module.section_ids[0], now
    row.check_first = None
    row.module_version = module.version


# --- the knowledge check -------------------------------------------------------------------


@dataclass(frozen=True)
class CheckState:
    """The check so far: the choice made at each question's first try, and which questions
    have been answered right (at the first try or later)."""

    first: Mapping[str, int] = field(default_factory=dict)
    right: frozenset[str] = frozenset()

    def score(self, module: Module) -> int:
        return sum(1 for q in module.en.questions if self.first.get(q.id) == q.answer)


def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=_SALT)


def _binding(user_id: int, module: Module) -> list[Any]:
    return [user_id, module.key, module.version]


def dump_check_state(state: CheckState, *, secret: str, user_id: int, module: Module) -> str:
    payload = {
        "for": _binding(user_id, module),
        "first": dict(state.first),
        "right": sorted(state.right),
    }
    return str(_serializer(secret).dumps(payload))


def load_check_state(token: str | None, *, secret: str, user_id: int, module: Module) -> CheckState:
    """The state a form carried; a fresh one when there is none, it was tampered with, or it
    belongs to another reader, module or version."""
    if not token:
        return CheckState()
    try:
        payload = _serializer(secret).loads(token)
    except BadSignature:
        return CheckState()
    if not isinstance(payload, dict) or payload.get("for") != _binding(user_id, module):
        return CheckState()
    ids = {q.id for q in module.en.questions}
    first = payload.get("first")
    right = payload.get("right")
    if not isinstance(first, dict) or not isinstance(right, list):
        return CheckState()
    return CheckState(
        first={k: v for k, v in first.items() if k in ids and isinstance(v, int)},
        right=frozenset(q for q in right if q in ids),
    )


@dataclass(frozen=True)
class CheckOutcome:
    state: CheckState
    checked: Mapping[str, bool]  # question id -> right, for the answers checked this time
    completion: ModuleCompletion | None  # set once every question has been answered right


def answer_questions(
    session: Session,
    *,
    clock: Clock,
    reader: Reader,
    offered: OfferedModule,
    state: CheckState,
    answers: Mapping[str, int],
    only: str | None = None,
) -> CheckOutcome:
    """Check the given answers (`only`: just that question's) and give feedback. The first
    answer to a question is its first try for the score; a wrong one may be tried again.
    When every question has been answered right, the module is completed."""
    module = offered.module
    questions: dict[str, Question] = {q.id: q for q in module.en.questions}
    row = _progress_row(session, clock=clock, reader=reader, offered=offered)
    if row.module_version < module.significant_since:
        _restart(row, module=module, now=clock.now())  # nothing of an outdated reading counts
    elif row.module_version != module.version:
        row.check_first, row.module_version = None, module.version  # a retake of a new version
    stored = {k: v for k, v in (row.check_first or {}).items() if isinstance(v, int)}
    # The first tries on record win over whatever a form carries.
    first, right = {**state.first, **stored}, set(state.right)
    checked: dict[str, bool] = {}
    for question_id, choice in answers.items():
        question = questions.get(question_id)
        if question is None or (only is not None and question_id != only):
            continue
        if question_id in right or not 0 <= choice < len(question.choices):
            continue
        first.setdefault(question_id, choice)
        checked[question_id] = choice == question.answer
        if checked[question_id]:
            right.add(question_id)
    row.check_first = dict(first)  # a new dict: JSON columns do not see in-place changes
    row.updated_at = clock.now()
    session.flush()
    new_state = CheckState(first=first, right=frozenset(right))
    completion = None
    if right >= questions.keys():
        completion = complete_module(
            session, clock=clock, reader=reader, offered=offered, score=new_state.score(module)
        )
    return CheckOutcome(state=new_state, checked=checked, completion=completion)


def _progress_row(
    session: Session, *, clock: Clock, reader: Reader, offered: OfferedModule
) -> ModuleProgress:
    """The reader's progress row of the module (made when they go straight to the check)."""
    if offered.progress is not None:
        return offered.progress
    module = offered.module
    found = session.scalar(
        select(ModuleProgress).where(
            ModuleProgress.user_id == reader.user_id, ModuleProgress.module_key == module.key
        )
    )
    if found is not None:
        return found
    now = clock.now()
    row = ModuleProgress(
        user_id=reader.user_id,
        module_key=module.key,
        module_version=module.version,
        current_section=module.section_ids[-1],
        sections_done=[],
        started_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def complete_module(
    session: Session, *, clock: Clock, reader: Reader, offered: OfferedModule, score: int
) -> ModuleCompletion:
    """Record the completion of the module's current version (once: a second pass of the
    same version keeps the first record and its score)."""
    module = offered.module
    existing = session.scalar(
        select(ModuleCompletion).where(
            ModuleCompletion.user_id == reader.user_id,
            ModuleCompletion.module_key == module.key,
            ModuleCompletion.module_version == module.version,
        )
    )
    if existing is not None:
        return existing
    now = clock.now()
    completion = ModuleCompletion(
        user_id=reader.user_id,
        module_key=module.key,
        module_version=module.version,
        score=score,
        questions=len(module.en.questions),
        completed_at=now,
        state_id=offered.state_id,
        reader_role=reader.role_name,
        patient_id=reader.patient_id,
    )
    session.add(completion)
    # The whole module is read now (even if the reader went straight to the check).
    row = _progress_row(session, clock=clock, reader=reader, offered=offered)
    row.sections_done = list(module.section_ids)
    row.current_section = module.section_ids[-1]
    row.module_version = module.version
    row.updated_at = now
    session.flush()
    return completion
