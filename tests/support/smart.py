"""What a treatment center's system does to talk to the FHIR API, for tests: make a key
pair (joserfc), publish the public set (pasted, or from a loopback JWKS server), sign a
client assertion, get a token. FHIR resource tests use it too:

    center = CenterSystem.generate("RS384")
    client_pk = register(db, center=center, scopes="system/Patient.rs")
    token = center.token(http, scope="system/Patient.rs")
    http.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, KeyParameters, RSAKey
from sqlalchemy import select

from core.audit.service import Actor
from core.clock import Clock
from core.db import transaction
from core.identity.models import User
from core.models import TreatmentCenter
from fhir_adapter.clients import ClientInput, register_client
from fhir_adapter.tokens import CLIENT_ASSERTION_TYPE
from tests.conftest import ADMIN, Database

# The app under test calls itself http://testserver (see tests.conftest.make_settings).
TOKEN_URL = "http://testserver/auth/token"
HARBORVIEW = "Harborview Medical Center"  # Maryland's seeded center
FRONT_RANGE = "Front Range Medical Center"  # Colorado's


@dataclass
class CenterSystem:
    """A center's FHIR client: its client id and its private signing key."""

    key: RSAKey | ECKey
    alg: str
    client_id: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:10]}")

    @classmethod
    def generate(cls, alg: str = "RS384", *, kid: str | None = None) -> CenterSystem:
        parameters: KeyParameters = {
            "kid": kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}",
            "use": "sig",
        }
        key: RSAKey | ECKey = (
            RSAKey.generate_key(2048, parameters=parameters)
            if alg == "RS384"
            else ECKey.generate_key("P-384", parameters=parameters)
        )
        return cls(key=key, alg=alg)

    @property
    def kid(self) -> str:
        assert self.key.kid is not None
        return self.key.kid

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def assertion(
        self,
        now: datetime,
        *,
        lifetime: timedelta = timedelta(minutes=4),
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A signed client assertion; `claims` override or (with None) remove the defaults."""
        values: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": TOKEN_URL,
            "exp": int((now + lifetime).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        values.update(claims)
        values = {name: value for name, value in values.items() if value is not None}
        protected = {"alg": self.alg, "kid": self.kid, **(header or {})}
        protected = {name: value for name, value in protected.items() if value is not None}
        return jwt.encode(protected, values, self.key, algorithms=[protected["alg"]])

    def request_token(
        self, http: TestClient, assertion: str, *, scope: str | None = "system/Patient.rs"
    ) -> httpx.Response:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        if scope is not None:
            form["scope"] = scope
        response: httpx.Response = http.post("/auth/token", data=form)
        return response

    def token(self, http: TestClient, clock: Clock, *, scope: str = "system/Patient.rs") -> str:
        response = self.request_token(http, self.assertion(clock.now()), scope=scope)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


def center_id(db: Database, name: str) -> int:
    with db.factory() as session:
        found = session.scalar(select(TreatmentCenter.id).where(TreatmentCenter.name == name))
    assert found is not None
    return found


def admin_actor(db: Database) -> Actor:
    with db.factory() as session:
        admin = session.scalar(select(User).where(User.login == ADMIN))
        assert admin is not None
        return Actor(user_id=admin.id, label=ADMIN, role="admin", ip="127.0.0.1")


def register(
    db: Database,
    clock: Clock,
    *,
    center: CenterSystem,
    scopes: str = "system/Patient.rs system/Observation.cruds",
    center_name: str = HARBORVIEW,
    jwks_url: str = "",
) -> int:
    """Register `center`'s client (its public keys pasted, or at `jwks_url`), as the admin
    would; returns the client's row id."""
    with transaction(db.factory) as session:
        client = register_client(
            session,
            clock=clock,
            actor=admin_actor(db),
            data=ClientInput(
                client_id=center.client_id,
                name=f"{center_name} test system",
                center_id=str(center_id(db, center_name)),
                jwks_url=jwks_url,
                jwks="" if jwks_url else json.dumps(center.public_jwks()),
                scopes=scopes.split(),
            ),
            allow_http_loopback=True,
        )
        return client.id


class JwksServer:
    """A center's key-set URL on 127.0.0.1: serves `document` (change it to roll keys),
    or `status` when set; counts the requests it got."""

    def __init__(self, document: dict[str, Any] | None = None) -> None:
        self.document: dict[str, Any] = document or {"keys": []}
        self.status: int | None = None
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                status = outer.status or 200
                body = json.dumps(outer.document).encode() if status == 200 else b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
