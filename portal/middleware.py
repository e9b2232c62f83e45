"""ASGI middleware: security headers, the CSRF cookie, and an access log without query
strings or secrets (URLs may carry search terms; invitation links carry tokens)."""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("cgt_access.access")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)
_SECRET_SEGMENTS = re.compile(r"/(invite|calendar)/[^/]+")
# The treatment centers' systems' endpoints: no browser there, so no CSRF cookie to hand
# out (CSRF checks apply only to the portal's page routes, see portal.routes.pages).
_MACHINE_PATHS = ("/auth/", "/fhir", "/.well-known/")


def loggable_path(path: str) -> str:
    return _SECRET_SEGMENTS.sub(lambda match: f"/{match.group(1)}/…", path)


class SecurityMiddleware:
    """Adds the security headers to every response and a CSRF seed cookie when missing
    (named `csrf_cookie`: `__Host-` prefixed behind TLS, see `portal.deps.cookie_name`)."""

    def __init__(self, app: ASGIApp, *, hsts: bool, secure_cookies: bool, csrf_cookie: str) -> None:
        self.app = app
        self.hsts = hsts
        self.secure_cookies = secure_cookies
        self.csrf_cookie = csrf_cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        seed = HTTPConnection(scope).cookies.get(self.csrf_cookie)
        new_seed = None
        machine = scope["path"].startswith(_MACHINE_PATHS)
        if (not seed or len(seed) > 128) and not machine:
            new_seed = seed = secrets.token_urlsafe(32)
        state["csrf_seed"] = seed or ""
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault(
                    "Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"
                )
                headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
                if self.hsts:
                    headers.setdefault(
                        "Strict-Transport-Security", "max-age=63072000; includeSubDomains"
                    )
                if not scope["path"].startswith("/static/"):
                    headers.setdefault("Cache-Control", "no-store")
                if new_seed is not None:
                    cookie = f"{self.csrf_cookie}={new_seed}; Path=/; HttpOnly; SameSite=Lax"
                    if self.secure_cookies:
                        cookie += "; Secure"
                    headers.append("Set-Cookie", cookie)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if not scope["path"].startswith("/static/") and scope["path"] != "/healthz":
                log.info(
                    "%s %s %s %.1fms",
                    scope["method"],
                    loggable_path(scope["path"]),
                    status,
                    (time.perf_counter() - started) * 1000,
                )
