"""SMS consent, per phone number: who may be texted, and the history of every change.

Consent belongs to the number, not to a person: a patient and a parent sharing one phone
opt in and out together. A number without any record may not be texted."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.models import (
    ConsentAction,
    ConsentHow,
    ConsentStatus,
    SmsConsent,
    SmsConsentEvent,
)
from core.clock import Clock


def _set_status(session: Session, *, clock: Clock, phone: str, status: ConsentStatus) -> SmsConsent:
    consent = session.scalar(select(SmsConsent).where(SmsConsent.phone == phone))
    if consent is None:
        consent = SmsConsent(phone=phone, status=status, updated_at=clock.now())
        session.add(consent)
    elif consent.status is not status:
        consent.status = status
        consent.updated_at = clock.now()
    return consent


def opt_in(
    session: Session,
    *,
    clock: Clock,
    phone: str,
    how: ConsentHow,
    by_user_id: int | None,
    wording: str,
    inbound_sid: str | None = None,
) -> SmsConsentEvent:
    """Record that texts to `phone` are wanted: how, by whom, and the wording shown."""
    if not wording.strip():
        raise ValueError("an opt-in records the wording the person agreed to")
    _set_status(session, clock=clock, phone=phone, status=ConsentStatus.OPTED_IN)
    event = SmsConsentEvent(
        phone=phone,
        at=clock.now(),
        action=ConsentAction.OPT_IN,
        how=how,
        by_user_id=by_user_id,
        wording=wording,
        inbound_message_sid=inbound_sid,
    )
    session.add(event)
    session.flush()
    return event


def opt_out(
    session: Session,
    *,
    clock: Clock,
    phone: str,
    how: ConsentHow,
    inbound_sid: str | None = None,
    by_user_id: int | None = None,
) -> SmsConsentEvent:
    """Stop every text to `phone`, for everyone who shares the number, at once."""
    _set_status(session, clock=clock, phone=phone, status=ConsentStatus.OPTED_OUT)
    event = SmsConsentEvent(
        phone=phone,
        at=clock.now(),
        action=ConsentAction.OPT_OUT,
        how=how,
        by_user_id=by_user_id,
        inbound_message_sid=inbound_sid,
    )
    session.add(event)
    session.flush()
    return event


def record_help(
    session: Session, *, clock: Clock, phone: str, inbound_sid: str | None
) -> SmsConsentEvent:
    """Keep in the history that the number asked for HELP (consent does not change)."""
    event = SmsConsentEvent(
        phone=phone,
        at=clock.now(),
        action=ConsentAction.HELP,
        how=ConsentHow.SMS_KEYWORD,
        inbound_message_sid=inbound_sid,
    )
    session.add(event)
    session.flush()
    return event


def consent_status(session: Session, *, phone: str) -> ConsentStatus | None:
    """The number's consent, or None when it never opted in or out."""
    return session.scalar(select(SmsConsent.status).where(SmsConsent.phone == phone))


def may_text(session: Session, *, phone: str) -> bool:
    """True only when the number opted in (and did not opt out since)."""
    return consent_status(session, phone=phone) is ConsentStatus.OPTED_IN


def consent_history(session: Session, *, phone: str) -> list[SmsConsentEvent]:
    """Every consent event of the number, oldest first."""
    return list(
        session.scalars(
            select(SmsConsentEvent)
            .where(SmsConsentEvent.phone == phone)
            .order_by(SmsConsentEvent.at, SmsConsentEvent.id)
        )
    )


def flag_number(session: Session, *, clock: Clock, phone: str, code: str) -> None:
    """Mark a number the provider refused for good (invalid, not a mobile): nothing more is
    sent to it until a coordinator clears the flag. A number with no consent record has
    nothing to flag (nothing is planned for it anyway)."""
    consent = session.scalar(select(SmsConsent).where(SmsConsent.phone == phone))
    if consent is not None:
        consent.problem_code = code
        consent.problem_at = clock.now()
        session.flush()


def clear_flag(session: Session, *, phone: str) -> None:
    """A coordinator checked the number: texts may go to it again."""
    consent = session.scalar(select(SmsConsent).where(SmsConsent.phone == phone))
    if consent is not None:
        consent.problem_code = None
        consent.problem_at = None
        session.flush()
