"""Static files (CSS, the vendored htmx, icons): versioned addresses, long caching, gzip.

Pages link each file as `/static/<path>?v=<hash of its content>` (`static_url`), so a
browser may keep it a year without asking (`immutable`): a deploy that changes the file
changes its address, and the next page fetches the new one. An address without the current
version (an old page in a cache, a hand-typed URL) is kept only a few minutes.

Text files are gzipped here; pages are not (see `portal/app.py`): they carry the CSRF token
and health data next to text a visitor can choose, which compression would leak (BREACH)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from starlette.datastructures import QueryParams
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Scope

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
VERSION_LENGTH = 12  # hex digits of SHA-256: plenty to tell two versions of a file apart
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"


@lru_cache(maxsize=256)
def _digest(path: Path, mtime_ns: int, size: int) -> str:
    # Keyed by the file's time and size as well: an edited file (development) is read again.
    return hashlib.sha256(path.read_bytes()).hexdigest()[:VERSION_LENGTH]


def asset_version(relative: str, *, root: Path = STATIC_DIR) -> str:
    """The version of a static file: the start of the SHA-256 of its content."""
    path = root / relative
    status = path.stat()
    return _digest(path, status.st_mtime_ns, status.st_size)


def static_url(relative: str) -> str:
    """The address a page links a static file by (`static_url("css/site.css")`)."""
    return f"/static/{relative}?v={asset_version(relative)}"


class VersionedStaticFiles(StaticFiles):
    """StaticFiles that say how long a file may be kept: a year for the current version's
    address, a few minutes for any other."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            asked = QueryParams(scope.get("query_string", b"")).get("v")
            try:
                current = asset_version(path, root=Path(str(self.directory)))
            except OSError:
                current = None
            response.headers["Cache-Control"] = (
                IMMUTABLE if asked is not None and asked == current else SHORT
            )
        return response


def static_app(directory: Path = STATIC_DIR) -> ASGIApp:
    """The app mounted at /static: versioned caching, text files gzipped (at least 500
    bytes; images that are already compressed are left alone)."""
    return GZipMiddleware(VersionedStaticFiles(directory=directory), minimum_size=500)
