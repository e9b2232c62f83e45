"""A loopback double of Twilio's Messages REST API, for the real `twilio` client.

    with TwilioApiDouble(account_sid, auth_token) as double:
        settings = load_settings(..., twilio_api_base=double.url)
        double.fail_next(2)                 # the next two requests answer 500
        double.rate_limit_next(retry_after=7)
        double.reject_next(21211)           # a Twilio error JSON, HTTP 400
        double.delay_next(3.0)              # answers (and stores the message) after 3 s
        double.cut_next()                   # stores the message, then hangs up unanswered
        double.latency = 0.02               # every request takes 20 ms (a slower Twilio)
        double.send_status_callback(sid, "delivered")

It speaks what our gateway uses: create a message (form-encoded, basic auth), fetch one, list
with `To` and `DateSent>` filters and Twilio's paging fields; it records what it received and
signs delivery-status callbacks like Twilio (`X-Twilio-Signature`). The server runs on
127.0.0.1 on a free port and stops itself after `lifetime` seconds at the latest.

A delayed request is still carried out once the delay is over, as when Twilio took a message
but the answer was lost: exactly the in-doubt case the dispatcher reconciles. A request whose
body did not fully arrive (its sender died mid-way) is never carried out, as with a real
server."""

from __future__ import annotations

import base64
import hmac
import json
import re
import secrets
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
_MESSAGES = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
_MESSAGE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$")
# GSM 03.38 basic set; the extension characters cost two septets.
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\f")
_ERROR_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    21211: "The 'To' number is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
}


def num_segments(body: str) -> int:
    """How many SMS segments Twilio bills for `body` (GSM-7 160/153, else UCS-2 70/67)."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in body):
        units = sum(2 if ch in _GSM_EXTENDED else 1 for ch in body)
        single, multi = 160, 153
    else:
        units = sum(2 if ord(ch) > 0xFFFF else 1 for ch in body)
        single, multi = 70, 67
    if units <= single:
        return 1
    return -(-units // multi)


def _rfc2822(moment: datetime | None) -> str | None:
    return format_datetime(moment.astimezone(UTC)) if moment else None


@dataclass
class StoredMessage:
    """A message the double accepted, with the fields of Twilio's message resource."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status_callback: str | None
    date_created: datetime
    date_sent: datetime | None
    status: str = "queued"
    error_code: int | None = None

    def resource(self) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": _rfc2822(self.date_created),
            "date_sent": _rfc2822(self.date_sent),
            "date_updated": _rfc2822(self.date_created),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(num_segments(self.body)),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
            "to": self.to,
            "uri": uri,
        }


@dataclass(frozen=True)
class Fault:
    """What the double does to one coming request instead of (or before) answering it."""

    status: int | None = None  # answer with this HTTP status and a Twilio error JSON
    code: int | None = None  # the Twilio error code in that JSON (default: the status)
    retry_after: str | None = None  # a Retry-After header on that answer
    delay: float = 0.0  # wait this long first (then carry the request out if no status)
    cut: bool = False  # hang up without an answer, after carrying the request out
    cut_before: bool = False  # hang up without an answer, not carrying the request out


@dataclass
class _State:
    messages: dict[str, StoredMessage] = field(default_factory=dict)
    faults: deque[Fault] = field(default_factory=deque)
    opted_out: set[str] = field(default_factory=set)
    requests: int = 0


class TwilioApiDouble:
    """Twilio's Messages API on a loopback port; a context manager that starts and stops it."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        lifetime: float = 120.0,
        clock: Callable[[], datetime] | None = None,
        latency: float = 0.0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.lifetime = lifetime
        # Seconds every request takes before it is carried out (settable while running).
        self.latency = latency
        self.clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._state = _State()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Twilio double is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> TwilioApiDouble:
        double = self

        class Handler(_Handler):
            owner = double

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        server, self._server = self._server, None
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> TwilioApiDouble:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- configuring failures -----------------------------------------------------------------

    def add_faults(self, *faults: Fault) -> None:
        with self._lock:
            self._state.faults.extend(faults)

    def fail_next(self, count: int = 1, *, status: int = 500) -> None:
        """The next `count` requests answer `status` (a server error by default)."""
        self.add_faults(*[Fault(status=status, code=status)] * count)

    def rate_limit_next(self, count: int = 1, *, retry_after: int | None = 5) -> None:
        """The next `count` requests answer 429 (Twilio code 20429), with Retry-After."""
        retry = None if retry_after is None else str(retry_after)
        self.add_faults(*[Fault(status=429, code=20429, retry_after=retry)] * count)

    def reject_next(self, code: int, count: int = 1, *, status: int = 400) -> None:
        """The next `count` requests answer a Twilio error (21211, 21614, 21610, ...)."""
        self.add_faults(*[Fault(status=status, code=code)] * count)

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """The next `count` requests wait `seconds` before they are carried out."""
        self.add_faults(*[Fault(delay=seconds)] * count)

    def cut_next(self, count: int = 1, *, carried_out: bool = True) -> None:
        """The next `count` requests get no answer: the connection is closed (after the
        request was carried out, or, with `carried_out=False`, instead of it)."""
        fault = Fault(cut=True) if carried_out else Fault(cut_before=True)
        self.add_faults(*[fault] * count)

    def opt_out(self, number: str) -> None:
        """Sends to `number` answer 21610 from now on, as after the recipient texted STOP."""
        with self._lock:
            self._state.opted_out.add(number)

    # -- what it received ---------------------------------------------------------------------

    @property
    def messages(self) -> list[StoredMessage]:
        """Accepted messages, oldest first."""
        with self._lock:
            return list(self._state.messages.values())

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._state.requests

    def message(self, sid: str) -> StoredMessage:
        with self._lock:
            return self._state.messages[sid]

    # -- callbacks ----------------------------------------------------------------------------

    def status_callback_params(
        self, sid: str, status: str, error_code: int | None = None
    ) -> tuple[str, dict[str, str]]:
        """The URL and form fields of a delivery-status callback (and records the status)."""
        with self._lock:
            message = self._state.messages[sid]
            message.status = status
            message.error_code = error_code
        if not message.status_callback:
            raise ValueError(f"message {sid} has no StatusCallback")
        params = {
            "AccountSid": message.account_sid,
            "ApiVersion": API_VERSION,
            "From": message.from_ or "",
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": message.to,
        }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return message.status_callback, params

    def sign(self, url: str, params: dict[str, str]) -> str:
        signature: str = RequestValidator(self.auth_token).compute_signature(url, params)
        return signature

    def send_status_callback(
        self, sid: str, status: str, error_code: int | None = None, *, timeout: float = 5.0
    ) -> httpx.Response:
        """POST a delivery-status callback for `sid`, signed like Twilio's."""
        url, params = self.status_callback_params(sid, status, error_code)
        return httpx.post(
            url,
            data=params,
            headers={"X-Twilio-Signature": self.sign(url, params)},
            timeout=timeout,
        )

    # -- the API (called from the handler threads) --------------------------------------------

    def _next_fault(self) -> Fault | None:
        with self._lock:
            self._state.requests += 1
            return self._state.faults.popleft() if self._state.faults else None

    def _authorized(self, header: str | None) -> bool:
        expected = "Basic " + base64.b64encode(
            f"{self.account_sid}:{self.auth_token}".encode()
        ).decode("ascii")
        return header is not None and hmac.compare_digest(header.encode(), expected.encode())

    def _create(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        to = form.get("To", "").strip()
        body = form.get("Body", "")
        sender = form.get("From") or None
        service = form.get("MessagingServiceSid") or None
        if not to:
            return _error(400, 21604)
        if not body:
            return _error(400, 21602)
        if not (sender or service):
            return _error(400, 21603)
        if not re.fullmatch(r"\+[1-9]\d{7,14}", to):
            return _error(400, 21211)
        now = self.clock()
        message = StoredMessage(
            sid="SM" + secrets.token_hex(16),
            account_sid=self.account_sid,
            to=to,
            from_=sender,
            messaging_service_sid=service,
            body=body,
            status_callback=form.get("StatusCallback") or None,
            date_created=now,
            # The double hands messages on at once, so they are in the log by send date.
            date_sent=now,
        )
        with self._lock:
            if to in self._state.opted_out:
                return _error(400, 21610)
            self._state.messages[message.sid] = message
        return 201, message.resource()

    def _fetch(self, sid: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            message = self._state.messages.get(sid)
            resource = message.resource() if message else None
        return (200, resource) if resource else _error(404, 20404)

    def _list(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            page = max(0, int(query.get("Page", "0")))
            page_size = min(1000, max(1, int(query.get("PageSize", "50"))))
            sent_after = _parse_filter_date(query.get("DateSent>"))
            sent_before = _parse_filter_date(query.get("DateSent<"))
        except ValueError:
            return _error(400, 20001)
        with self._lock:
            found = list(self._state.messages.values())
        to, sender = query.get("To"), query.get("From")
        found = [
            m
            for m in found
            if (not to or m.to == to)
            and (not sender or m.from_ == sender)
            and _date_matches(m.date_sent, sent_after, after=True)
            and _date_matches(m.date_sent, sent_before, after=False)
        ]
        found.sort(key=lambda m: m.date_created, reverse=True)  # Twilio lists newest first
        start = page * page_size
        chunk = found[start : start + page_size]
        filters = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}

        def page_uri(number: int) -> str:
            return path + "?" + urlencode({**filters, "PageSize": page_size, "Page": number})

        has_next = start + page_size < len(found)
        return 200, {
            "messages": [m.resource() for m in chunk],
            "start": start,
            "end": start + max(0, len(chunk) - 1),
            "page": page,
            "page_size": page_size,
            "uri": page_uri(page),
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1) if has_next else None,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
        }

    def handle(
        self, method: str, target: str, headers: dict[str, str], raw_body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """One API request: (status, JSON body, extra headers), or None to hang up."""
        fault = self._next_fault()
        wait = self.latency + (fault.delay if fault is not None else 0.0)
        if wait > 0 and self._stopping.wait(wait):
            return (*_error(503, 503), {})
        if fault is not None and fault.cut_before:
            return None
        if fault is not None and fault.status is not None:
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return (*_error(fault.status, fault.code or fault.status), extra)
        if not self._authorized(headers.get("authorization")):
            return (*_error(401, 20003), {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        status, payload = self._route(method, target, raw_body)
        return None if fault is not None and fault.cut else (status, payload, {})

    def _route(self, method: str, target: str, raw_body: bytes) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(target)
        collection = _MESSAGES.match(parts.path)
        single = _MESSAGE.match(parts.path)
        found = collection or single
        if found is None or found.group("account") != self.account_sid:
            return _error(404, 20404)
        if collection and method == "POST":
            form = parse_qs(raw_body.decode("utf-8"), keep_blank_values=True)
            return self._create({k: v[-1] for k, v in form.items()})
        if collection and method == "GET":
            query = parse_qs(parts.query, keep_blank_values=True)
            return self._list(parts.path, {k: v[-1] for k, v in query.items()})
        if single and method == "GET":
            return self._fetch(single.group("sid"))
        return _error(405, 20004)


def _error(status: int, code: int) -> tuple[int, dict[str, Any]]:
    return status, {
        "code": code,
        "message": _ERROR_MESSAGES.get(code, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _parse_filter_date(value: str | None) -> datetime | date | None:
    """`2026-11-27` (a day) or `2026-11-27T15:00:00Z` (an instant), as Twilio accepts."""
    if not value:
        return None
    if len(value) == 10:
        return date.fromisoformat(value)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _date_matches(moment: datetime | None, bound: datetime | date | None, *, after: bool) -> bool:
    if bound is None:
        return True
    if moment is None:
        return False
    if isinstance(bound, datetime):
        return moment >= bound if after else moment < bound
    day = moment.astimezone(UTC).date()
    return day >= bound if after else day < bound


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many clients connect at once (two workers, each with a pool): the default backlog of
    # 5 would drop connections and stall them for a SYN retry.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the crash tests) resets its connection: not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    owner: TwilioApiDouble
    protocol_version = "HTTP/1.1"
    server_version = "TwilioApiDouble/1"
    # One buffered write per answer, sent at once: no 40 ms delayed-ACK stall per request.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            raw_body = self.rfile.read(length) if length else b""
        except OSError:
            raw_body = b""
        if len(raw_body) < length:
            # The sender died mid-request: nothing is carried out.
            self.close_connection = True
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.owner.handle(method, self.path, headers, raw_body)
        if answer is None:
            self.close_connection = True  # hang up without a word
            return
        status, payload, extra = answer
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); the request was still carried out

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the record of received messages is what tests look at
