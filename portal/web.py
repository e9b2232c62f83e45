"""Rendering pages: one template per page; an htmx request gets only the block it targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from jinja2_fragments import render_block
from markupsafe import Markup

from coordination.travel.policy import dollars
from core.phones import display_phone
from portal import i18n
from portal.static import static_url
from portal.words import word, your_relation

TEMPLATE_DIRS = [Path(__file__).parent / "templates"]

environment = Environment(
    loader=FileSystemLoader([str(path) for path in TEMPLATE_DIRS]),
    autoescape=select_autoescape(["html"]),
    extensions=["jinja2.ext.i18n"],
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.install_gettext_callables(  # type: ignore[attr-defined]
    i18n.gettext, i18n.ngettext, newstyle=True
)
environment.filters["day"] = i18n.format_day
environment.filters["instant"] = i18n.format_instant
# Text the system wrote in English (history reasons): translated when the catalog knows it,
# shown as typed otherwise (people's own words), never %-formatted.
environment.filters["system_text"] = i18n.gettext
environment.globals["word"] = word
# Money is kept in integer cents (travel support); pages show dollars.
environment.filters["dollars"] = dollars
environment.globals["static_url"] = static_url
environment.globals["your_relation"] = your_relation


def phone_text(value: str | None) -> Markup:
    """A number as people write it, kept on one line (class "phone": `white-space:
    nowrap`), so that "(410) 555-" and "0100" never end up on two lines."""
    if not value:
        return Markup("")
    return Markup('<span class="phone">{}</span>').format(display_phone(value))


def phone_link(value: str | None) -> Markup:
    """A number people can call from the page: a `tel:` link (a phone dials it at a tap)
    that never breaks across lines (class "phone": `white-space: nowrap`)."""
    if not value:
        return Markup("")
    dial = "+" + "".join(ch for ch in value if ch in "0123456789")
    return Markup('<a class="phone" href="tel:{}">{}</a>').format(dial, display_phone(value))


environment.filters["phone"] = lambda value: display_phone(value) if value else ""
environment.filters["phone_nowrap"] = phone_text
environment.filters["tel"] = phone_link


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true" and not request.headers.get(
        "HX-History-Restore-Request"
    )


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    block: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The whole page, or only `block` when htmx asked for it (HX-Request)."""
    values: dict[str, Any] = (
        dict(request.state.page_context) if hasattr(request.state, "page_context") else {}
    )
    values.update(context or {})
    values["request"] = request
    if block is not None and is_htmx(request):
        html = render_block(environment, template, block, **values)
    else:
        html = environment.get_template(template).render(**values)
    return HTMLResponse(html, status_code=status_code, headers=headers)


def attachment(
    content: str, *, filename: str, media_type: str = "text/csv; charset=utf-8"
) -> Response:
    """A download: `content` saved by the browser as `filename` (an export's CSV, a FHIR
    resource)."""
    return Response(
        content,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def redirect(request: Request, url: str) -> Response:
    """A redirect after a form post; htmx gets HX-Redirect so it swaps the whole page."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def safe_next(url: str | None, default: str = "/") -> str:
    """Only a local path may be a redirect target (no open redirects)."""
    if not url:
        return default
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not url.startswith("/") or url.startswith("//"):
        return default
    return url
