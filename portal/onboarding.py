"""Bringing people in: invitations (by SMS or printed) and password-reset codes by SMS.

This orchestrates `core.identity` (the secrets) and `coordination` (the outbox), which is
why it lives in the portal, the one room allowed to import both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import segno
from markupsafe import Markup
from sqlalchemy.orm import Session

from coordination.texting.models import MessagePurpose
from coordination.texting.outbox import enqueue_message
from coordination.texting.words import fit_for_sms
from core.audit.service import Actor
from core.clock import Clock
from core.db import after_commit
from core.errors import FieldErrors
from core.identity.invitations import (
    account_for_caregiver,
    account_for_patient,
    issue_invitation,
)
from core.identity.models import InvitationDelivery, User
from core.identity.password_reset import issue_reset_code
from core.models import CaregiverLink, Language, Patient
from core.settings import Settings
from core.text import N_

# Written as people read them; sent folded for GSM-7 (aquí → aqui, días → dias), as reminders
# are, so that a Spanish text stays two segments instead of four in UCS-2.
INVITATION_SMS = {
    Language.EN: "{program}: you are invited to your follow-up portal. Set your password "
    "here within {days} days: {url}",
    Language.ES: "{program}: le invitamos a su portal de seguimiento. Cree su contraseña "
    "aquí en los próximos {days} días: {url}",
}
RESET_SMS = {
    Language.EN: "{program}: your password reset code is {code}. It expires in 15 minutes. "
    "If you did not ask for it, ignore this text.",
    Language.ES: "{program}: su código para cambiar la contraseña es {code}. Vence en 15 "
    "minutos. Si no lo pidió, ignore este mensaje.",
}


def invitation_text(language: Language, *, program: str, days: int, url: str) -> str:
    """The invitation text as it is sent (accents GSM-7 lacks written plainly)."""
    return fit_for_sms(INVITATION_SMS[language].format(program=program, days=days, url=url))


def reset_text(language: Language, *, program: str, code: str) -> str:
    """The password-reset text as it is sent (accents GSM-7 lacks written plainly)."""
    return fit_for_sms(RESET_SMS[language].format(program=program, code=code))


def record_language(user: User) -> Language:
    """The language of the person behind an account as their record says it (the patient's
    or the caregiver's, which a coordinator keeps right); a staff account's own.

    The account copies it when it is made, but the record may change before the person
    first logs in: the record is the truth until they choose for themselves."""
    if user.patient is not None:
        return user.patient.preferred_language
    if user.caregiver is not None:
        return user.caregiver.preferred_language
    return user.preferred_language


def invitation_url(settings: Settings, token: str) -> str:
    """The link that opens an invitation (the token is its only secret)."""
    return f"{settings.public_base_url}/invite/{token}"


def invitation_qr_code(url: str, *, title: str) -> Markup:
    """The invitation link as a QR code, an SVG drawn in the page itself: a phone's camera
    opens the link without typing 60 characters, and no other host learns of the letter.

    Error correction M (segno raises it when the size allows): a letter folded or smudged
    across a few modules still scans."""
    svg = segno.make(url, error="m").svg_inline(
        scale=4, border=4, title=title, svgclass="qr-code", lineclass=None
    )
    # An image with a name for screen readers (the <title> segno writes, escaped).
    return Markup(svg.replace("<svg ", '<svg role="img" ', 1))  # noqa: S704


@dataclass(frozen=True)
class SentInvitation:
    user: User
    url: str
    delivery: InvitationDelivery
    expires_in_days: int


def invite(
    session: Session,
    *,
    clock: Clock,
    settings: Settings,
    wake_dispatcher: Callable[[], None],
    actor: Actor,
    patient: Patient,
    link: CaregiverLink | None,
    delivery: InvitationDelivery,
) -> SentInvitation:
    """Invite the patient (or the caregiver of `link`) to the portal.

    By SMS the link goes to their mobile phone through the outbox; for print the link is
    returned to be shown once. Raises FieldErrors when an SMS cannot be sent."""
    if link is not None:
        user = account_for_caregiver(session, clock=clock, caregiver=link.caregiver)
        phone, language = link.caregiver.mobile_phone, link.caregiver.preferred_language
    else:
        user = account_for_patient(session, clock=clock, patient=patient)
        phone, language = patient.mobile_phone, patient.preferred_language
    if delivery is InvitationDelivery.SMS and phone is None:
        raise FieldErrors(
            {"delivery": N_("There is no mobile number to text. Print the invitation.")}
        )
    days = settings.invitation_valid_days
    issued = issue_invitation(
        session,
        clock=clock,
        actor=actor,
        user=user,
        delivery=delivery,
        valid_for=timedelta(days=days),
        patient_id=patient.id,
    )
    url = invitation_url(settings, issued.token)
    if delivery is InvitationDelivery.SMS:
        assert phone is not None
        enqueue_message(
            session,
            clock=clock,
            to_phone=phone,
            body=invitation_text(language, program=patient.state.program_name, days=days, url=url),
            purpose=MessagePurpose.INVITATION,
            patient_id=patient.id,
            user_id=user.id,
        )
        after_commit(session, wake_dispatcher)
    return SentInvitation(user=user, url=url, delivery=delivery, expires_in_days=days)


def send_reset_code(
    session: Session,
    *,
    clock: Clock,
    settings: Settings,
    wake_dispatcher: Callable[[], None],
    login: str,
    ip: str,
    user_agent: str | None,
) -> None:
    """Text a reset code if `login` has a verified phone. Says nothing either way; raises
    ResetThrottled past the limits."""
    issued = issue_reset_code(session, clock=clock, login=login, ip=ip, user_agent=user_agent)
    if issued is None:
        return
    user = issued.user
    state_program = (
        user.patient.state.program_name
        if user.patient is not None
        else _caregiver_program(user) or settings.program_name
    )
    enqueue_message(
        session,
        clock=clock,
        to_phone=issued.phone,
        body=reset_text(user.preferred_language, program=state_program, code=issued.code),
        purpose=MessagePurpose.PASSWORD_RESET,
        patient_id=user.patient_id,
        user_id=user.id,
    )
    after_commit(session, wake_dispatcher)


def _caregiver_program(user: User) -> str | None:
    if user.caregiver is None or not user.caregiver.links:
        return None
    return user.caregiver.links[0].patient.state.program_name
