"""Invitations: single-use, expiring set-password links (password-reset codes are in
`password_reset.py`).

These functions make and check the secrets; the portal decides how they travel
(an SMS through the outbox, or a printed letter)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from core.audit.service import Actor, record_event
from core.clock import Clock
from core.identity.auth import end_all_sessions, normalize_login
from core.identity.models import (
    Invitation,
    InvitationDelivery,
    Role,
    User,
)
from core.identity.passwords import (
    check_new_password,
    hash_password,
    new_token,
    token_digest,
)
from core.models import Caregiver, CaregiverLink, Language, Patient
from core.text import N_

LOGIN_MIN, LOGIN_MAX = 3, 254


class InvitationProblem(ValueError):
    """The invitation cannot be used; the message is shown to the person holding the link."""


class LoginTaken(ValueError):
    pass


def account_for_patient(session: Session, *, clock: Clock, patient: Patient) -> User:
    """The patient's user account, created (without a password) on first invitation."""
    user = session.scalar(select(User).where(User.patient_id == patient.id))
    if user is None:
        user = User(
            display_name=patient.full_name,
            role=Role.PATIENT,
            patient_id=patient.id,
            preferred_language=patient.preferred_language,
            is_active=True,
            created_at=clock.now(),
        )
        session.add(user)
        session.flush()
    return user


def account_for_caregiver(session: Session, *, clock: Clock, caregiver: Caregiver) -> User:
    """The caregiver's user account, created (without a password) on first invitation."""
    user = session.scalar(select(User).where(User.caregiver_id == caregiver.id))
    if user is None:
        user = User(
            display_name=caregiver.full_name,
            role=Role.CAREGIVER,
            caregiver_id=caregiver.id,
            preferred_language=caregiver.preferred_language,
            is_active=True,
            created_at=clock.now(),
        )
        session.add(user)
        session.flush()
    return user


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    token: str  # only ever in the link; the database keeps its hash


def issue_invitation(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    user: User,
    delivery: InvitationDelivery,
    valid_for: timedelta,
    patient_id: int | None,
) -> IssuedInvitation:
    """Make a new invitation for `user`; earlier open ones stop working."""
    now = clock.now()
    session.execute(
        update(Invitation)
        .where(
            Invitation.user_id == user.id,
            Invitation.used_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    token = new_token()
    invitation = Invitation(
        token_hash=token_digest(token),
        user_id=user.id,
        created_by_user_id=actor.user_id,
        delivery=delivery,
        created_at=now,
        expires_at=now + valid_for,
    )
    session.add(invitation)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="invitation.issue",
        patient_id=patient_id,
        target=f"user:{user.id}",
        detail={"delivery": delivery.value},
    )
    return IssuedInvitation(invitation=invitation, token=token)


def find_invitation(session: Session, *, clock: Clock, token: str) -> Invitation:
    """The usable invitation behind `token`, or InvitationProblem saying what is wrong."""
    invitation = session.scalar(
        select(Invitation).where(Invitation.token_hash == token_digest(token))
    )
    if invitation is None or invitation.revoked_at is not None:
        raise InvitationProblem(
            N_(
                "This invitation link is not valid. It may have been replaced by a newer one. "
                "Ask your care coordinator for a new invitation."
            )
        )
    if invitation.used_at is not None:
        raise InvitationProblem(
            N_(
                "This invitation link was already used. Log in with the username and password "
                "you chose, or ask your care coordinator for a new invitation."
            )
        )
    if invitation.expires_at <= clock.now():
        raise InvitationProblem(
            N_("This invitation link has expired. Ask your care coordinator for a new one.")
        )
    if not invitation.user.is_active:
        raise InvitationProblem(N_("This account is closed. Contact your care coordinator."))
    return invitation


def check_login_name(session: Session, *, login: str, user: User) -> str:
    """Normalize a chosen username and make sure nobody else has it."""
    key = normalize_login(login)
    if not (LOGIN_MIN <= len(key) <= LOGIN_MAX) or any(ch.isspace() for ch in key):
        raise LoginTaken(N_("Choose a username of 3 or more characters, without spaces."))
    other = session.scalar(select(User.id).where(User.login == key, User.id != user.id))
    if other is not None:
        raise LoginTaken(N_("This username is taken. Choose another one."))
    return key


def accept_invitation(
    session: Session,
    *,
    clock: Clock,
    token: str,
    login: str,
    password: str,
    language: Language,
    ip: str | None,
    user_agent: str | None,
) -> User:
    """Use an invitation: set the username and password. The link then stops working.

    Raises InvitationProblem, LoginTaken or WeakPassword with a message for the person.
    """
    invitation = find_invitation(session, clock=clock, token=token)
    user = invitation.user
    key = check_login_name(session, login=login, user=user)
    check_new_password(password, login=key)
    now = clock.now()
    invitation.used_at = now
    user.login = key
    user.password_hash = hash_password(password)
    user.preferred_language = language
    if invitation.delivery is InvitationDelivery.SMS:
        # The link arrived on that phone, so the phone is proven to be theirs.
        user.phone_verified_at = now
    end_all_sessions(session, clock=clock, user_id=user.id)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=Actor(user_id=user.id, label=key, role=user.role.value, ip=ip, user_agent=user_agent),
        action="invitation.accept",
        patient_id=user.patient_id,
        target=f"user:{user.id}",
    )
    return user


def invitations_for_patient(session: Session, *, patient_id: int) -> list[Invitation]:
    """Invitations sent to a patient and to their caregivers, newest first."""
    caregiver_ids = select(CaregiverLink.caregiver_id).where(CaregiverLink.patient_id == patient_id)
    users = select(User.id).where(
        (User.patient_id == patient_id) | (User.caregiver_id.in_(caregiver_ids))
    )
    return list(
        session.scalars(
            select(Invitation)
            .options(joinedload(Invitation.user))
            .where(Invitation.user_id.in_(users))
            .order_by(Invitation.created_at.desc(), Invitation.id.desc())
            .limit(20)
        )
    )
