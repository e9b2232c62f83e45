"""Caregivers and portal access, from a patient's record: adding a caregiver, their proxy
rights, and invitations to the portal (by text or on paper)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, Request
from fastapi.responses import Response
from jinja2_fragments import render_block
from markupsafe import Markup
from pydantic import Field

from coordination.texting.consent import (
    CONSENT_FIELD,
    check_tick,
    record_tick,
    shared_number_problem,
)
from coordination.texting.models import ConsentHow
from core.caregivers import CaregiverInput, add_caregiver, get_caregiver_link, set_proxy_rights
from core.errors import FieldErrors
from core.identity.access import Permission
from core.identity.models import InvitationDelivery
from core.ids import PathId, parse_id
from core.models import ProxyRight, Relation
from portal import i18n
from portal.deps import ContextDep, PatientAccess, SessionDep, require_patient
from portal.onboarding import invitation_qr_code, invite, record_language
from portal.routes.pages import page_router
from portal.routes.patients import ConsentFields, consent_context, consent_language
from portal.web import environment, redirect, render
from portal.words import word

router = page_router()
_ = i18n.gettext

Inviter = Annotated[PatientAccess, Depends(require_patient(Permission.PATIENT_INVITE))]
ProxyManager = Annotated[PatientAccess, Depends(require_patient(Permission.PROXY_MANAGE))]
LETTER = "portal/invitation_letter.html"


@router.post("/patients/{patient_id}/invitations", name="patient_invite")
def patient_invite(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: Inviter,
    delivery: Annotated[str, Form(max_length=8)] = "sms",
    caregiver_link: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """Invite the patient, or one of their caregivers, by text or on paper."""
    link = None
    if caregiver_link:
        link_id = parse_id(caregiver_link)
        link = (
            get_caregiver_link(session, patient_id=access.patient.id, link_id=link_id)
            if link_id is not None
            else None
        )
        if link is None:
            return render(
                request,
                "portal/error.html",
                {
                    "title": _("Not found"),
                    "message": _("This caregiver is not linked to the patient."),
                    "status": 404,
                },
                status_code=404,
            )
    try:
        chosen = InvitationDelivery(delivery)
    except ValueError:
        chosen = InvitationDelivery.PRINT
    try:
        sent = invite(
            session,
            clock=context.clock,
            settings=context.settings,
            wake_dispatcher=context.wake_dispatcher,
            actor=access.actor,
            patient=access.patient,
            link=link,
            delivery=chosen,
        )
    except FieldErrors as problem:
        return render(
            request,
            "portal/error.html",
            {
                "title": _("The invitation was not sent"),
                "message": _(next(iter(problem.errors.values()))),
                "status": 400,
                "back": f"/patients/{access.patient.id}",
            },
            status_code=400,
        )
    if chosen is InvitationDelivery.SMS:
        return redirect(request, f"/patients/{access.patient.id}?done=invited_sms")
    # The letter speaks the invited person's language; the notes around it, the
    # coordinator's.
    language = record_language(sent.user)
    values = {
        "patient": access.patient,
        "invitee": sent.user,
        "url": sent.url,
        "days": sent.expires_in_days,
        "letter_language": language.value,
    }
    with i18n.speaking(language):
        values["qr_code"] = invitation_qr_code(
            sent.url, title=_("QR code of the invitation address")
        )
        letter = render_block(environment, LETTER, "letter", **values)
    return render(request, LETTER, {**values, "letter": Markup(letter)})  # noqa: S704


class CaregiverForm(ConsentFields):
    given_name: str = Field("", max_length=200)
    family_name: str = Field("", max_length=200)
    relationship: str = Field("", max_length=100)
    relationship_other: str = Field("", max_length=100)
    mobile_phone: str = Field("", max_length=40)
    preferred_language: str = Field("en", max_length=5)
    rights: list[str] = Field(default_factory=list, max_length=10)


def _relations() -> list[tuple[str, str]]:
    """The relationship list for the form's select, in the reader's language."""
    return [(relation.value, word("relation", relation).capitalize()) for relation in Relation]


def _rights(values: list[str]) -> set[ProxyRight]:
    return {ProxyRight(value) for value in values if value in ProxyRight.__members__.values()}


@router.get("/patients/{patient_id}/caregivers/new", name="caregiver_new")
def caregiver_new(
    request: Request, session: SessionDep, context: ContextDep, access: ProxyManager
) -> Response:
    patient = access.patient
    return render(
        request,
        "portal/caregiver_form.html",
        {
            "patient": patient,
            "form": CaregiverInput(),
            "errors": {},
            "relations": _relations(),
            "all_rights": list(ProxyRight),
            "consent": consent_context(
                session,
                context,
                viewer=access.user,
                state_id=patient.state_id,
                zone=patient.time_zone,
            ),
        },
    )


@router.post("/patients/{patient_id}/caregivers/new", name="caregiver_create")
def caregiver_create(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: ProxyManager,
    data: Annotated[CaregiverForm, Form()],
) -> Response:
    form = CaregiverInput(
        given_name=data.given_name,
        family_name=data.family_name,
        relationship=data.relationship,
        relationship_other=data.relationship_other,
        mobile_phone=data.mobile_phone,
        preferred_language=data.preferred_language,
        rights=_rights(data.rights),
    )
    patient = access.patient
    # The caregiver's own number and language: the wording read to them is the one recorded.
    language = consent_language(form.preferred_language)
    tick = data.tick(language)
    consent = consent_context(
        session,
        context,
        viewer=access.user,
        state_id=patient.state_id,
        phone_typed=form.mobile_phone,
        zone=patient.time_zone,
        agreed=tick.agreed,
    )
    wording = consent["wordings"][language]
    try:
        link = add_caregiver(
            session,
            clock=context.clock,
            actor=access.actor,
            patient=patient,
            data=form,
            other_errors=check_tick(
                tick, wording=wording, phone_given=bool(form.mobile_phone.strip())
            )
            or shared_number_problem(consent["number"], tick=tick),
        )
    except FieldErrors as problem:
        consent["agreed"] = tick.agreed and CONSENT_FIELD not in problem.errors
        return render(
            request,
            "portal/caregiver_form.html",
            {
                "patient": patient,
                "form": form,
                "errors": i18n.translate_errors(problem.errors),
                "relations": _relations(),
                "all_rights": list(ProxyRight),
                "consent": consent,
            },
            status_code=400,
        )
    record_tick(
        session,
        clock=context.clock,
        tick=tick,
        phone=link.caregiver.mobile_phone,
        how=ConsentHow.COORDINATOR,
        by_user_id=access.user.id,
        wording=wording,
    )
    return redirect(request, f"/patients/{access.patient.id}?done=caregiver_added")


@router.post("/patients/{patient_id}/caregivers/{link_id}/rights", name="caregiver_rights")
def caregiver_rights(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    access: ProxyManager,
    link_id: PathId,
    rights: Annotated[list[str], Form(max_length=10)] = [],  # noqa: B006
) -> Response:
    link = get_caregiver_link(session, patient_id=access.patient.id, link_id=link_id)
    if link is None:
        return render(
            request,
            "portal/error.html",
            {
                "title": _("Not found"),
                "message": _("This caregiver is not linked to the patient."),
                "status": 404,
            },
            status_code=404,
        )
    set_proxy_rights(
        session, clock=context.clock, actor=access.actor, link=link, rights=_rights(rights)
    )
    return redirect(request, f"/patients/{access.patient.id}?done=rights_saved")
