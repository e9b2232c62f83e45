"""The Twilio backend: the real `twilio` client talking to the loopback double of Twilio's API."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
from twilio.request_validator import RequestValidator

from coordination.texting.gateway import GatewayError, make_gateway
from coordination.texting.twilio_gateway import TwilioGateway
from core.settings import Settings, load_settings
from tests.doubles.twilio_api import TwilioApiDouble, num_segments

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "t" * 32
FROM = "+12025550100"
TO = "+12025550123"
BODY = "Maya, your follow-up visit is on Dec 3. Reply C to confirm, R to move it."


def _settings(api_base: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": "sqlite://",
        "secret_key": "x" * 40,
        "sms_backend": "twilio",
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_from_number": FROM,
        "twilio_api_base": api_base,
        "public_base_url": "http://127.0.0.1:9",
        **overrides,
    }
    return load_settings(**values)


@pytest.fixture
def double() -> Iterator[TwilioApiDouble]:
    with TwilioApiDouble(ACCOUNT_SID, AUTH_TOKEN, lifetime=60) as running:
        yield running


@pytest.fixture
def gateway(double: TwilioApiDouble) -> TwilioGateway:
    return TwilioGateway(_settings(double.url), timeout=2.0)


def _refusal(gateway: TwilioGateway) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        gateway.send(to=TO, body=BODY, reference="outbox-1")
    return caught.value


def test_settings_choose_the_twilio_gateway(double: TwilioApiDouble) -> None:
    chosen = make_gateway(_settings(double.url))
    assert isinstance(chosen, TwilioGateway)
    assert chosen.name == "twilio"


def test_send_stores_the_message_and_returns_its_sid(
    double: TwilioApiDouble, gateway: TwilioGateway
) -> None:
    result = gateway.send(to=TO, body=BODY, reference="outbox-1")

    [stored] = double.messages
    assert result.provider_message_id == stored.sid
    assert stored.sid.startswith("SM") and len(stored.sid) == 34
    assert (stored.to, stored.from_, stored.body) == (TO, FROM, BODY)
    assert stored.messaging_service_sid is None
    assert stored.status_callback == "http://127.0.0.1:9/sms/status"
    assert stored.status == "queued"


def test_send_through_a_messaging_service(double: TwilioApiDouble) -> None:
    service = "MG" + "1" * 32
    gateway = TwilioGateway(
        _settings(double.url, twilio_from_number=None, twilio_messaging_service_sid=service)
    )
    gateway.send(to=TO, body=BODY, reference="outbox-2")

    [stored] = double.messages
    assert stored.from_ is None
    assert stored.messaging_service_sid == service


def test_wrong_credentials_are_a_permanent_refusal(double: TwilioApiDouble) -> None:
    gateway = TwilioGateway(_settings(double.url, twilio_auth_token="wrong" * 8))
    refusal = _refusal(gateway)
    assert refusal.permanent and refusal.code == "20003"
    assert double.messages == []


@pytest.mark.parametrize("code", [21211, 21614, 21610])
def test_number_errors_are_permanent(
    double: TwilioApiDouble, gateway: TwilioGateway, code: int
) -> None:
    double.reject_next(code)
    refusal = _refusal(gateway)
    assert refusal.permanent
    assert refusal.code == str(code)
    assert double.messages == []


def test_an_opted_out_number_answers_21610(double: TwilioApiDouble, gateway: TwilioGateway) -> None:
    double.opt_out(TO)
    refusal = _refusal(gateway)
    assert (refusal.permanent, refusal.code) == (True, "21610")


def test_a_server_error_is_transient_and_the_next_try_goes_through(
    double: TwilioApiDouble, gateway: TwilioGateway
) -> None:
    double.fail_next(1)
    refusal = _refusal(gateway)
    assert (refusal.permanent, refusal.code) == (False, "5xx")
    assert refusal.retry_after is None

    gateway.send(to=TO, body=BODY, reference="outbox-1")
    assert len(double.messages) == 1


def test_rate_limiting_is_transient_and_carries_retry_after(
    double: TwilioApiDouble, gateway: TwilioGateway
) -> None:
    double.rate_limit_next(retry_after=7)
    refusal = _refusal(gateway)
    assert (refusal.permanent, refusal.code) == (False, "429")
    assert refusal.retry_after == 7.0


def test_a_slow_answer_is_a_transient_timeout_and_the_message_is_in_twilios_log(
    double: TwilioApiDouble,
) -> None:
    gateway = TwilioGateway(_settings(double.url), timeout=0.2)
    double.delay_next(0.6)
    started = time.monotonic()
    refusal = _refusal(gateway)
    assert time.monotonic() - started < 0.55
    assert (refusal.permanent, refusal.code) == (False, "timeout")

    # Twilio took it anyway: the in-doubt send shows up in the message log.
    deadline = time.monotonic() + 3
    while not double.messages and time.monotonic() < deadline:
        time.sleep(0.02)
    [found] = gateway.list_messages(TO, datetime.now(UTC) - timedelta(minutes=5))
    assert found.sid == double.messages[0].sid


def test_an_unreachable_api_is_a_transient_network_error() -> None:
    with socket_that_refuses() as url:
        refusal = _refusal(TwilioGateway(_settings(url), timeout=1.0))
    assert (refusal.permanent, refusal.code) == (False, "network")


def test_list_by_recipient_and_date_across_pages() -> None:
    moments = iter(
        [datetime(2026, 11, 20, 12, tzinfo=UTC)]
        + [datetime(2026, 11, 27, 15, minute, tzinfo=UTC) for minute in range(60)]
    )
    with TwilioApiDouble(ACCOUNT_SID, AUTH_TOKEN, clock=lambda: next(moments)) as double:
        gateway = TwilioGateway(_settings(double.url))
        old = gateway.send(to=TO, body=BODY, reference="old")
        recent = [gateway.send(to=TO, body=BODY, reference=f"r{i}") for i in range(55)]
        gateway.send(to="+12025550199", body=BODY, reference="other")

        found = gateway.list_messages(TO, datetime(2026, 11, 27, 10, tzinfo=UTC))
        # 55 of them: more than the 50 of a default page, so the client followed next_page_uri.
        assert {m.sid for m in found} == {r.provider_message_id for r in recent}
        assert old.provider_message_id not in {m.sid for m in found}
        assert all(m.to == TO and m.status == "queued" for m in found)
        assert found[0].date_sent == datetime(2026, 11, 27, 15, 54, tzinfo=UTC)  # newest first

        # An aware time in another zone means the same instant (10:30 EST is 15:30 UTC).
        eastern = datetime(2026, 11, 27, 10, 30, tzinfo=ZoneInfo("America/New_York"))
        assert len(gateway.list_messages(TO, eastern)) == 25


def test_fetch_a_message_by_sid(double: TwilioApiDouble, gateway: TwilioGateway) -> None:
    sid = gateway.send(to=TO, body=BODY, reference="outbox-1").provider_message_id
    fetched = gateway.client.messages(sid).fetch()
    assert (fetched.sid, fetched.to, fetched.from_, fetched.body) == (sid, TO, FROM, BODY)
    assert fetched.num_segments == "1"


def test_segments_follow_gsm7_and_ucs2() -> None:
    assert num_segments("a" * 160) == 1
    assert num_segments("a" * 161) == 2
    assert num_segments("ñ" * 160) == 1  # in the GSM-7 set
    assert num_segments("ó" * 70) == 1  # not in it: UCS-2
    assert num_segments("ó" * 71) == 2


def test_the_signed_status_callback_verifies(double: TwilioApiDouble) -> None:
    with callback_receiver() as (url, received):
        sid = (
            TwilioGateway(_settings(double.url, public_base_url=url))
            .send(to=TO, body=BODY, reference="outbox-1")
            .provider_message_id
        )
        response = double.send_status_callback(sid, "undelivered", error_code=30003)

    assert response.status_code == 204
    [(path, params, signature)] = received
    assert path == "/sms/status"
    assert params["MessageSid"] == sid
    assert params["MessageStatus"] == "undelivered"
    assert params["ErrorCode"] == "30003"
    assert params["To"] == TO and params["AccountSid"] == ACCOUNT_SID
    validator = RequestValidator(AUTH_TOKEN)
    assert validator.validate(url + "/sms/status", params, signature)
    assert not RequestValidator("f" * 32).validate(url + "/sms/status", params, signature)
    assert not validator.validate(
        url + "/sms/status", {**params, "MessageStatus": "delivered"}, signature
    )
    assert double.message(sid).status == "undelivered"


def test_the_gateway_never_logs_the_body_or_the_full_number(
    double: TwilioApiDouble, gateway: TwilioGateway, caplog: pytest.LogCaptureFixture
) -> None:
    # Everything at INFO (a production level), and our own loggers down to DEBUG. (urllib3's
    # DEBUG lines carry request URLs with query strings; production never runs it at DEBUG.)
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="cgt_access")
    caplog.set_level(logging.DEBUG, logger="twilio")
    gateway.send(to=TO, body=BODY, reference="outbox-1")
    double.reject_next(21211)
    _refusal(gateway)
    double.fail_next(1)
    _refusal(gateway)
    gateway.list_messages(TO, datetime.now(UTC) - timedelta(hours=1))

    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "outbox-1" in text  # it did log
    assert "2025550123" not in text
    assert "Reply C" not in text and "follow-up visit" not in text


# -- small helpers ----------------------------------------------------------------------------


class socket_that_refuses:  # noqa: N801 - used like a function
    """A loopback URL on which nothing listens (the port was free a moment ago)."""

    def __enter__(self) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        port = server.server_address[1]
        server.server_close()
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *args: object) -> None:
        return None


class callback_receiver:  # noqa: N801 - used like a function
    """A loopback web server that records form posts (path, params, X-Twilio-Signature)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], str]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                received.append(
                    (
                        self.path,
                        {k: v[-1] for k, v in form.items()},
                        self.headers.get("X-Twilio-Signature", ""),
                    )
                )
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> tuple[str, list[tuple[str, dict[str, str], str]]]:
        self.thread.start()
        port = self.server.server_address[1]
        return f"http://127.0.0.1:{port}", self.received

    def __exit__(self, *args: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
