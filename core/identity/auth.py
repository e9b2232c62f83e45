"""Logging in: password checks with throttling, login sessions with idle and absolute
timeouts, and the TOTP second factor for staff.

Throttling: failures (wrong passwords, second-factor and reset codes) are counted per login
in 15-minute windows. A browser where the person completed a login before (a known device,
told by a signed cookie the portal keeps) has a count of its own; every other device shares
one. Five failures lock that count for 15 minutes: someone guessing elsewhere cannot lock the
person out of their own phone, and guessing stays bounded (five tries per window from all
unknown devices together, five per known device, which only a past login can make). An
address with 30 failures in the window is refused too, except on a device known to the
login."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, selectinload

from core.audit.models import AuditOutcome
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.errors import FieldErrors
from core.identity.models import LoginAttempt, LoginSession, User
from core.identity.passwords import (
    WeakPassword,
    check_new_password,
    hash_password,
    needs_rehash,
    new_token,
    token_digest,
    verify_password,
)
from core.text import N_

THROTTLE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_LOGIN = 5  # per known device, and for all unknown devices together
MAX_FAILURES_PER_IP = 30
LAST_SEEN_GRANULARITY = timedelta(seconds=60)
# Attempts only feed the throttle windows above; the audit log keeps every login's outcome.
# An address is personal data, so the rows go once they no longer count (with a day's margin).
LOGIN_ATTEMPTS_KEPT = timedelta(days=1)
TOTP_ISSUER = "CGT Access"


class LoginRefusal(enum.StrEnum):
    BAD_CREDENTIALS = "bad_credentials"
    LOCKED = "locked"
    IP_THROTTLED = "ip_throttled"
    INACTIVE = "inactive"


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    session_token: str | None
    refusal: LoginRefusal | None
    retry_after: timedelta | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None


@dataclass(frozen=True)
class KnownDevice:
    """A browser where people completed a login before (from its signed cookie): its random
    id and the accounts that logged in on it, most recent first."""

    device_id: str
    user_ids: tuple[int, ...]


def device_count_key(device: KnownDevice | None, user: User | None) -> str | None:
    """Whose count a try from `device` at `user`'s login goes to: the device's own (a digest
    of its id) when `user` logged in on it before, else None, the count of unknown devices."""
    if device is None or user is None or user.id not in device.user_ids:
        return None
    return token_digest(f"device:{device.device_id}")


def normalize_login(login: str) -> str:
    return login.strip().lower()


def _recent_failures(
    session: Session, *, since: datetime, login: str | None, ip: str | None
) -> int:
    query = select(func.count(LoginAttempt.id)).where(
        LoginAttempt.at >= since, LoginAttempt.succeeded.is_(False)
    )
    if login is not None:
        query = query.where(LoginAttempt.login == login)
    if ip is not None:
        query = query.where(LoginAttempt.ip == ip)
    return session.scalar(query) or 0


def _lock_remaining(
    session: Session, *, now: datetime, login: str, device: str | None
) -> timedelta | None:
    """How long this login stays locked for a device's count (see `device_count_key`), or
    None: locked while the window holds 5 failures of that count."""
    since = now - THROTTLE_WINDOW
    failures = session.scalars(
        select(LoginAttempt.at)
        .where(LoginAttempt.login == login, LoginAttempt.at >= since)
        .where(LoginAttempt.succeeded.is_(False))
        .where(LoginAttempt.device == device if device else LoginAttempt.device.is_(None))
        .order_by(LoginAttempt.at.desc())
        .limit(MAX_FAILURES_PER_LOGIN)
    ).all()
    if len(failures) < MAX_FAILURES_PER_LOGIN:
        return None
    return max(failures[-1] + THROTTLE_WINDOW - now, timedelta(seconds=1))


def login_lock_remaining(
    session: Session, *, clock: Clock, login: str, user: User | None, device: KnownDevice | None
) -> timedelta | None:
    """How long `login` stays locked on this device after repeated failures (None when it
    is not). `user` is the account behind `login`, if there is one."""
    return _lock_remaining(
        session,
        now=clock.now(),
        login=normalize_login(login),
        device=device_count_key(device, user),
    )


def record_failed_attempt(
    session: Session,
    *,
    clock: Clock,
    login: str,
    ip: str,
    user: User | None,
    device: KnownDevice | None,
) -> None:
    """Count a failure (also a wrong second-factor or reset code) toward the login's lock,
    in the count of the device it came from."""
    session.add(
        LoginAttempt(
            login=normalize_login(login)[:254],
            ip=ip,
            at=clock.now(),
            succeeded=False,
            device=device_count_key(device, user),
        )
    )
    session.flush()


def prune_login_attempts(session: Session, *, clock: Clock) -> int:
    """Delete the login attempts older than `LOGIN_ATTEMPTS_KEPT`, which no throttle window
    reads any more; return how many went."""
    cutoff = clock.now() - LOGIN_ATTEMPTS_KEPT
    gone = session.execute(delete(LoginAttempt).where(LoginAttempt.at < cutoff))
    session.flush()
    return int(getattr(gone, "rowcount", 0) or 0)


def authenticate(
    session: Session,
    *,
    clock: Clock,
    login: str,
    password: str,
    ip: str,
    user_agent: str | None,
    device: KnownDevice | None = None,
) -> LoginResult:
    """Check a password, throttled per login and device and per address (see the module's
    docstring); open a session on success.

    Every outcome is recorded in the audit log and counted for throttling.
    """
    now = clock.now()
    key = normalize_login(login)[:254]
    user = session.scalar(select(User).where(User.login == key)) if key else None
    count_key = device_count_key(device, user)

    def refuse(refusal: LoginRefusal, user: User | None, retry: timedelta | None) -> LoginResult:
        session.add(LoginAttempt(login=key, ip=ip, at=now, succeeded=False, device=count_key))
        detail: dict[str, object] = {"reason": refusal.value}
        if count_key is not None:
            detail["known_device"] = True
        record_event(
            session,
            clock=clock,
            actor=Actor(
                user_id=user.id if user else None,
                label=key or "(empty)",
                role=user.role.value if user else None,
                ip=ip,
                user_agent=user_agent,
            ),
            action="login",
            outcome=AuditOutcome.FAILURE,
            detail=detail,
        )
        return LoginResult(user=None, session_token=None, refusal=refusal, retry_after=retry)

    # A device known to this login gets past its address's throttle: someone else spraying
    # passwords behind the same address (a clinic's network) must not lock the person out.
    if count_key is None:
        from_address = _recent_failures(session, since=now - THROTTLE_WINDOW, login=None, ip=ip)
        if from_address >= MAX_FAILURES_PER_IP:
            return refuse(LoginRefusal.IP_THROTTLED, None, THROTTLE_WINDOW)
    locked_for = _lock_remaining(session, now=now, login=key, device=count_key)
    if locked_for is not None:
        verify_password(password, None)  # same cost as a real check
        return refuse(LoginRefusal.LOCKED, user, locked_for)
    if user is None or not verify_password(password, user.password_hash):
        if user is None:
            verify_password(password, None)
        return refuse(LoginRefusal.BAD_CREDENTIALS, user, None)
    if not user.is_active:
        return refuse(LoginRefusal.INACTIVE, user, None)

    assert user.password_hash is not None
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    session.add(LoginAttempt(login=key, ip=ip, at=now, succeeded=True, device=count_key))
    user.last_login_at = now
    token = open_session(session, clock=clock, user=user, ip=ip, user_agent=user_agent)
    record_event(
        session,
        clock=clock,
        actor=Actor(user_id=user.id, label=key, role=user.role.value, ip=ip, user_agent=user_agent),
        action="login",
        outcome=AuditOutcome.SUCCESS,
    )
    return LoginResult(user=user, session_token=token, refusal=None)


def open_session(
    session: Session,
    *,
    clock: Clock,
    user: User,
    ip: str | None,
    user_agent: str | None,
    mfa_passed_at: datetime | None = None,
) -> str:
    """Start a login session for `user` and return the raw token for the cookie."""
    token = new_token()
    now = clock.now()
    session.add(
        LoginSession(
            token_hash=token_digest(token),
            user_id=user.id,
            created_at=now,
            last_seen_at=now,
            mfa_passed_at=mfa_passed_at,
            ip=ip,
            user_agent=(user_agent or "")[:200] or None,
        )
    )
    session.flush()
    return token


@dataclass(frozen=True)
class SessionTimeouts:
    idle: timedelta
    absolute: timedelta


def resume_session(
    session: Session, *, clock: Clock, token: str, timeouts: SessionTimeouts
) -> LoginSession | None:
    """The live login session for `token`, touched; None when unknown, ended or timed out."""
    now = clock.now()
    login_session = session.scalar(
        select(LoginSession)
        .where(LoginSession.token_hash == token_digest(token))
        .options(selectinload(LoginSession.user).selectinload(User.state_scopes))
    )
    if login_session is None or login_session.ended_at is not None:
        return None
    if (
        now - login_session.created_at > timeouts.absolute
        or now - login_session.last_seen_at > timeouts.idle
        or not login_session.user.is_active
    ):
        # Nothing to write: the same checks refuse this token on every later request.
        return None
    if now - login_session.last_seen_at >= LAST_SEEN_GRANULARITY:
        login_session.last_seen_at = now
        session.flush()
    return login_session


def end_session(session: Session, *, clock: Clock, login_session: LoginSession) -> None:
    """Log out: the token stops working everywhere at once."""
    login_session.ended_at = clock.now()
    session.flush()


def log_out(session: Session, *, clock: Clock, actor: Actor, login_session: LoginSession) -> None:
    """End the session (see `end_session`), recorded in the audit log."""
    end_session(session, clock=clock, login_session=login_session)
    record_event(session, clock=clock, actor=actor, action="logout")


def end_all_sessions(session: Session, *, clock: Clock, user_id: int) -> None:
    """End every live session of a user (password changed, account deactivated)."""
    now = clock.now()
    for login_session in session.scalars(
        select(LoginSession).where(LoginSession.user_id == user_id, LoginSession.ended_at.is_(None))
    ):
        login_session.ended_at = now
    session.flush()


# --- TOTP second factor ---------------------------------------------------------------


def start_totp_enrolment(session: Session, *, user: User) -> str:
    """Give the user a fresh, not yet confirmed TOTP secret and return it."""
    if user.totp_enabled_at is not None:
        raise ValueError("TOTP is already set up for this account")
    user.totp_secret = pyotp.random_base32()
    session.flush()
    return user.totp_secret


def totp_uri(user: User) -> str:
    assert user.totp_secret is not None
    return str(
        pyotp.TOTP(user.totp_secret).provisioning_uri(
            name=user.login or str(user.id), issuer_name=TOTP_ISSUER
        )
    )


def verify_totp(session: Session, *, clock: Clock, user: User, code: str) -> bool:
    """Accept a 6-digit code from the current, previous or next 30 s step, once only."""
    if user.totp_secret is None:
        return False
    cleaned = "".join(ch for ch in code if ch in "0123456789")
    if len(cleaned) != 6:
        return False
    totp = pyotp.TOTP(user.totp_secret)
    now = clock.now()
    step_now = totp.timecode(now)
    for offset in (0, -1, 1):
        step = step_now + offset
        if user.totp_last_step is not None and step <= user.totp_last_step:
            continue
        if pyotp.utils.strings_equal(totp.generate_otp(step), cleaned):
            user.totp_last_step = step
            if user.totp_enabled_at is None:
                user.totp_enabled_at = now
            session.flush()
            return True
    return False


def mark_mfa_passed(session: Session, *, clock: Clock, login_session: LoginSession) -> None:
    login_session.mfa_passed_at = clock.now()
    session.flush()


def pass_second_factor(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    login_session: LoginSession,
    code: str,
    device: KnownDevice | None,
) -> bool:
    """The second step of a login: True when `code` is right (the session may go on). A
    wrong code counts as a failed attempt for the login's lock on `device`; both are
    audited."""
    user = login_session.user
    if not verify_totp(session, clock=clock, user=user, code=code):
        record_failed_attempt(
            session,
            clock=clock,
            login=user.login or "",
            ip=actor.ip or "",
            user=user,
            device=device,
        )
        record_event(
            session, clock=clock, actor=actor, action="login.mfa", outcome=AuditOutcome.FAILURE
        )
        return False
    mark_mfa_passed(session, clock=clock, login_session=login_session)
    record_event(session, clock=clock, actor=actor, action="login.mfa")
    return True


def enable_second_factor(
    session: Session, *, clock: Clock, actor: Actor, login_session: LoginSession, code: str
) -> bool:
    """Confirm the authenticator app being set up with its first code: True when right (the
    second factor is on from now, and this session passed it; audited)."""
    if not verify_totp(session, clock=clock, user=login_session.user, code=code):
        return False
    mark_mfa_passed(session, clock=clock, login_session=login_session)
    record_event(session, clock=clock, actor=actor, action="account.mfa_enabled")
    return True


def skip_second_factor(
    session: Session, *, clock: Clock, actor: Actor, login_session: LoginSession
) -> None:
    """Let this session go on without a second factor (demo mode only: the caller checks),
    audited."""
    mark_mfa_passed(session, clock=clock, login_session=login_session)
    record_event(session, clock=clock, actor=actor, action="login.mfa_skip")


def change_password(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    login_session: LoginSession,
    current: str,
    new: str,
    new_again: str,
) -> str:
    """Change a logged-in user's password. Every other browser is logged out; this one
    gets a fresh session, whose token is returned. Raises FieldErrors naming the field."""
    user = login_session.user
    if not verify_password(current, user.password_hash):
        raise FieldErrors({"current": N_("Your current password is not right.")})
    if new != new_again:
        raise FieldErrors({"password_again": N_("The two passwords are not the same.")})
    try:
        check_new_password(new, login=user.login)
    except WeakPassword as problem:
        raise FieldErrors({"password": problem.args[0]}) from None
    user.password_hash = hash_password(new)
    end_all_sessions(session, clock=clock, user_id=user.id)
    token = open_session(
        session,
        clock=clock,
        user=user,
        ip=actor.ip,
        user_agent=actor.user_agent,
        mfa_passed_at=login_session.mfa_passed_at,
    )
    record_event(session, clock=clock, actor=actor, action="password.change")
    return token
