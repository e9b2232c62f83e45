"""Forgotten passwords: a short code texted to the account's verified phone, then a new
password with it. These functions make and check the codes; the portal texts them through
the outbox."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.audit.service import Actor, record_event
from core.clock import Clock
from core.identity.auth import end_all_sessions, normalize_login
from core.identity.models import PasswordResetCode, User
from core.identity.passwords import (
    check_new_password,
    digests_match,
    hash_password,
    token_digest,
)
from core.text import N_

RESET_CODE_VALIDITY = timedelta(minutes=15)
RESET_CODE_MAX_ATTEMPTS = 5


def user_phone(user: User) -> str | None:
    """The mobile number of the person behind an account (patients and caregivers)."""
    if user.patient is not None:
        return user.patient.mobile_phone
    if user.caregiver is not None:
        return user.caregiver.mobile_phone
    return None


@dataclass(frozen=True)
class IssuedResetCode:
    user: User
    phone: str
    code: str


def issue_reset_code(session: Session, *, clock: Clock, login: str) -> IssuedResetCode | None:
    """A 6-digit code for a user with a verified phone, or None (the caller says the same
    thing either way, so nobody learns which usernames exist)."""
    user = session.scalar(select(User).where(User.login == normalize_login(login)))
    if user is None or not user.is_active or user.phone_verified_at is None:
        return None
    phone = user_phone(user)
    if phone is None:
        return None
    now = clock.now()
    session.execute(
        update(PasswordResetCode)
        .where(PasswordResetCode.user_id == user.id, PasswordResetCode.used_at.is_(None))
        .values(used_at=now)
    )
    code = f"{secrets.randbelow(1_000_000):06d}"
    session.add(
        PasswordResetCode(
            user_id=user.id,
            code_hash=token_digest(f"{user.id}:{code}"),
            created_at=now,
            expires_at=now + RESET_CODE_VALIDITY,
            attempts=0,
        )
    )
    session.flush()
    return IssuedResetCode(user=user, phone=phone, code=code)


class ResetProblem(ValueError):
    pass


def reset_password(
    session: Session,
    *,
    clock: Clock,
    login: str,
    code: str,
    new_password: str,
    ip: str | None,
    user_agent: str | None,
) -> User:
    """Set a new password with a texted code. Five wrong codes spend the code."""
    generic = ResetProblem(N_("This code is not right or has expired. Ask for a new code."))
    user = session.scalar(select(User).where(User.login == normalize_login(login)))
    if user is None:
        raise generic
    now = clock.now()
    pending = session.scalar(
        select(PasswordResetCode)
        .where(PasswordResetCode.user_id == user.id, PasswordResetCode.used_at.is_(None))
        .order_by(PasswordResetCode.created_at.desc())
    )
    if pending is None or pending.expires_at <= now:
        raise generic
    cleaned = "".join(ch for ch in code if ch.isdigit())
    if not digests_match(pending.code_hash, token_digest(f"{user.id}:{cleaned}")):
        pending.attempts += 1
        if pending.attempts >= RESET_CODE_MAX_ATTEMPTS:
            pending.used_at = now
        session.flush()
        raise generic
    check_new_password(new_password, login=user.login)
    pending.used_at = now
    user.password_hash = hash_password(new_password)
    end_all_sessions(session, clock=clock, user_id=user.id)
    record_event(
        session,
        clock=clock,
        actor=Actor(
            user_id=user.id,
            label=user.login or "",
            role=user.role.value,
            ip=ip,
            user_agent=user_agent,
        ),
        action="password.reset",
        patient_id=user.patient_id,
        target=f"user:{user.id}",
    )
    return user
