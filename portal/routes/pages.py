"""What every page needs: the language, the logged-in user, the CSRF token, the navigation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request

from core.identity.access import Permission, role_allows
from core.identity.models import User
from core.text import N_
from portal import i18n
from portal.deps import (
    LANGUAGE_COOKIE,
    ContextDep,
    LoginDep,
    check_csrf,
    csrf_token_of,
    refuse_nul,
)


@dataclass(frozen=True)
class NavItem:
    href: str
    label: str
    permission: Permission


# Labels are msgids: the layout translates them.
NAV_ITEMS = (
    NavItem("/home", N_("Home"), Permission.PORTAL_HOME),
    # Staff open schedules from a patient's record; the menu item is for patients and caregivers.
    NavItem("/schedule", N_("Schedule"), Permission.PORTAL_HOME),
    NavItem("/worklist", N_("Worklist"), Permission.WORKLIST),
    NavItem("/patients", N_("Patients"), Permission.PATIENT_LIST),
    NavItem("/admin/users", N_("Users"), Permission.ADMIN_USERS),
    NavItem("/admin/states", N_("States"), Permission.ADMIN_STATES),
    NavItem("/admin/centers", N_("Centers"), Permission.ADMIN_CENTERS),
    NavItem("/admin/therapies", N_("Therapies"), Permission.ADMIN_THERAPIES),
    NavItem("/admin/travel", N_("Travel"), Permission.TRAVEL_POLICY),
    NavItem("/admin/fhir-clients", N_("FHIR clients"), Permission.FHIR_CLIENTS_MANAGE),
    NavItem("/admin/questionnaires", N_("Questionnaires"), Permission.QUESTIONNAIRES_MANAGE),
    NavItem("/reports/claims", N_("Claims"), Permission.CLAIMS_LOAD),
    NavItem("/admin/audit", N_("Audit log"), Permission.AUDIT_READ),
)


def nav_for(user: User | None) -> list[NavItem]:
    if user is None:
        return []
    return [item for item in NAV_ITEMS if role_allows(user, item.permission)]


def base_page_context(request: Request, user: User | None) -> dict[str, Any]:
    context = request.app.state.context
    seed = request.state.csrf_seed if hasattr(request.state, "csrf_seed") else ""
    return {
        "user": user,
        "nav": nav_for(user),
        "csrf_token": csrf_token_of(request, context.settings, seed),
        "language": i18n.current_language(),
        "languages": i18n.LANGUAGE_NAMES,
        "demo_mode": context.settings.demo_mode,
        "program_name": context.settings.program_name,
        "current_path": request.url.path,
    }


async def page_setup(request: Request, login: LoginDep, context: ContextDep) -> None:
    """Choose the language (account, then cookie, then browser) and the layout's values."""
    user = login.user if login else None
    language = (
        user.preferred_language
        if user is not None
        else i18n.parse_language(request.cookies.get(LANGUAGE_COOKIE))
        or i18n.negotiate(request.headers.get("accept-language"))
    )
    i18n.set_language(language)
    request.state.language = language
    request.state.page_context = base_page_context(request, user)


def page_router() -> APIRouter:
    """A router whose pages get the layout's values, refuse NUL characters and whose forms
    are CSRF-checked."""
    return APIRouter(dependencies=[Depends(page_setup), Depends(refuse_nul), Depends(check_csrf)])
