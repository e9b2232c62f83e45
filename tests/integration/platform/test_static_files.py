"""Static files load fast on a cheap phone and a deploy still reaches everyone (issue 10,
defect 16): pages link each file with a version taken from its content (`?v=`), which
browsers may keep a year without asking again; an address without the current version is
kept only a few minutes; text files travel gzipped. Pages themselves are not compressed:
they carry the CSRF token and health data next to text a visitor can put there (BREACH).

Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from portal.static import STATIC_DIR, asset_version

YEAR_IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"
LINKED = ["css/site.css", "vendor/htmx-2.0.11.min.js", "img/favicon.svg"]
# Text files big enough to gain from gzip (the 278-byte icon is not).
TEXT_FILES = ["css/site.css", "vendor/htmx-2.0.11.min.js"]


def linked_assets(page: str) -> dict[str, str]:
    """Each /static/ file a page links, with the version in its address."""
    return dict(re.findall(r'"/static/([^"?]+)\?v=([0-9a-f]+)"', page))


def test_a_page_links_every_static_file_with_the_version_of_its_content(
    client: TestClient,
) -> None:
    page = client.get("/login").text
    linked = linked_assets(page)
    assert set(linked) == set(LINKED)
    for path, version in linked.items():
        digest = hashlib.sha256((STATIC_DIR / path).read_bytes()).hexdigest()
        assert digest.startswith(version), path
    assert not re.search(r'"/static/[^"?]+"', page), "a static address without a version"


@pytest.mark.parametrize("path", TEXT_FILES)
def test_a_versioned_file_is_kept_a_year_and_travels_gzipped(client: TestClient, path: str) -> None:
    url = f"/static/{path}?v={asset_version(path)}"
    response = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == YEAR_IMMUTABLE
    assert response.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in response.headers["vary"].lower()
    assert response.content == (STATIC_DIR / path).read_bytes()  # httpx unzipped it
    # Much smaller on the wire.
    assert response.num_bytes_downloaded < 0.6 * len(response.content)


def test_the_icon_is_kept_a_year_too(client: TestClient) -> None:
    response = client.get(f"/static/img/favicon.svg?v={asset_version('img/favicon.svg')}")
    assert response.headers["cache-control"] == YEAR_IMMUTABLE


def test_a_file_asked_again_is_not_sent_again(client: TestClient) -> None:
    url = f"/static/css/site.css?v={asset_version('css/site.css')}"
    first = client.get(url)
    again = client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.headers["cache-control"] == YEAR_IMMUTABLE


@pytest.mark.parametrize("query", ["", "?v=0123456789ab"])
def test_an_address_without_the_current_version_is_kept_a_few_minutes(
    client: TestClient, query: str
) -> None:
    response = client.get(f"/static/css/site.css{query}")
    assert response.status_code == 200
    assert response.headers["cache-control"] == SHORT


def test_a_changed_file_gets_a_new_version(tmp_path: Path) -> None:
    (tmp_path / "app.css").write_text("body { color: black; }", encoding="utf-8")
    before = asset_version("app.css", root=tmp_path)
    (tmp_path / "app.css").write_text("body { color: navy; }", encoding="utf-8")
    after = asset_version("app.css", root=tmp_path)
    assert before != after
    assert after == hashlib.sha256(b"body { color: navy; }").hexdigest()[: len(after)]


def test_pages_are_not_compressed(client: TestClient) -> None:
    response = client.get("/login", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.headers["cache-control"] == "no-store"
