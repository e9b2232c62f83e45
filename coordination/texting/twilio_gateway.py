"""The Twilio SMS backend, on the official `twilio` client.

`TWILIO_API_BASE` moves the client off `https://api.twilio.com` (tests point it at a loopback
double) through a custom http client. Errors become `GatewayError`s that say whether a retry can
help. Nothing here logs a message body or a full phone number."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from coordination.texting.gateway import GatewayError, RecipientProblem, SendResult
from core.phones import mask_phone
from core.settings import Settings

log = logging.getLogger("cgt_access.sms")

TWILIO_API_BASE = "https://api.twilio.com"
DEFAULT_TIMEOUT_SECONDS = 10.0
# Twilio errors that no retry can fix: the number is wrong, not a mobile, or opted out.
INVALID_NUMBER = "21211"
NOT_MOBILE = "21614"
OPTED_OUT = "21610"
# Twilio's codes for a refusal about the number itself.
RECIPIENT_PROBLEMS = {
    INVALID_NUMBER: RecipientProblem.INVALID_NUMBER,
    NOT_MOBILE: RecipientProblem.NOT_MOBILE,
    OPTED_OUT: RecipientProblem.OPTED_OUT,
}


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds (Twilio sends a number of seconds; an HTTP date is ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class RebasingHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """The stock requests-based client, sending to `api_base` instead of api.twilio.com.

    It logs only the method and path (never query strings, which carry phone numbers) and
    remembers, per thread, the Retry-After of the last answer (TwilioRestException drops it)."""

    def __init__(
        self, api_base: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS, pool_size: int = 16
    ) -> None:
        super().__init__(timeout=timeout, logger=logging.getLogger("cgt_access.sms.http"))
        self.api_base = api_base.rstrip("/")
        self._local = threading.local()
        if self.session is not None:
            # At least as many kept-alive connections as the dispatcher sends at once (the
            # loopback double of the tests is plain http).
            self.session.mount("https://", HTTPAdapter(pool_maxsize=pool_size))
            self.session.mount("http://", HTTPAdapter(pool_maxsize=pool_size))

    @property
    def last_retry_after(self) -> float | None:
        value: float | None = getattr(self._local, "retry_after", None)
        return value

    def rebase(self, url: str) -> str:
        if url.startswith(TWILIO_API_BASE):
            return self.api_base + url[len(TWILIO_API_BASE) :]
        return url

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        self._local.retry_after = None
        response: Response = super().request(
            method,
            self.rebase(url),
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
        if response.status_code >= 400:
            found = None
            for name, value in (response.headers or {}).items():
                if name.lower() == "retry-after":
                    found = value
            self._local.retry_after = _retry_after_seconds(found)
        return response

    def log_request(self, kwargs: dict[str, Any]) -> None:
        path = str(kwargs["url"]).split("?", 1)[0]
        self.logger.debug("twilio %s %s", kwargs["method"], path)

    def log_response(self, status_code: int, response: Any) -> None:
        self.logger.debug("twilio answered %s", status_code)


@dataclass(frozen=True)
class ProviderMessage:
    """One message as Twilio's message log knows it (for reconciling in-doubt sends)."""

    sid: str
    to: str
    status: str
    date_created: datetime | None
    date_sent: datetime | None
    error_code: int | None


class TwilioGateway:
    """Sends through Twilio's Messages API from a number or a messaging service."""

    name = "twilio"

    def __init__(self, settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if not settings.twilio_account_sid or settings.twilio_auth_token is None:
            raise ValueError("TwilioGateway needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        self.http_client = RebasingHttpClient(
            settings.twilio_api_base,
            timeout=timeout,
            pool_size=max(16, settings.dispatch_concurrency + 2),
        )
        self.client = Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            http_client=self.http_client,
        )
        self.from_number = settings.twilio_from_number
        self.messaging_service_sid = settings.twilio_messaging_service_sid
        self.status_callback = settings.public_base_url.rstrip("/") + "/sms/status"

    def send(self, *, to: str, body: str, reference: str) -> SendResult:
        sender: dict[str, str] = (
            {"from_": self.from_number}
            if self.from_number
            else {"messaging_service_sid": self.messaging_service_sid or ""}
        )
        try:
            message = self.client.messages.create(
                to=to, body=body, status_callback=self.status_callback, **sender
            )
        except Exception as error:
            failure = self._gateway_error(error)
            log.warning(
                "twilio refused SMS to %s ref=%s: code=%s permanent=%s",
                mask_phone(to),
                reference,
                failure.code,
                failure.permanent,
            )
            raise failure from None
        sid = str(message.sid)
        log.info("twilio SMS %s to %s (%d chars) ref=%s", sid, mask_phone(to), len(body), reference)
        return SendResult(provider_message_id=sid)

    def list_messages(self, to: str, sent_after: datetime) -> list[ProviderMessage]:
        """Messages Twilio holds for `to` sent after `sent_after` (all pages)."""
        if sent_after.tzinfo is not None:
            sent_after = sent_after.astimezone(UTC)
        try:
            found = self.client.messages.list(to=to, date_sent_after=sent_after)
        except Exception as error:
            raise self._gateway_error(error) from None
        return [
            ProviderMessage(
                sid=str(item.sid),
                to=str(item.to),
                status=str(item.status),
                date_created=item.date_created,
                date_sent=item.date_sent,
                error_code=item.error_code,
            )
            for item in found
        ]

    def find_sent(self, *, to: str, body: str, since: datetime) -> list[str]:
        """The sids of the messages with `body` Twilio took for `to` since `since`, oldest
        first (its log is read newest first, up to 100 messages back)."""
        if since.tzinfo is not None:
            since = since.astimezone(UTC)
        try:
            found = self.client.messages.list(to=to, limit=100, page_size=100)
        except Exception as error:
            raise self._gateway_error(error) from None
        matching = []
        for item in found:
            created = item.date_created
            if created is not None and created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            if item.body == body and (created is None or created >= since):
                matching.append(str(item.sid))
        return matching[::-1]

    def _gateway_error(self, error: Exception) -> GatewayError:
        """What a failure means for the dispatcher: permanent (never retry) or transient."""
        if isinstance(error, TwilioRestException | TwilioServiceException):
            status = int(error.status)
            code = str(error.code) if error.code is not None else str(status)
            if code in RECIPIENT_PROBLEMS:
                return GatewayError(
                    f"Twilio error {code}",
                    permanent=True,
                    code=code,
                    recipient_problem=RECIPIENT_PROBLEMS[code],
                )
            if status == 429:
                return GatewayError(
                    "Twilio is rate limiting (429)",
                    permanent=False,
                    code="429",
                    retry_after=self.http_client.last_retry_after,
                )
            if status >= 500:
                return GatewayError(
                    f"Twilio server error {status}",
                    permanent=False,
                    code="5xx",
                    retry_after=self.http_client.last_retry_after,
                )
            return GatewayError(f"Twilio error {code} (HTTP {status})", permanent=True, code=code)
        if _never_sent(error):
            return GatewayError(
                f"Cannot reach Twilio: {type(error).__name__}", permanent=False, code="network"
            )
        if isinstance(error, requests.Timeout):
            # The request left and no answer came: Twilio may have taken the message.
            return GatewayError(
                "Twilio did not answer in time",
                permanent=False,
                code="timeout",
                outcome_unknown=True,
            )
        if isinstance(error, requests.RequestException):
            # The connection broke after it was made: the request may have been carried out.
            return GatewayError(
                f"The connection to Twilio broke: {type(error).__name__}",
                permanent=False,
                code="network",
                outcome_unknown=True,
            )
        if isinstance(error, TwilioException):
            return GatewayError(
                f"Twilio client error: {type(error).__name__}", permanent=False, code="unknown"
            )
        raise error


def _never_sent(error: Exception) -> bool:
    """True when the request surely never reached Twilio: no connection could be made."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    if not isinstance(error, requests.ConnectionError) or isinstance(error, requests.Timeout):
        return False
    cause = error.args[0] if error.args else None
    return isinstance(cause, MaxRetryError) and isinstance(
        cause.reason, NewConnectionError | ConnectTimeoutError
    )
