"""The application factory: `create_app()` wires settings, database, clock, gateway,
middleware, error pages, the rooms' routes and the scheduler."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from coordination.followup.protocol import shipped_protocols
from coordination.texting.gateway import SmsGateway, make_gateway
from core.audit.models import AuditOutcome
from core.audit.service import record_event
from core.clock import Clock, SystemClock
from core.db import make_engine, make_session_factory, transaction
from core.settings import Settings, get_settings
from core.text import N_
from fhir_adapter import routes as fhir_routes
from fhir_adapter.error_handlers import (
    fhir_error_response,
    install_fhir_error_handler,
    is_fhir_request,
)
from portal import i18n
from portal.context import AppContext
from portal.deps import (
    CSRF_COOKIE,
    LANGUAGE_COOKIE,
    CsrfRejected,
    Forbidden,
    LoginRequired,
    PageNotFound,
    RecordRefused,
    SecondFactorRequired,
    cookie_name,
)
from portal.middleware import SecurityMiddleware, loggable_path
from portal.static import STATIC_DIR, static_app
from portal.web import redirect, render
from reporting.agreements import shipped_agreements
from reporting.code_lists import shipped_code_lists

log = logging.getLogger("cgt_access")


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    factory: sessionmaker[Session] | None = None,
    gateway: SmsGateway | None = None,
    run_scheduler: bool | None = None,
) -> FastAPI:
    """Build the platform. Tests pass their own settings, clock, session factory, gateway."""
    settings = settings or get_settings()
    # A broken protocol, agreement or claims code list stops the start with its file, line
    # and problem.
    shipped_protocols()
    shipped_agreements()
    shipped_code_lists()
    if factory is None:
        factory = make_session_factory(make_engine(settings.database_url))
    engine = factory.kw["bind"]
    context = AppContext(
        settings=settings,
        engine=engine,
        factory=factory,
        clock=clock or SystemClock(),
        gateway=gateway or make_gateway(settings),
    )
    with_scheduler = settings.run_scheduler if run_scheduler is None else run_scheduler

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        scheduler = None
        if with_scheduler:
            from portal.scheduler import start_scheduler

            scheduler = start_scheduler(context, blocking=False)
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=False)

    app = FastAPI(
        title="cgt-access",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.context = context
    app.add_middleware(
        SecurityMiddleware,
        hsts=settings.uses_tls,
        secure_cookies=settings.uses_tls,
        csrf_cookie=cookie_name(settings, CSRF_COOKIE),
    )
    # Versioned, long-cached and gzipped (portal/static.py); pages stay uncompressed.
    app.mount("/static", static_app(STATIC_DIR), name="static")
    _install_error_pages(app)

    from fhir_adapter import auth_routes as fhir_auth_routes
    from fhir_adapter.bearer import install_fhir_auth
    from portal.routes import (
        account,
        admin,
        admin_fhir_clients,
        admin_places,
        admin_therapies,
        admin_travel,
        auth,
        caregivers,
        demo,
        education,
        education_staff,
        health,
        home,
        inbox,
        patients,
        questionnaires,
        questionnaires_admin,
        questionnaires_staff,
        reports,
        reports_claims,
        reports_outcomes,
        reports_program,
        reports_rebates,
        reports_support,
        schedule,
        sms,
        texts,
        travel,
        travel_staff,
        visits,
        worklist,
    )

    app.include_router(health.router)
    app.include_router(fhir_routes.router)
    for module in (
        auth,
        home,
        account,
        schedule,
        reports,
        reports_claims,
        reports_outcomes,
        reports_program,
        reports_rebates,
        reports_support,
        worklist,
        inbox,
        patients,
        texts,
        caregivers,
        visits,
        education,
        education_staff,
        travel,
        travel_staff,
        admin,
        admin_travel,
        admin_places,
        admin_therapies,
        admin_fhir_clients,
        questionnaires,
        questionnaires_admin,
        questionnaires_staff,
        demo,
        sms,
    ):
        app.include_router(module.router)
    # The machine-facing side: SMART token endpoint and discovery, FHIR auth refusals.
    app.include_router(fhir_auth_routes.router)
    install_fhir_auth(app)
    return app


def _error_language(request: Request) -> None:
    # The request's session may be rolled back by now: use what page_setup chose, not the user.
    language = getattr(request.state, "language", None) or (
        i18n.parse_language(request.cookies.get(LANGUAGE_COOKIE))
        or i18n.negotiate(request.headers.get("accept-language"))
    )
    i18n.set_language(language)


def _error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    _error_language(request)
    from portal.routes.pages import base_page_context

    # A fresh layout context without the user object (it may be detached after a rollback).
    request.state.page_context = base_page_context(request, None)
    return render(
        request,
        "portal/error.html",
        {"title": i18n.gettext(title), "message": i18n.gettext(message), "status": status_code},
        block="content",
        status_code=status_code,
    )


def _audit_refusal(request: Request, refused: RecordRefused) -> None:
    """Write the denied attempt in a transaction of its own: the request's transaction was
    rolled back with the refusal, and the attempt must stay on record anyway."""
    context: AppContext = request.app.state.context
    try:
        with transaction(context.factory) as session:
            record_event(
                session,
                clock=context.clock,
                actor=refused.actor,
                action="patient.access",
                outcome=AuditOutcome.DENIED,
                patient_id=refused.patient_id,
                target=refused.route,
                detail=refused.detail,
            )
    except Exception:
        # The person still gets their 404; the failure (no patient data) goes to the log.
        log.exception("could not audit a refused record access on %s", request.method)


def _install_error_pages(app: FastAPI) -> None:
    # FHIR clients get OperationOutcomes, never these pages: the handlers shared with the
    # pages (validation, HTTP errors, crashes) hand FHIR requests over first.
    install_fhir_error_handler(app)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired) -> Response:
        from urllib.parse import quote

        target = request.url.path if request.method == "GET" else "/"
        return redirect(request, f"/login?next={quote(target)}")

    @app.exception_handler(SecondFactorRequired)
    async def second_factor(request: Request, exc: SecondFactorRequired) -> Response:
        return redirect(request, "/login/mfa" if exc.enrolled else "/account/mfa")

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, _exc: Forbidden) -> Response:
        return _error_page(
            request, 403, N_("Not allowed"), N_("Your account does not give access to this page.")
        )

    @app.exception_handler(PageNotFound)
    async def not_found(request: Request, exc: PageNotFound) -> Response:
        if isinstance(exc, RecordRefused):
            await run_in_threadpool(_audit_refusal, request, exc)  # database I/O off the loop
        return _error_page(
            request,
            404,
            N_("Page not found"),
            N_("This page does not exist, or it is not yours to see."),
        )

    @app.exception_handler(CsrfRejected)
    async def csrf_rejected(request: Request, _exc: CsrfRejected) -> Response:
        return _error_page(
            request,
            403,
            N_("This form has expired"),
            N_(
                "For your safety the form could not be sent. "
                "Go back, reload the page and try again."
            ),
        )

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        if is_fhir_request(request):
            return fhir_error_response(request, exc)
        return _error_page(
            request,
            400,
            N_("Something in this request is not right"),
            N_(
                "The address or the form had a value we could not understand. "
                "Go back and try again."
            ),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_fhir_request(request):
            return fhir_error_response(request, exc)
        if exc.status_code == 404:
            return await not_found(request, PageNotFound())
        if exc.status_code == 405:
            return _error_page(
                request, 405, N_("Not possible here"), N_("This page cannot be used that way.")
            )
        return _error_page(request, exc.status_code, N_("Something went wrong"), str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        if is_fhir_request(request):
            return fhir_error_response(request, exc)
        # The traceback goes to the log; the person gets a calm page and nothing is half-saved
        # (the request's transaction was rolled back).
        log.exception("unhandled error on %s %s", request.method, loggable_path(request.url.path))
        return _error_page(
            request,
            500,
            N_("Something went wrong"),
            N_(
                "Nothing was changed. Please try again; if it happens again, tell your coordinator."
            ),
        )
