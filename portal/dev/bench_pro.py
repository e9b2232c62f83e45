"""The patient-reported-outcome figures of `cgt-access bench` (`--only pro`): a page of the
check-in questionnaire for the logged-in demo patient (GET), and saving a page's answers
(POST, a committed write), in the portal world of portal/dev/bench.py (the demo data, the
bulk patients and their 15-year schedules) with a check-in response for every bulk patient:
a third sent with their FHIR resource and score, the rest drafts part-way through."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from coordination.questionnaires.models import (
    Questionnaire,
    QuestionnaireResponse,
    ResponseStatus,
)
from core.clock import Clock
from core.db import transaction
from core.identity.models import User
from core.models import Language, Patient
from portal.dev.bench_app import bench_app, in_process

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from portal.dev.bench import _World

PRO_FIGURES = ("pro.page_p95_ms", "pro.save_p95_ms")
CHECK_IN = "https://cgt-access.example/fhir/Questionnaire/living-after-gene-therapy"
PAGES = 4  # the check-in's pages (pain, energy, school and work, hospital stays)
SAVE_WARM_UP = 20
CHUNK = 2_000
# A draft part-way through (pain and energy saved) and a sent response's answers.
DRAFT_ANSWERS: dict[str, Any] = {"pain-days": [{"value": 2}], "fatigue": [{"option": 1}]}
SENT_ANSWERS: dict[str, Any] = {
    **DRAFT_ANSWERS,
    "missed-days": [{"value": 0}],
    "hospital-stay": [{"value": False}],
}


def pro_figures(world: _World, *, selected: list[str], requests: int) -> Iterator[str]:
    """`pro.page_p95_ms` (GET of the check-in's pages in turn) and `pro.save_p95_ms` (POST
    of the first page's answer, which saves and moves on) for the bench patient."""
    from portal.dev.bench import (
        _CSRF,
        BENCH_PATIENT_LOGIN,
        _is_ok,
        _log_in,
        _measure,
        _shows,
        figure,
        percentile,
    )
    from portal.dev.demo import DEMO_PASSWORD

    if not any(name in selected for name in PRO_FIGURES):
        return
    with transaction(world.factory) as session:
        responses = _add_responses(session, clock=world.clock)
        questionnaire_id, patient_id = _bench_patient_check_in(session)
    app = bench_app(url=world.url, clock=world.clock, factory=world.factory)
    with in_process(app) as client:
        _log_in(client, BENCH_PATIENT_LOGIN, DEMO_PASSWORD)
        home = client.get("/home")
        _shows(home, f'name="questionnaire_id" value="{questionnaire_id}"')
        token = _CSRF.search(home.text)
        if token is None:
            raise RuntimeError("no CSRF token on /home")
        started = client.post(
            f"/care/{patient_id}/questionnaires",
            data={"questionnaire_id": str(questionnaire_id), "csrf_token": token.group(1)},
        )
        if started.status_code != 303:
            raise RuntimeError(f"starting the check-in answered {started.status_code}")
        base = started.headers["location"]
        paths = [f"{base}/pages/{number}" for number in range(1, PAGES + 1)]
        pages = _measure(
            client, paths, requests, check=lambda response: _shows(response, 'id="questionnaire"')
        )
        saves: list[float] = []
        if "pro.save_p95_ms" in selected:
            first = client.get(paths[0])
            _is_ok(first)
            token = _CSRF.search(first.text)
            if token is None:
                raise RuntimeError(f"no CSRF token on {paths[0]}")
            saves = _measure_saves(client, paths[0], token.group(1), requests)
    extra = {"n": requests, "patients": world.patient_count, "responses": responses}
    values = {"pro.page_p95_ms": pages, "pro.save_p95_ms": saves}
    for name in PRO_FIGURES:
        if name in selected and values[name]:
            yield figure(name, round(percentile(values[name], 0.95), 3), "ms", **extra)


def _measure_saves(client: TestClient, path: str, token: str, requests: int) -> list[float]:
    """Milliseconds of each of `requests` POSTs of the page's answer (each saved and
    committed; the answer changes every time), after a short warm-up."""
    samples: list[float] = []
    for index in range(SAVE_WARM_UP + requests):
        started = time.perf_counter()
        response = client.post(path, data={"q1": str(index % 8), "csrf_token": token})
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 303 or not response.headers["location"].endswith("/pages/2"):
            raise RuntimeError(f"saving {path} answered {response.status_code}")
        if index >= SAVE_WARM_UP:
            samples.append(elapsed)
        elif index == SAVE_WARM_UP - 1:
            gc.collect()
    return samples


def _bench_patient_check_in(session: Session) -> tuple[int, int]:
    """The English check-in's id and the bench patient's record id."""
    from portal.dev.bench import BENCH_PATIENT_LOGIN

    questionnaire_id = session.scalar(
        select(Questionnaire.id).where(
            Questionnaire.url == CHECK_IN, Questionnaire.language == Language.EN
        )
    )
    patient_id = session.scalar(
        select(Patient.id)
        .join(User, User.patient_id == Patient.id)
        .where(User.login == BENCH_PATIENT_LOGIN)
    )
    if questionnaire_id is None or patient_id is None:
        raise RuntimeError("the demo world lacks the check-in or the bench patient")
    return questionnaire_id, patient_id


def _add_responses(session: Session, *, clock: Clock) -> int:
    """A check-in response for every patient but the bench patient (who starts their own):
    every third one sent (with a small FHIR resource and a score), the others drafts.
    Returns how many."""
    from portal.dev.bench import BENCH_PATIENT_LOGIN

    now = clock.now()
    questionnaire_ids: dict[Language, int] = {
        row.language: row.id
        for row in session.execute(
            select(Questionnaire.language, Questionnaire.id).where(Questionnaire.url == CHECK_IN)
        )
    }
    bench_patient = session.scalar(select(User.patient_id).where(User.login == BENCH_PATIENT_LOGIN))
    patients = session.execute(
        select(Patient.id, Patient.preferred_language)
        .where(Patient.id != bench_patient)
        .order_by(Patient.id)
    ).all()
    table = QuestionnaireResponse.__table__
    assert isinstance(table, Table)
    for start in range(0, len(patients), CHUNK):
        rows = []
        for index, (patient_id, language) in enumerate(
            patients[start : start + CHUNK], start=start
        ):
            sent = index % 3 == 0
            started = now - timedelta(days=index % 400, hours=1)
            rows.append(
                {
                    "patient_id": patient_id,
                    "questionnaire_id": questionnaire_ids.get(
                        language, questionnaire_ids[Language.EN]
                    ),
                    "visit_id": None,
                    "status": ResponseStatus.COMPLETED if sent else ResponseStatus.IN_PROGRESS,
                    "answers": SENT_ANSWERS if sent else DRAFT_ANSWERS,
                    "saved_pages": [0, 1, 2, 3] if sent else [0, 1],
                    "started_at": started,
                    "updated_at": started + timedelta(minutes=10),
                    "authored_at": started + timedelta(minutes=10) if sent else None,
                    "resource": _sent_resource(patient_id) if sent else None,
                    "score": Decimal(1) if sent else None,
                }
            )
        session.execute(insert(table), rows)
    return len(patients)


def _sent_resource(patient_id: int) -> dict[str, Any]:
    """A small stand-in for a sent response's FHIR resource (only its size matters here)."""
    return {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": CHECK_IN,
        "subject": {"reference": f"Patient/{patient_id}"},
        "item": [
            {"linkId": "pain", "item": [{"linkId": "pain-days", "answer": [{"valueInteger": 2}]}]}
        ],
    }
