"""`cgt-access fhir ...`: try the FHIR API as a treatment center would, with curl.

- `fhir demo-client` (demo mode only) registers a client for a demo center with a fresh
  ES384 key pair, writes the private key to a file only its owner reads, and prints what a
  center's engineer needs: the client id, the token endpoint, a ready-to-run token request.
- `fhir assertion` prints a signed client assertion for a client id and a private key file,
  to paste into a token request (each assertion is accepted once)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import typer

from core.settings import Settings, SettingsError, load_settings

fhir_app = typer.Typer(
    help="The FHIR API for treatment centers: try it with curl.", no_args_is_help=True
)

DEMO_CENTER = "Harborview Medical Center"
DEMO_SCOPES = "system/*.cruds"


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code=code)


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        raise _fail(str(error)) from None


def _write_private(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write `data` to a file only its owner may read (0600), created that way (never
    readable by others, even for a moment)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    descriptor = os.open(path, flags, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # an existing file keeps its mode otherwise
        os.write(descriptor, data)
    finally:
        os.close(descriptor)


@fhir_app.command("demo-client")
def demo_client(
    center: str = typer.Option(DEMO_CENTER, help="The demo treatment center the client acts for."),
    key: Path = typer.Option(
        Path("demo-center-es384.pem"), "--key", help="Where to write the new private key (0600)."
    ),
    client_id: str = typer.Option("", help="The client id (blank: one is made, center-...)."),
    scopes: str = typer.Option(DEMO_SCOPES, help="What the client may be granted (SMART v2)."),
    overwrite: bool = typer.Option(False, help="Replace the key file if it exists."),
) -> None:
    """Register a FHIR client for a demo center with a new ES384 key pair (DEMO_MODE only),
    write its private key to KEY and print how to get a token with curl."""
    from sqlalchemy import func, select

    from core.audit.service import Actor
    from core.clock import SystemClock
    from core.db import make_engine, make_session_factory, transaction
    from core.errors import FieldErrors
    from core.models import TreatmentCenter
    from fhir_adapter.assertions import generate_key, private_key_pem, public_key_set
    from fhir_adapter.clients import ClientInput, register_client
    from fhir_adapter.tokens import CLIENT_ASSERTION_TYPE, token_url

    settings = _settings_or_exit()
    if not settings.demo_mode:
        raise _fail("Refusing: demo clients are only registered with DEMO_MODE=true.")
    if key.exists() and not overwrite:
        raise _fail(f"{key} exists: choose another --key, or add --overwrite.")
    factory = make_session_factory(make_engine(settings.database_url))
    with factory() as session:
        chosen = session.scalar(
            select(TreatmentCenter).where(func.lower(TreatmentCenter.name) == center.lower())
        )
        if chosen is None:
            names = ", ".join(
                session.scalars(select(TreatmentCenter.name).order_by(TreatmentCenter.name))
            )
            raise _fail(f"No treatment center is named {center!r}. The centers: {names}.")
        center_pk, center_name = chosen.id, chosen.name
        state_name, medicaid_system = chosen.state.name, chosen.state.medicaid_system
        mrn_system = chosen.record_number_system

    signing_key = generate_key("ES384")
    _write_private(key, private_key_pem(signing_key), overwrite=overwrite)
    try:
        with transaction(factory) as session:
            client = register_client(
                session,
                clock=SystemClock(),
                actor=Actor.system("fhir-demo-client"),
                data=ClientInput(
                    client_id=client_id,
                    name=f"{center_name} demo system",
                    center_id=str(center_pk),
                    jwks=json.dumps(public_key_set(signing_key)),
                    scopes=scopes.split(),
                ),
                allow_http_loopback=True,
            )
            registered = client.client_id
    except FieldErrors as problem:
        key.unlink(missing_ok=True)
        raise _fail(
            "\n".join(f"{name}: {text}" for name, text in problem.errors.items()), 1
        ) from None
    except BaseException:
        key.unlink(missing_ok=True)
        raise

    endpoint = token_url(settings.public_base_url)
    key_arg = shlex.quote(str(key))
    typer.echo(f"Registered FHIR client {registered} for {center_name} ({state_name}).")
    typer.echo(f"  private key    {key} (ES384, kid {signing_key.kid}; only this file holds it)")
    typer.echo(f"  scopes         {scopes}")
    typer.echo(f"  token endpoint {endpoint}")
    typer.echo(f"  FHIR base      {settings.public_base_url.rstrip('/')}/fhir")
    typer.echo(f"  Medicaid IDs   identifier system {medicaid_system}")
    typer.echo(f"  MRNs           identifier system {mrn_system}")
    typer.echo("\nGet a token (it lives 5 minutes; each assertion works once):\n")
    typer.echo(
        f"  ASSERTION=$(cgt-access fhir assertion --client-id {registered} --key {key_arg} "
        f"--aud {endpoint})\n"
        f"  curl -s {endpoint} \\\n"
        "    --data-urlencode grant_type=client_credentials \\\n"
        f"    --data-urlencode client_assertion_type={CLIENT_ASSERTION_TYPE} \\\n"
        '    --data-urlencode "client_assertion=$ASSERTION" \\\n'
        f'    --data-urlencode "scope={scopes}"'
    )


@fhir_app.command("assertion")
def assertion(
    client_id: str = typer.Option(..., "--client-id", help="The client's id (iss and sub)."),
    key: Path = typer.Option(
        ...,
        "--key",
        exists=True,
        dir_okay=False,
        readable=True,
        help="The client's private key (PEM): EC P-384 (ES384) or RSA (RS384).",
    ),
    aud: str = typer.Option(
        "",
        "--aud",
        help="The token endpoint's URL exactly (default: PUBLIC_BASE_URL/auth/token).",
    ),
) -> None:
    """Print a signed client assertion (valid 4 minutes, accepted once) for a token
    request: `client_assertion=$(cgt-access fhir assertion ...)`."""
    from core.clock import SystemClock
    from fhir_adapter.assertions import KeyFileProblem, load_private_key, sign_client_assertion
    from fhir_adapter.tokens import token_url

    if not aud:
        try:
            aud = token_url(load_settings().public_base_url)
        except SettingsError:
            raise _fail(
                "Give --aud: the token endpoint's URL (PUBLIC_BASE_URL/auth/token)."
            ) from None
    try:
        signing_key = load_private_key(key.read_bytes())
    except KeyFileProblem as problem:
        raise _fail(f"{key}: {problem}") from None
    typer.echo(
        sign_client_assertion(
            signing_key, client_id=client_id, audience=aud, now=SystemClock().now()
        )
    )
