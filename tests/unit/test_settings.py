"""Settings: a production start refuses what would make it unsafe or broken, and says why,
naming the environment variable a person has to fix."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from core.settings import DEMO_SECRET_KEY, Settings, SettingsError, get_settings, load_settings
from portal.onboarding import invitation_url

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / ".venv" / "bin" / "cgt-access"
GOOD_SECRET = "a-private-random-value-of-more-than-32-characters-xyz"
ENV_NAMES = [name.upper() for name in Settings.model_fields]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the machine: no variables, no `.env` in the working folder."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def refusal(**overrides: object) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(**overrides)
    return str(caught.value)


def test_production_start_without_secret_key_is_refused_and_says_why() -> None:
    message = refusal(demo_mode=False)
    assert message.startswith("Cannot start cgt-access")
    assert "SECRET_KEY is not set" in message
    # It tells the person how to fix it.
    assert "secrets.token_urlsafe" in message
    assert "DEMO_MODE=true" in message


def test_production_start_with_the_published_demo_key_is_refused() -> None:
    message = refusal(demo_mode=False, secret_key=DEMO_SECRET_KEY)
    assert "SECRET_KEY is the published demo key" in message
    assert "DEMO_MODE is off" in message


def test_demo_key_from_the_environment_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", DEMO_SECRET_KEY)
    monkeypatch.setenv("DEMO_MODE", "false")
    assert "published demo key" in refusal()


def test_short_secret_key_is_refused() -> None:
    message = refusal(secret_key="x" * 31)
    assert "SECRET_KEY must be at least 32 characters long" in message


def test_demo_mode_gets_the_demo_key_when_none_is_set() -> None:
    settings = load_settings(demo_mode=True)
    assert settings.secret == DEMO_SECRET_KEY


def test_a_private_key_of_32_characters_starts() -> None:
    settings = load_settings(secret_key="k" * 32)
    assert settings.secret == "k" * 32
    assert settings.demo_mode is False


def test_secret_key_and_mode_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db.example.org/cgt")
    settings = load_settings()
    assert settings.secret == GOOD_SECRET
    # The plain scheme is turned into the driver the platform uses.
    assert settings.database_url == "postgresql+psycopg://u:p@db.example.org/cgt"


def test_a_dotenv_file_in_the_working_folder_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"SECRET_KEY={GOOD_SECRET}\nPORT=8123\n")
    settings = load_settings()
    assert settings.secret == GOOD_SECRET
    assert settings.port == 8123


@pytest.mark.parametrize(
    "url", ["mysql://u:p@host/db", "postgres://u:p@host/db", "cgt-access.db", ""]
)
def test_wrong_database_url_scheme_names_database_url(url: str) -> None:
    message = refusal(secret_key=GOOD_SECRET, database_url=url)
    assert "DATABASE_URL:" in message
    assert "postgresql+psycopg://" in message


@pytest.mark.parametrize("port", ["eighty", "0", "65536", "-1"])
def test_bad_port_names_port(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("PORT", port)
    message = refusal()
    assert "PORT:" in message
    assert "SECRET_KEY" not in message


@pytest.mark.parametrize("url", ["followup.example.org", "ftp://followup.example.org", "/x"])
def test_bad_public_base_url_names_public_base_url(url: str) -> None:
    message = refusal(secret_key=GOOD_SECRET, public_base_url=url)
    assert "PUBLIC_BASE_URL:" in message
    assert "absolute http(s) URL" in message


def test_public_base_url_loses_its_trailing_slash() -> None:
    settings = load_settings(secret_key=GOOD_SECRET, public_base_url="https://f.example.org/")
    assert settings.public_base_url == "https://f.example.org"
    assert settings.uses_tls


def test_twilio_without_credentials_names_every_missing_variable() -> None:
    message = refusal(secret_key=GOOD_SECRET, sms_backend="twilio")
    assert "SMS_BACKEND=twilio needs" in message
    assert "TWILIO_ACCOUNT_SID" in message
    assert "TWILIO_AUTH_TOKEN" in message
    assert "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID" in message


def test_twilio_with_only_a_sender_missing_names_just_that() -> None:
    message = refusal(
        secret_key=GOOD_SECRET,
        sms_backend="twilio",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="token",
    )
    assert "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID" in message
    assert "TWILIO_ACCOUNT_SID" not in message
    assert "TWILIO_AUTH_TOKEN" not in message


def test_twilio_with_credentials_and_a_sender_starts() -> None:
    settings = load_settings(
        secret_key=GOOD_SECRET,
        sms_backend="twilio",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="token",
        twilio_messaging_service_sid="MG" + "0" * 32,
    )
    assert settings.sms_backend == "twilio"


def test_unknown_sms_backend_names_sms_backend() -> None:
    assert "SMS_BACKEND:" in refusal(secret_key=GOOD_SECRET, sms_backend="carrier-pigeon")


def test_several_wrong_settings_are_all_named_at_once() -> None:
    message = refusal(secret_key=GOOD_SECRET, port=0, public_base_url="nope", database_url="x")
    for name in ("PORT:", "PUBLIC_BASE_URL:", "DATABASE_URL:"):
        assert name in message


def test_the_cli_refuses_to_start_without_secret_key(tmp_path: Path) -> None:
    database = tmp_path / "refused.db"
    env = {
        key: value
        for key, value in os.environ.items()
        if key.upper() not in ENV_NAMES and key.upper() != "SECRET_KEY"
    }
    env.update({"DEMO_MODE": "false", "DATABASE_URL": f"sqlite:///{database}"})
    result = subprocess.run(
        [str(CLI), "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing was migrated.
    assert not database.exists()


# --- links in demo mode follow the served port -------------------------------------------


def test_demo_mode_links_use_the_served_port_when_public_base_url_is_not_set() -> None:
    settings = load_settings(demo_mode=True, port=9000)
    assert settings.public_base_url == "http://localhost:9000"
    assert invitation_url(settings, "tok").startswith("http://localhost:9000/invite/")


def test_demo_mode_keeps_an_explicit_public_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://demo.example.org")
    monkeypatch.setenv("PORT", "9000")
    settings = load_settings(demo_mode=True)
    assert settings.public_base_url == "https://demo.example.org"


def test_outside_demo_mode_the_port_does_not_change_public_base_url() -> None:
    """A real deployment's links are the configured address, whatever port the process
    listens on behind its proxy."""
    settings = load_settings(secret_key=GOOD_SECRET, port=9000)
    assert settings.public_base_url == "http://localhost:8000"
    configured = load_settings(
        secret_key=GOOD_SECRET, port=9000, public_base_url="https://followup.example.org"
    )
    assert configured.public_base_url == "https://followup.example.org"


def test_serve_on_another_port_in_demo_mode_sends_invitation_links_to_that_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`make demo PORT=9000` (`cgt-access serve --port 9000`): the README's invitation
    journey opens the link the demo texted, which must point at the port being served."""
    import uvicorn
    from typer.testing import CliRunner

    from portal.app import create_app
    from portal.cli import app as cli

    served: dict[str, str] = {}

    def fake_run(target: str, *, factory: bool, port: int, **_options: object) -> None:
        # What uvicorn would do: build the app from the environment, in this process.
        assert target == "portal.app:create_app" and factory
        settings = create_app().state.context.settings
        served["port"] = str(port)
        served["link"] = invitation_url(settings, "tok")

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setitem(os.environ, "DEMO_MODE", "true")
    monkeypatch.setitem(os.environ, "DATABASE_URL", f"sqlite:///{tmp_path / 'demo.db'}")
    monkeypatch.setitem(os.environ, "PORT", "8000")  # restored afterwards
    try:
        result = CliRunner().invoke(cli, ["serve", "--port", "9000"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert served == {"port": "9000", "link": "http://localhost:9000/invite/tok"}
