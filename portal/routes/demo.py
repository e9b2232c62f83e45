"""Demo mode only: the console SMS gateway's outbox, so invitations work without Twilio."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from coordination.service import recent_messages
from portal.deps import ContextDep, PageNotFound, SessionDep
from portal.routes.pages import page_router
from portal.web import render

router = page_router()


@router.get("/demo/messages", name="demo_messages")
def console_messages(request: Request, session: SessionDep, context: ContextDep) -> Response:
    """What the console gateway 'sent'. Public in demo mode (the demo has fictional
    people only) so an invited patient can open their link; absent otherwise."""
    if not context.settings.demo_mode:
        raise PageNotFound()
    return render(
        request,
        "portal/demo_messages.html",
        {"messages": recent_messages(session, provider="console", limit=50)},
        block="messages",
    )
