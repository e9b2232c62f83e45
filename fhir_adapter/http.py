"""FHIR over HTTP: the JSON response, content negotiation, reading a request body, and the
headers that name a resource version (R4 http.html).

The platform speaks JSON only (`application/fhir+json`). Responses are written from plain
dicts with orjson, never through fhir.resources models, so that a search page or an export
costs a dict and a serialisation per resource; `Decimal` values keep their exact digits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fhir_adapter.errors import FhirError

_F = TypeVar("_F", bound=Callable[..., Any])
FHIR_JSON = "application/fhir+json"
FHIR_JSON_UTF8 = "application/fhir+json; charset=utf-8"
# The MIME types (and `_format` shorthands) a client may ask for and get our JSON.
_JSON_TYPES = frozenset({"json", "application/json", FHIR_JSON, "application/json+fhir"})
_ANY = frozenset({"*/*", "application/*"})
# The FHIR versions we answer to in a `fhirVersion` MIME parameter (R4 is 4.0).
_FHIR_VERSIONS = frozenset({"4.0", "4.0.0", "4.0.1"})
# A transaction of 10,000 resources is about 25 MB; more than this is refused unread.
MAX_BODY_BYTES = 50 * 1024 * 1024
# Bodies above this are parsed in a worker thread, not on the event loop.
_PARSE_IN_THREAD_BYTES = 1024 * 1024


def _json_default(value: Any) -> Any:
    # A FHIR decimal keeps its precision ("12.50" is not 12.5): write the digits as they are.
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError("FHIR has no NaN or infinite decimals")
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(resource: Mapping[str, Any], *, pretty: bool = False) -> bytes:
    """A resource (plain dict) as FHIR JSON bytes; one line unless `pretty`."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(resource, default=_json_default, option=option)


def ndjson_line(resource: Mapping[str, Any]) -> bytes:
    """A resource as one line of NDJSON (bulk export files): compact JSON and a newline."""
    return orjson.dumps(resource, default=_json_default, option=orjson.OPT_APPEND_NEWLINE)


class FhirResponse(Response):
    """A FHIR JSON response: `application/fhir+json; charset=utf-8`, written by orjson.

    `content` is a plain dict (or bytes already serialised, e.g. by `dumps`)."""

    media_type = FHIR_JSON_UTF8

    def __init__(
        self,
        content: Mapping[str, Any] | bytes,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        pretty: bool = False,
    ) -> None:
        self.pretty = pretty
        super().__init__(content, status_code=status_code, headers=headers)

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return dumps(content, pretty=getattr(self, "pretty", False))


# --- content negotiation ---------------------------------------------------------------------


@dataclass(frozen=True)
class ResponseFormat:
    """How the client wants the answer written: always JSON, pretty-printed on `_pretty=true`."""

    pretty: bool = False

    def respond(
        self,
        content: Mapping[str, Any] | bytes,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> FhirResponse:
        """The FhirResponse for this content, in the client's format."""
        return FhirResponse(content, status_code, headers, pretty=self.pretty)


def _media_range(text: str) -> tuple[str, dict[str, str]]:
    kind, *parameters = (part.strip() for part in text.split(";"))
    values = {}
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        values[name.strip().lower()] = value.strip().strip('"')
    return kind.lower(), values


def _acceptable(media_range: str) -> bool:
    kind, parameters = _media_range(media_range)
    if kind not in _JSON_TYPES and kind not in _ANY:
        return False
    if parameters.get("q") in ("0", "0.0", "0.00", "0.000"):
        return False
    version = parameters.get("fhirversion")
    return version is None or version in _FHIR_VERSIONS


def serves_media_types(*media_types: str) -> Callable[[_F], _F]:
    """Mark a route that answers in other media types besides FHIR JSON (a bulk export
    file is `application/fhir+ndjson`): `negotiate` lets a client accept those there."""

    def mark(endpoint: _F) -> _F:
        endpoint.fhir_media_types = frozenset(media_types)  # type: ignore[attr-defined]
        return endpoint

    return mark


def _route_media_types(request: Request) -> frozenset[str]:
    endpoint = getattr(request.scope.get("route"), "endpoint", None)
    found: frozenset[str] = getattr(endpoint, "fhir_media_types", frozenset())
    return found


def negotiate(request: Request) -> ResponseFormat:
    """The response format from `_format` (which wins) or `Accept`; 406 when the client
    accepts nothing we write (XML, Turtle, HTML alone, another FHIR version).

    A router dependency for every FHIR route, so each has it before it does any work."""
    pretty = request.query_params.get("_pretty", "").lower() == "true"
    extra = _route_media_types(request)
    if extra and any(
        _media_range(part)[0] in extra for part in request.headers.get("accept", "").split(",")
    ):
        return ResponseFormat(pretty=pretty)
    asked = request.query_params.get("_format")
    if asked is not None:
        if not _acceptable(asked):
            raise FhirError.single(
                406,
                "not-supported",
                f"_format={asked[:64]} is not supported: this server writes FHIR R4 JSON only "
                "(_format=json or application/fhir+json)",
            )
        return ResponseFormat(pretty=pretty)
    accept = request.headers.get("accept", "").strip()
    if not accept or any(_acceptable(part) for part in accept.split(",")):
        return ResponseFormat(pretty=pretty)
    raise FhirError.single(
        406,
        "not-supported",
        f"Accept: {accept[:120]} cannot be served: this server writes FHIR R4 JSON only "
        "(application/fhir+json)",
    )


FormatDep = Annotated[ResponseFormat, Depends(negotiate)]


# --- request bodies --------------------------------------------------------------------------


async def read_json_body(request: Request, *, max_bytes: int | None = None) -> Any:
    """The request's JSON body, parsed: 415 unless `application/fhir+json` or
    `application/json` (UTF-8, not compressed), 413 above `max_bytes` (default
    MAX_BODY_BYTES), 400 when it is not JSON (with the line and column of the fault)."""
    if max_bytes is None:
        max_bytes = MAX_BODY_BYTES
    content_type = request.headers.get("content-type")
    if content_type is None:
        raise FhirError.single(
            415, "not-supported", "Send the body with Content-Type: application/fhir+json"
        )
    kind, parameters = _media_range(content_type)
    charset = parameters.get("charset", "utf-8").lower()
    version = parameters.get("fhirversion")
    if kind not in (FHIR_JSON, "application/json", "application/json+fhir") or charset not in (
        "utf-8",
        "utf8",
    ):
        raise FhirError.single(
            415,
            "not-supported",
            f"Content-Type {content_type[:100]} is not supported: send FHIR R4 JSON as "
            "application/fhir+json (UTF-8)",
        )
    if version is not None and version not in _FHIR_VERSIONS:
        raise FhirError.single(
            415, "not-supported", f"fhirVersion={version[:20]}: this server takes FHIR R4 (4.0)"
        )
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", ""):
        raise FhirError.single(
            415, "not-supported", f"Content-Encoding {encoding[:40]} is not supported"
        )
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and int(declared) > max_bytes
    ):
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise FhirError.single(400, "required", "The request has no body; send a FHIR resource")
    try:
        if len(body) > _PARSE_IN_THREAD_BYTES:
            return await run_in_threadpool(orjson.loads, body)
        return orjson.loads(body)
    except orjson.JSONDecodeError as problem:
        raise FhirError.single(
            400,
            "structure",
            f"The body is not JSON: {problem.msg} at line {problem.lineno}, column {problem.colno}",
        ) from None


def _too_large(max_bytes: int) -> FhirError:
    return FhirError.single(
        413,
        "too-long",
        f"The body is larger than {max_bytes // (1024 * 1024)} MB; split it into smaller "
        "transactions or use bulk import",
    )


async def resource_body(request: Request) -> Any:
    """The body as a dependency: `body: JsonBody` in a route."""
    return await read_json_body(request)


JsonBody = Annotated[Any, Depends(resource_body)]


# --- versions and locations ------------------------------------------------------------------


def etag(version_id: str | int) -> str:
    """The ETag of a resource version: `W/"3"` (weak, as FHIR servers write it)."""
    return f'W/"{version_id}"'


def version_from_etag(value: str) -> str | None:
    """The version id in an If-Match header (`W/"3"` or `"3"`), or None if it is not one."""
    text = value.strip().removeprefix("W/")
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"' and '"' not in text[1:-1]:
        return text[1:-1] or None
    return None


def http_date(instant: datetime) -> str:
    """An HTTP date (`Last-Modified`): `Fri, 27 Nov 2026 15:00:00 GMT`."""
    if instant.tzinfo is None:
        raise ValueError("an HTTP date needs an aware datetime")
    return format_datetime(instant.astimezone(UTC), usegmt=True)


def fhir_base_url(public_base_url: str) -> str:
    """The FHIR base, `PUBLIC_BASE_URL` + `/fhir`."""
    return public_base_url.rstrip("/") + "/fhir"


def location(base: str, resource_type: str, resource_id: str, version_id: str | int) -> str:
    """The Location of a created or updated version: `[base]/Patient/123/_history/1`."""
    return f"{base}/{resource_type}/{resource_id}/_history/{version_id}"


def version_headers(
    *,
    base: str,
    resource_type: str,
    resource_id: str,
    version_id: str | int,
    last_updated: datetime,
) -> dict[str, str]:
    """Location, ETag and Last-Modified of a resource version: the headers of a create or an
    update (a read sends the last two; Location is harmless there but not required)."""
    return {
        "Location": location(base, resource_type, resource_id, version_id),
        "ETag": etag(version_id),
        "Last-Modified": http_date(last_updated),
    }
