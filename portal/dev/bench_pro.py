"""The questionnaire figures of `cgt-access bench` (`pro.`): a questionnaire page for the
logged-in demo patient, resuming a draft, in the bench world with every bulk patient holding
a sent response and a draft of the check-in (the tables a page reads at full size)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session, sessionmaker

from coordination.questionnaires.loading import form_of
from coordination.questionnaires.models import (
    Questionnaire,
    QuestionnaireResponse,
    ResponseStatus,
)
from coordination.questionnaires.responses import save_page, start_response
from core.audit.service import Actor
from core.clock import Clock
from core.db import transaction
from core.models import Language, Patient

if TYPE_CHECKING:
    from httpx import Response

PRO_FIGURES = ("pro.page_p95_ms", "pro.page_p95_ratio_healthz")
CHUNK = 2_000
_SENT = {
    "pain-days": [{"value": 2}],
    "fatigue": [{"option": 1}],
    "missed-days": [{"value": 0}],
    "hospital-stay": [{"value": False}],
}


def add_responses(session: Session, *, clock: Clock, bench_patient_id: int) -> tuple[int, int]:
    """A sent response and a draft (page one saved) for every patient but the bench
    patient, whose own draft is started through the service. Returns (rows, response id)."""
    questionnaire = session.scalar(
        select(Questionnaire)
        .where(Questionnaire.language == Language.EN)
        .order_by(Questionnaire.id)
        .limit(1)
    )
    if questionnaire is None:
        raise RuntimeError("the demo seed loads the check-in questionnaire")
    now = clock.now()
    table = QuestionnaireResponse.__table__
    assert isinstance(table, Table)
    patient_ids = list(
        session.scalars(
            select(Patient.id).where(Patient.id != bench_patient_id).order_by(Patient.id)
        )
    )
    rows = 0
    for start in range(0, len(patient_ids), CHUNK):
        batch: list[dict[str, Any]] = []
        for patient_id in patient_ids[start : start + CHUNK]:
            common = {
                "patient_id": patient_id,
                "questionnaire_id": questionnaire.id,
                "started_at": now,
                "updated_at": now,
            }
            batch.append(
                {
                    **common,
                    "status": ResponseStatus.COMPLETED,
                    "answers": _SENT,
                    "saved_pages": [0, 1, 2, 3],
                    "authored_at": now,
                }
            )
            batch.append(
                {
                    **common,
                    "status": ResponseStatus.IN_PROGRESS,
                    "answers": {"pain-days": [{"value": 1}]},
                    "saved_pages": [0],
                    "authored_at": None,
                }
            )
        session.execute(insert(table), batch)
        rows += len(batch)
    patient = session.get(Patient, bench_patient_id)
    assert patient is not None
    actor = Actor.system("bench")
    response = start_response(
        session, clock=clock, actor=actor, patient=patient, questionnaire=questionnaire
    )
    field = form_of(questionnaire).fields["pain-days"]
    save_page(session, clock=clock, response=response, page=0, posted={field: ["3"]})
    return rows + 1, response.id


def pro_figures(
    *,
    factory: sessionmaker[Session],
    clock: Clock,
    client_for: Callable[[], Any],
    log_in: Callable[[Any], None],
    measure: Callable[..., list[float]],
    percentile: Callable[[list[float], float], float],
    ratio: Callable[[float, float], float],
    bench_patient_id: int,
    selected: list[str],
    requests: int,
    patients: int,
) -> Iterator[tuple[str, float, str, dict[str, Any]]]:
    """Page two of the check-in for the bench patient, who saved page one (GET, checked to
    show the form), and its ratio to /healthz measured in the same run."""
    if not any(name in selected for name in PRO_FIGURES):
        return
    with transaction(factory) as session:
        rows, response_id = add_responses(session, clock=clock, bench_patient_id=bench_patient_id)
    path = f"/care/{bench_patient_id}/questionnaires/{response_id}/pages/2"

    def shows_form(response: Response) -> None:
        if response.status_code != 200 or 'id="questionnaire"' not in response.text:
            raise RuntimeError(f"GET {path} answered {response.status_code} without the form")

    with client_for() as client:
        healthz = measure(client, ["/healthz"], requests, check=shows_ok)
        log_in(client)
        page = measure(client, [path], requests, check=shows_form)
    page_p95 = round(percentile(page, 0.95), 3)
    values = {
        "pro.page_p95_ms": (page_p95, "ms"),
        "pro.page_p95_ratio_healthz": (
            ratio(page_p95, round(percentile(healthz, 0.95), 3)),
            "ratio",
        ),
    }
    extra = {"n": requests, "patients": patients, "responses": rows}
    for name in PRO_FIGURES:
        if name in selected:
            value, unit = values[name]
            yield name, value, unit, extra


def shows_ok(response: Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"GET {response.request.url.path} answered {response.status_code}")
