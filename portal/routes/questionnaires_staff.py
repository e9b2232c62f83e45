"""Staff read a patient's questionnaire responses: the list on the record, and one response's
answers (each read is audited, like every staff read of the record)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response

from coordination.questionnaires.loading import form_of, in_language
from coordination.questionnaires.responses import read_response_for_staff, responses_of_patient
from core.identity.access import Permission
from core.ids import PathId
from portal.deps import ContextDep, PageNotFound, PatientAccess, SessionDep, require_patient
from portal.i18n import current_language
from portal.routes.pages import page_router
from portal.routes.questionnaires import review_rows
from portal.routes.questionnaires_due import due_lines
from portal.web import render

router = page_router()
RecordReader = Annotated[PatientAccess, Depends(require_patient(Permission.RECORD_VIEW))]


@router.get("/patients/{patient_id}/questionnaires", name="patient_questionnaires")
def patient_questionnaires(
    request: Request, session: SessionDep, context: ContextDep, access: RecordReader
) -> Response:
    responses = responses_of_patient(session, patient_id=access.patient.id)
    # What the protocol asks for: due, overdue, in progress, done, or not loaded yet.
    due = due_lines(
        session,
        clock=context.clock,
        patient=access.patient,
        may_answer=False,
        for_staff=True,
    )
    return render(
        request,
        "portal/patient_questionnaires.html",
        {"patient": access.patient, "responses": responses, "due": due},
        block="responses",
    )


@router.get(
    "/patients/{patient_id}/questionnaires/{response_id}", name="patient_questionnaire_response"
)
def patient_questionnaire_response(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: RecordReader,
    response_id: PathId,
) -> Response:
    """One response's answers as the patient gave them (in the questionnaire's language)."""
    response = read_response_for_staff(
        session,
        clock=context.clock,
        actor=access.actor,
        patient=access.patient,
        response_id=response_id,
    )
    if response is None:
        raise PageNotFound()
    # The question texts in the reader's language where that version has it.
    form = form_of(
        in_language(session, questionnaire=response.questionnaire, language=current_language())
    )
    return render(
        request,
        "portal/patient_questionnaire_response.html",
        {
            "patient": access.patient,
            "response": response,
            "form": form,
            "rows": review_rows(form, response),
        },
        block="response",
    )
