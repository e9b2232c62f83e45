"""Forgotten passwords: a short code texted to the account's verified phone, then a new
password with it. These functions make and check the codes; the portal texts them through
the outbox.

Limits, so that nobody can flood a person's phone with texts or buy guesses with codes:
per username (whether or not it exists, so the answer tells nobody who has an account) 3
codes an hour and 6 a day; per address 10 requests an hour. A refused request is not
counted, so asking again and again does not push the wait further. A wrong code counts as
a failed login for the account's lock (on the device it came from) and is audited; five
spend the code. A right code always resets the password, even while logins are locked: it
proves the person holds the phone, and it clears the failures so they can log in at once."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session

from core.audit.models import AuditOutcome
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.identity.auth import (
    KnownDevice,
    end_all_sessions,
    normalize_login,
    record_failed_attempt,
)
from core.identity.models import LoginAttempt, PasswordResetCode, PasswordResetRequest, User
from core.identity.passwords import (
    check_new_password,
    digests_match,
    hash_password,
    token_digest,
)
from core.text import N_

RESET_CODE_VALIDITY = timedelta(minutes=15)
RESET_CODE_MAX_ATTEMPTS = 5
# (window, most requests in it)
REQUESTS_PER_USERNAME = ((timedelta(hours=1), 3), (timedelta(days=1), 6))
REQUESTS_PER_ADDRESS = ((timedelta(hours=1), 10),)


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


class ResetThrottled(ValueError):
    """Too many codes asked for; `message` says why (a msgid), `retry_after` how long to
    wait. The same for a username that exists and one that does not."""

    def __init__(self, message: str, *, retry_after: timedelta) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _wait(
    session: Session,
    *,
    now: datetime,
    who: ColumnElement[bool],
    limits: tuple[tuple[timedelta, int], ...],
) -> timedelta | None:
    """How long until another request fits `limits` for the requests matching `who`."""
    longest = max(window for window, _most in limits)
    times = session.scalars(
        select(PasswordResetRequest.at)
        .where(who, PasswordResetRequest.at > now - longest)
        .order_by(PasswordResetRequest.at.desc())
    ).all()
    waits = []
    for window, most in limits:
        recent = [at for at in times if at > now - window]
        if len(recent) >= most:
            # A place frees up when the oldest of the last `most` requests leaves the window.
            waits.append(recent[most - 1] + window - now)
    return max(waits, default=None)


def issue_reset_code(
    session: Session, *, clock: Clock, login: str, ip: str, user_agent: str | None = None
) -> IssuedResetCode | None:
    """A 6-digit code for a user with a verified phone, or None (the caller says the same
    thing either way, so nobody learns which usernames exist). Raises ResetThrottled past
    the limits (see the module's docstring); refusals and codes sent are audited."""
    now = clock.now()
    key = normalize_login(login)[:254]
    user = session.scalar(select(User).where(User.login == key))
    actor = Actor(
        user_id=user.id if user else None,
        label=key or "(empty)",
        role=user.role.value if user else None,
        ip=ip,
        user_agent=user_agent,
    )
    for reason, message, wait in (
        (
            "username_limit",
            N_("A code was asked for this username several times."),
            _wait(
                session,
                now=now,
                who=PasswordResetRequest.login == key,
                limits=REQUESTS_PER_USERNAME,
            ),
        ),
        (
            "address_limit",
            N_("Too many codes were asked for from this network."),
            _wait(session, now=now, who=PasswordResetRequest.ip == ip, limits=REQUESTS_PER_ADDRESS),
        ),
    ):
        if wait is not None:
            record_event(
                session,
                clock=clock,
                actor=actor,
                action="password.reset_code",
                outcome=AuditOutcome.FAILURE,
                patient_id=user.patient_id if user else None,
                target=f"user:{user.id}" if user else None,
                detail={"reason": reason},
            )
            raise ResetThrottled(message, retry_after=wait)
    session.add(PasswordResetRequest(login=key, ip=ip, at=now))
    session.flush()
    if user is None or not user.is_active or user.phone_verified_at is None:
        return None
    phone = user_phone(user)
    if phone is None:
        return None
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
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="password.reset_code",
        patient_id=user.patient_id,
        target=f"user:{user.id}",
    )
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
    device: KnownDevice | None = None,
) -> User:
    """Set a new password with a texted code. A wrong code counts toward the account's
    lock on `device` and is audited; five spend the code. Raises ResetProblem (or
    WeakPassword for a right code with a weak password)."""
    generic = ResetProblem(N_("This code is not right or has expired. Ask for a new code."))
    now = clock.now()
    key = normalize_login(login)[:254]
    user = session.scalar(select(User).where(User.login == key)) if key else None
    actor = Actor(
        user_id=user.id if user else None,
        label=key or "(empty)",
        role=user.role.value if user else None,
        ip=ip,
        user_agent=user_agent,
    )

    def refuse(reason: str) -> ResetProblem:
        record_failed_attempt(
            session, clock=clock, login=key, ip=ip or "unknown", user=user, device=device
        )
        record_event(
            session,
            clock=clock,
            actor=actor,
            action="password.reset",
            outcome=AuditOutcome.FAILURE,
            patient_id=user.patient_id if user else None,
            target=f"user:{user.id}" if user else None,
            detail={"reason": reason},
        )
        return generic

    if user is None:
        raise refuse("no_code")
    pending = session.scalar(
        select(PasswordResetCode)
        .where(PasswordResetCode.user_id == user.id, PasswordResetCode.used_at.is_(None))
        .order_by(PasswordResetCode.created_at.desc())
    )
    if pending is None:
        raise refuse("no_code")
    if pending.expires_at <= now:
        raise refuse("code_expired")
    cleaned = "".join(ch for ch in code if ch in "0123456789")
    if not digests_match(pending.code_hash, token_digest(f"{user.id}:{cleaned}")):
        pending.attempts += 1
        spent = pending.attempts >= RESET_CODE_MAX_ATTEMPTS
        if spent:
            pending.used_at = now
        session.flush()
        raise refuse("code_spent" if spent else "wrong_code")
    check_new_password(new_password, login=user.login)
    pending.used_at = now
    user.password_hash = hash_password(new_password)
    end_all_sessions(session, clock=clock, user_id=user.id)
    # Earlier guesses were at the old password: the person, who holds the phone, logs in
    # with the new one at once, wherever they are.
    session.execute(
        delete(LoginAttempt).where(LoginAttempt.login == key, LoginAttempt.succeeded.is_(False))
    )
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="password.reset",
        patient_id=user.patient_id,
        target=f"user:{user.id}",
    )
    return user
