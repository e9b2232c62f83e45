"""`cgt-access fhir demo-client` and `cgt-access fhir assertion`: what a center's engineer
runs to try the API with curl, and the demo's FHIR set-up they try it against."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from core.clock import FrozenClock, SystemClock
from core.models import Patient, State, Therapy, TherapyCode, TreatmentCenter
from core.therapy_codes import HCPCS
from fhir_adapter.assertions import generate_key, private_key_pem, public_key_set
from fhir_adapter.models import FhirClient
from fhir_adapter.tokens import CLIENT_ASSERTION_TYPE
from portal.cli import app as cli
from portal.dev.demo import seed_demo
from tests.conftest import Database, make_settings

TOKEN_URL = "http://testserver/auth/token"


@pytest.fixture
def http(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _run(db: Database, *args: str, demo: bool = True) -> Any:
    env = {
        "DATABASE_URL": db.url,
        "DEMO_MODE": "true" if demo else "false",
        "PUBLIC_BASE_URL": "http://testserver",
        "SECRET_KEY": "a-test-secret-that-is-long-enough-0123456789",
    }
    return CliRunner().invoke(cli, ["fhir", *args], env=env)


def _token(http: TestClient, assertion: str, scope: str = "system/*.cruds") -> dict[str, Any]:
    response = http.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": scope,
        },
    )
    result: dict[str, Any] = response.json()
    return result


def test_a_demo_client_gets_a_token_with_the_printed_commands(
    db: Database, http: TestClient, tmp_path: Path, clock: FrozenClock
) -> None:
    key = tmp_path / "center.pem"
    made = _run(db, "demo-client", "--key", str(key))
    assert made.exit_code == 0, made.output
    found = re.search(r"Registered FHIR client (center-[0-9a-f]{16}) for Harborview", made.output)
    assert found is not None, made.output
    client_id = found.group(1)
    # Only its owner may read the private key; the platform keeps only the public half.
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
    with db.factory() as session:
        client = session.scalar(select(FhirClient).where(FhirClient.client_id == client_id))
        assert client is not None and client.center.name == "Harborview Medical Center"
        jwks = client.current_key_set.jwks if client.current_key_set else None
        assert jwks is not None and "d" not in jwks["keys"][0]
        harborview_patient = session.scalar(
            select(Patient.id).where(Patient.center_id == client.center_id).limit(1)
        )
    assert f"token endpoint {TOKEN_URL}" in made.output
    assert (
        f"cgt-access fhir assertion --client-id {client_id} --key {key} --aud {TOKEN_URL}"
        in made.output
    )

    # The printed command's assertion buys a token, once. (The command signs with the
    # machine's clock: the application under test is set to it.)
    clock.set(SystemClock().now())
    signed = _run(db, "assertion", "--client-id", client_id, "--key", str(key))
    assert signed.exit_code == 0, signed.output
    assertion = signed.output.strip()
    token = _token(http, assertion)
    assert token.get("token_type") == "bearer", token
    assert token["scope"] == "system/*.cruds"
    assert _token(http, assertion)["error"] == "invalid_client"  # its jti was used
    read = http.get(
        f"/fhir/Patient/{harborview_patient}",
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert read.status_code == 200, read.text

    again = _run(db, "demo-client", "--key", str(key))
    assert again.exit_code == 2
    assert "exists" in again.output and "--overwrite" in again.output


def test_demo_clients_are_for_demo_mode_and_demo_centers_only(db: Database, tmp_path: Path) -> None:
    key = tmp_path / "center.pem"
    refused = _run(db, "demo-client", "--key", str(key), demo=False)
    assert refused.exit_code == 2
    assert "DEMO_MODE=true" in refused.output
    unknown = _run(db, "demo-client", "--key", str(key), "--center", "Nowhere General")
    assert unknown.exit_code == 2
    assert "Harborview Medical Center" in unknown.output  # says which centers there are
    bad_scope = _run(db, "demo-client", "--key", str(key), "--scopes", "patient/*.read")
    assert bad_scope.exit_code == 1
    assert "scopes:" in bad_scope.output
    assert not key.exists()  # nothing left behind by the refusals
    with db.factory() as session:
        assert session.scalar(select(FhirClient.id)) is None


def test_an_assertion_needs_a_usable_private_key(db: Database, tmp_path: Path) -> None:
    public = tmp_path / "public.pem"
    key = generate_key("ES384")
    public.write_bytes(key.as_pem(private=False))
    refused = _run(db, "assertion", "--client-id", "center-x", "--key", str(public))
    assert refused.exit_code == 2
    assert "public key" in refused.output
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    assert (
        "not a PEM private key"
        in _run(db, "assertion", "--client-id", "center-x", "--key", str(garbage)).output
    )
    # A key of the right kind signs, with the aud asked for and the key's thumbprint as kid.
    good = tmp_path / "good.pem"
    good.write_bytes(private_key_pem(key))
    signed = _run(
        db, "assertion", "--client-id", "center-x", "--key", str(good), "--aud", "https://x/t"
    )
    assert signed.exit_code == 0, signed.output
    from joserfc import jwt

    decoded = jwt.decode(signed.output.strip(), key, algorithms=["ES384"])
    assert decoded.header["kid"] == public_key_set(key)["keys"][0]["kid"]
    assert decoded.claims["aud"] == "https://x/t"
    assert decoded.claims["iss"] == decoded.claims["sub"] == "center-x"


def test_the_demo_seeds_the_fhir_set_up(empty_db: Database, clock: FrozenClock) -> None:
    assert seed_demo(make_settings(empty_db.url, demo_mode=True), clock=clock)
    with empty_db.factory() as session:
        systems = dict(session.execute(select(State.code, State.medicaid_id_system)).all())
        mrn = dict(session.execute(select(TreatmentCenter.name, TreatmentCenter.mrn_system)).all())
        codes = session.execute(
            select(Therapy.code, TherapyCode.system, TherapyCode.code).join(
                Therapy, Therapy.id == TherapyCode.therapy_id
            )
        ).all()
    assert systems == {
        "MD": "https://medicaid.maryland.example/fhir/sid/member-id",
        "CO": "urn:oid:2.16.840.1.113883.19.5.8",
    }
    assert mrn["Harborview Medical Center"] == "https://harborview.example/fhir/sid/mrn"
    assert sorted(codes) == [("casgevy", HCPCS, "J3392"), ("lyfgenia", HCPCS, "J3394")]
