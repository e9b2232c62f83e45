"""Shared pieces of the SMS tests that talk to the loopback Twilio double: credentials,
settings for the real Twilio gateway, outbox rows made in bulk, and what the double holds."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from coordination.texting.models import MessagePurpose, MessageStatus, OutboundMessage
from core.db import transaction
from core.settings import Settings, load_settings
from tests.doubles.twilio_api import TwilioApiDouble

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "t" * 32
FROM = "+12025550100"
SECRET = "test-secret-key-for-the-suite-only-0123456789"
# What the app calls itself (TestClient's host): callbacks are signed over this URL.
PUBLIC_BASE_URL = "http://testserver"


def twilio_values(database_url: str, api_base: str) -> dict[str, Any]:
    """The settings of an app that texts through Twilio at `api_base`."""
    return {
        "database_url": database_url,
        "secret_key": SECRET,
        "demo_mode": False,
        "run_scheduler": False,
        "public_base_url": PUBLIC_BASE_URL,
        "sms_backend": "twilio",
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_from_number": FROM,
        "twilio_api_base": api_base,
    }


def twilio_settings(database_url: str, api_base: str, **overrides: Any) -> Settings:
    return load_settings(**(twilio_values(database_url, api_base) | overrides))


def worker_env(database_url: str, api_base: str, **extra: str) -> dict[str, str]:
    """The environment of a worker process with the same settings."""
    values = twilio_values(database_url, api_base)
    env = {
        name.upper(): str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in values.items()
    }
    return env | extra


def phone(index: int) -> str:
    """A test number in the 555-01xx range (100 of them, reused round the clock)."""
    return f"+1202555{100 + index % 100:04d}"


def queue_invitations(
    factory: sessionmaker[Session], *, count: int, send_after: datetime, tag: str = "m"
) -> list[int]:
    """`count` due texts with a body of their own each (so the double's log tells which
    row each message came from), spread over 100 numbers. Invitations: not bound by
    consent or caps, like a text someone asked for."""
    rows = [
        {
            "to_phone": phone(i),
            "body": f"Your CGT Access invitation {tag}-{i:05d}: open the link we emailed.",
            "purpose": MessagePurpose.INVITATION,
            "status": MessageStatus.QUEUED,
            "created_at": send_after,
            "send_after": send_after,
            "attempts": 0,
        }
        for i in range(count)
    ]
    with transaction(factory) as session:
        for start in range(0, len(rows), 1000):
            session.execute(insert(OutboundMessage), rows[start : start + 1000])
        return list(session.scalars(select(OutboundMessage.id).order_by(OutboundMessage.id)))


def bodies_at(double: TwilioApiDouble) -> Counter[tuple[str, str]]:
    """How many times the double took each (recipient, body)."""
    return Counter((message.to, message.body) for message in double.messages)


def statuses(factory: sessionmaker[Session]) -> dict[MessageStatus, int]:
    with factory() as session:
        counts = session.execute(
            select(OutboundMessage.status, func.count()).group_by(OutboundMessage.status)
        )
        return dict(counts.all())
