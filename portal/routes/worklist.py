"""(being built)"""

from __future__ import annotations

from portal.routes.pages import page_router

router = page_router()
