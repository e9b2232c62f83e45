"""What the application holds for its lifetime: settings, database, clock, SMS gateway."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from coordination.texting.dispatcher import dispatch_due
from coordination.texting.gateway import SmsGateway
from core.clock import Clock
from core.identity.auth import SessionTimeouts
from core.settings import Settings

log = logging.getLogger("cgt_access")


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    clock: Clock
    gateway: SmsGateway

    def wake_dispatcher(self) -> None:
        """Send due messages now (called after a commit that queued one). A failure here
        is logged and left to the dispatcher job: the rows stay queued in the outbox."""
        try:
            # One batch: the request that queued a text should not carry the whole backlog.
            dispatch_due(self.factory, gateway=self.gateway, clock=self.clock, max_batches=1)
        except Exception:
            log.exception("immediate dispatch failed; the dispatcher job will retry")

    @property
    def timeouts(self) -> SessionTimeouts:
        return SessionTimeouts(
            idle=timedelta(minutes=self.settings.session_idle_minutes),
            absolute=timedelta(hours=self.settings.session_absolute_hours),
        )
