"""The SMS gateway: a small provider interface, chosen by settings.

The console backend "sends" by writing a log line with the number masked; the outbox row
keeps the full message, so demo pages can show what would have been sent."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Protocol

from core.phones import mask_phone
from core.settings import Settings, SettingsError

log = logging.getLogger("cgt_access.sms")


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str


class GatewayError(Exception):
    """The provider did not take the message. `permanent` errors are never retried."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code
        # Seconds the provider asked us to wait (HTTP Retry-After), when it said so.
        self.retry_after = retry_after


class SmsGateway(Protocol):
    name: str

    def send(self, *, to: str, body: str, reference: str) -> SendResult:
        """Hand one message to the provider; raise GatewayError when it refuses."""
        ...


class ConsoleGateway:
    """Sends nothing: logs that a message left (masked number, length, never the body)."""

    name = "console"

    def send(self, *, to: str, body: str, reference: str) -> SendResult:
        message_id = f"CN{uuid.uuid4().hex}"
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
        from coordination.twilio_gateway import TwilioGateway

        return TwilioGateway(settings)
    raise SettingsError(f"SMS_BACKEND={settings.sms_backend} is not a known SMS backend.")
