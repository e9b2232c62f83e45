"""Staff read a patient's questionnaire responses: the list on the record, and one response's
answers (each read is audited, like every staff read of the record)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response

from coordination.questionnaires.loading import form_of
from coordination.questionnaires.responses import read_response_for_staff, responses_of_patient
from core.identity.access import Permission
from core.ids import PathId
from portal.deps import ContextDep, PageNotFound, PatientAccess, SessionDep, require_patient
from portal.routes.pages import page_router
from portal.routes.questionnaires import review_rows
from portal.web import render

router = page_router()
RecordReader = Annotated[PatientAccess, Depends(require_patient(Permission.RECORD_VIEW))]


@router.get("/patients/{patient_id}/questionnaires", name="patient_questionnaires")
def patient_questionnaires(request: Request, session: SessionDep, access: RecordReader) -> Response:
    responses = responses_of_patient(session, patient_id=access.patient.id)
    return render(
        request,
        "portal/patient_questionnaires.html",
        {"patient": access.patient, "responses": responses},
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
    form = form_of(response.questionnaire)
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
