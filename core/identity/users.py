"""Staff accounts, kept by admins: create, scope to states, deactivate."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, selectinload

from core.audit.models import AuditOutcome
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.errors import FieldErrors
from core.identity.auth import end_all_sessions, normalize_login
from core.identity.invitations import IssuedInvitation, issue_invitation
from core.identity.models import InvitationDelivery, Role, User, UserStateScope
from core.ids import parse_id
from core.models import Language, State, TreatmentCenter
from core.text import N_

STAFF_ROLES = (Role.COORDINATOR, Role.STATE_ANALYST, Role.ADMIN)
NOT_STAFF = N_("Patient and caregiver accounts are managed from their record.")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def list_users(
    session: Session, *, text: str | None, role: Role | None, page: int, per_page: int = 50
) -> tuple[list[User], int]:
    """Users matching a name/login search and a role, with the total count."""
    query = select(User)
    if text and text.strip():
        pattern = f"%{text.strip().lower()}%"
        query = query.where(
            or_(func.lower(User.login).like(pattern), func.lower(User.display_name).like(pattern))
        )
    if role is not None:
        query = query.where(User.role == role)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.options(selectinload(User.state_scopes).selectinload(UserStateScope.state))
        .order_by(User.role, User.display_name, User.id)
        .limit(per_page)
        .offset(max(page - 1, 0) * per_page)
    ).all()
    return list(rows), total


@dataclass
class StaffInput:
    login: str = ""
    display_name: str = ""
    role: str = Role.COORDINATOR.value
    state_ids: list[str] = field(default_factory=list)
    center_id: str = ""


def _clean_staff(
    session: Session, *, data: StaffInput, user: User | None
) -> tuple[str, str, Role, list[State], TreatmentCenter | None]:
    errors: dict[str, str] = {}
    login = normalize_login(data.login)
    if not _EMAIL.match(login) or len(login) > 254:
        errors["login"] = N_("Staff log in with their work email address.")
    elif session.scalar(
        select(User.id).where(User.login == login, User.id != (user.id if user else -1))
    ):
        errors["login"] = N_("Another account has this email address.")
    name = data.display_name.strip()
    if not name or len(name) > 160:
        errors["display_name"] = N_("Enter the person's name.")
    try:
        role = Role(data.role)
        if role not in STAFF_ROLES:
            raise ValueError(role)
    except ValueError:
        errors["role"] = N_("Choose coordinator, state analyst or admin.")
        role = Role.COORDINATOR
    ids = {state_id for value in data.state_ids if (state_id := parse_id(value)) is not None}
    states = list(session.scalars(select(State).where(State.id.in_(ids)))) if ids else []
    if role in (Role.COORDINATOR, Role.STATE_ANALYST) and not states:
        errors["state_ids"] = N_("Choose at least one state this person works for.")
    center: TreatmentCenter | None = None
    if data.center_id.strip():
        center_id = parse_id(data.center_id)
        center = session.get(TreatmentCenter, center_id) if center_id is not None else None
        if center is None or role is not Role.COORDINATOR:
            errors["center_id"] = N_("Only a coordinator can be limited to one center.")
        elif center.state_id not in {state.id for state in states}:
            errors["center_id"] = N_("The center must be in one of the chosen states.")
    if errors:
        raise FieldErrors(errors)
    return login, name, role, states, center


def save_staff_user(
    session: Session, *, clock: Clock, actor: Actor, data: StaffInput, user: User | None
) -> User:
    """Create a staff account (no password yet: an invitation sets it) or change one."""
    login, name, role, states, center = _clean_staff(session, data=data, user=user)
    if user is None:
        user = User(
            role=role,
            display_name=name,
            login=login,
            email=login,
            preferred_language=Language.EN,
            is_active=True,
            created_at=clock.now(),
        )
        session.add(user)
    elif not user.role.is_staff:
        raise FieldErrors({"role": NOT_STAFF})
    before = {"role": user.role.value if user.role else None, "states": sorted(user.state_ids)}
    user.login, user.email, user.display_name, user.role = login, login, name, role
    user.center_id = center.id if center else None
    user.state_scopes = [UserStateScope(state_id=state.id) for state in states]
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="admin.user.save",
        target=f"user:{user.id}",
        detail={"before": before, "after": {"role": role.value, "states": sorted(user.state_ids)}},
    )
    return user


def set_user_active(
    session: Session, *, clock: Clock, actor: Actor, user: User, active: bool
) -> None:
    """Open or close an account; closing ends its sessions at once."""
    if user.id == actor.user_id and not active:
        raise FieldErrors({"": N_("You cannot deactivate your own account.")})
    user.is_active = active
    if not active:
        end_all_sessions(session, clock=clock, user_id=user.id)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="admin.user.activate" if active else "admin.user.deactivate",
        target=f"user:{user.id}",
        patient_id=user.patient_id,
    )


def reset_second_factor(session: Session, *, clock: Clock, actor: Actor, user: User) -> None:
    """Forget a staff user's authenticator (lost phone); they set up a new one at next login."""
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    end_all_sessions(session, clock=clock, user_id=user.id)
    session.flush()
    record_event(
        session, clock=clock, actor=actor, action="admin.user.mfa_reset", target=f"user:{user.id}"
    )


def issue_staff_password_link(
    session: Session, *, clock: Clock, actor: Actor, user: User, valid_for: timedelta
) -> IssuedInvitation:
    """A new set-password link for a staff account (earlier links stop working), to be
    shown once to the admin.

    A patient's or caregiver's account is refused (FieldErrors): a link made here would let
    whoever holds it take the account over. Their invitations go from the patient's record
    to their own phone or on paper. The refused attempt is audited, once for each patient
    whose record the account opens."""
    if not user.role.is_staff:
        if user.patient_id is not None:
            patient_ids: list[int | None] = [user.patient_id]
        elif user.caregiver is not None and user.caregiver.links:
            patient_ids = [link.patient_id for link in user.caregiver.links]
            patient_ids.sort()
        else:
            patient_ids = [None]
        for patient_id in patient_ids:
            record_event(
                session,
                clock=clock,
                actor=actor,
                action="admin.user.set_password_link",
                outcome=AuditOutcome.DENIED,
                patient_id=patient_id,
                target=f"user:{user.id}",
                detail={"role": user.role.value},
            )
        raise FieldErrors({"": NOT_STAFF})
    return issue_invitation(
        session,
        clock=clock,
        actor=actor,
        user=user,
        delivery=InvitationDelivery.PRINT,
        valid_for=valid_for,
        patient_id=None,
    )
