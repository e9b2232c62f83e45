"""The SMS gateway: a small provider interface, chosen by settings.

The console backend "sends" by writing a log line with the number masked; the outbox row
keeps the full message, so demo pages can show what would have been sent."""

from __future__ import annotations

import enum
import logging
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from core.phones import mask_phone
from core.settings import Settings, SettingsError

log = logging.getLogger("cgt_access.sms")


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str


class RecipientProblem(enum.StrEnum):
    """What a provider's refusal says about the number, in the platform's words: each
    provider maps its own codes to these, so the dispatcher knows no provider's codes."""

    OPTED_OUT = "opted_out"  # the person (or their carrier) opted out: record it as a STOP
    INVALID_NUMBER = "invalid_number"  # not a phone number that exists: flag it
    NOT_MOBILE = "not_mobile"  # a landline or a number that cannot take texts: flag it


class GatewayError(Exception):
    """The send failed. `permanent` errors are never retried. `outcome_unknown` ones (no
    answer after the request left: a timeout, a connection cut mid-way) may have reached
    the provider, so they are never resent blindly: the provider's log is asked first.
    `recipient_problem` says when the refusal is about the number itself; `code` is the
    provider's own code, kept for people reading the record."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        code: str | None = None,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        recipient_problem: RecipientProblem | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent or recipient_problem is not None
        self.code = code
        self.recipient_problem = recipient_problem
        # Seconds the provider asked us to wait (HTTP Retry-After), when it said so.
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown and not permanent


class SmsGateway(Protocol):
    name: str

    def send(self, *, to: str, body: str, reference: str) -> SendResult:
        """Hand one message to the provider; raise GatewayError when it refuses."""
        ...

    def find_sent(self, *, to: str, body: str, since: datetime) -> list[str]:
        """The provider's ids of the messages with this body sent to `to` since `since`,
        oldest first (settles sends left in doubt by a crash); GatewayError when the log is
        unreadable."""
        ...


class ConsoleGateway:
    """Sends nothing: logs that a message left (masked number, length, never the body)."""

    name = "console"

    def __init__(self) -> None:
        # What this process "sent" lately: the console's own message log.
        self._sent: deque[tuple[str, str, str]] = deque(maxlen=10_000)
        self._lock = threading.Lock()

    def find_sent(self, *, to: str, body: str, since: datetime) -> list[str]:
        with self._lock:
            return [sid for t, b, sid in self._sent if t == to and b == body]

    def send(self, *, to: str, body: str, reference: str) -> SendResult:
        message_id = f"CN{uuid.uuid4().hex}"
        with self._lock:
            self._sent.append((to, body, message_id))
        log.info(
            "console SMS %s to %s (%d chars) ref=%s",
            message_id,
            mask_phone(to),
            len(body),
            reference,
        )
        return SendResult(provider_message_id=message_id)


def make_gateway(settings: Settings) -> SmsGateway:
    """The gateway the settings ask for."""
    if settings.sms_backend == "console":
        return ConsoleGateway()
    if settings.sms_backend == "twilio":
        from coordination.texting.twilio_gateway import TwilioGateway

        return TwilioGateway(settings)
    raise SettingsError(f"SMS_BACKEND={settings.sms_backend} is not a known SMS backend.")
