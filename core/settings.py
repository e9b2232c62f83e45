"""Settings from environment variables (and an optional `.env`), validated once at start."""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Published in README for `make demo`; a production start with it is refused.
DEMO_SECRET_KEY = "demo-only-secret-key-do-not-use-in-production-0000"


class SettingsError(Exception):
    """The environment does not describe a runnable platform; the message says why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "sqlite:///./cgt-access.db"
    port: int = Field(default=8000, ge=1, le=65535)
    secret_key: SecretStr | None = None
    demo_mode: bool = False
    # Where people and Twilio reach the platform: the links in texts, calendars and letters.
    # In demo mode, when not set, the served address (http://localhost:PORT).
    public_base_url: str = "http://localhost:8000"
    run_scheduler: bool = True
    sms_backend: Literal["console", "twilio"] = "console"
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_api_base: str = "https://api.twilio.com"
    default_time_zone: str = "America/New_York"
    program_name: str = "CGT Access follow-up"
    session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    session_absolute_hours: int = Field(default=12, ge=1, le=24 * 30)
    invitation_valid_days: int = Field(default=7, ge=1, le=60)
    dispatch_interval_seconds: int = Field(default=15, ge=1, le=3600)
    # How many texts one worker hands to the provider at once.
    dispatch_concurrency: int = Field(default=8, ge=1, le=64)
    reminder_planning_minutes: int = Field(default=10, ge=1, le=24 * 60)
    # Behind a TLS-terminating proxy the app trusts X-Forwarded-Proto from these addresses.
    forwarded_allow_ips: str = "127.0.0.1"
    # FHIR bulk export: where the files are written (one folder that every copy of the
    # process sees), how long a finished export's files are kept, and how many resources one
    # file holds at most (a client fetches the files of a type in parallel).
    export_dir: str = "./exports"
    export_keep_hours: int = Field(default=24, ge=1, le=24 * 30)
    export_file_max_resources: int = Field(default=100_000, ge=1, le=10_000_000)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError(
                "must start with sqlite:/// or postgresql+psycopg:// "
                "(e.g. postgresql+psycopg://user:pass@host/dbname)"
            )
        if value.startswith("postgresql:"):
            value = "postgresql+psycopg:" + value.removeprefix("postgresql:")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an absolute http(s) URL, e.g. https://followup.example.org")
        return value.rstrip("/")

    @field_validator("default_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone such as America/Chicago"
            ) from None
        return value

    @model_validator(mode="after")
    def _demo_links_follow_the_port(self) -> Settings:
        """`make demo PORT=9000`: the demo's links (an invitation texted to the demo's
        message page) must open the demo being served, not the default port. A deployment
        names its address itself: behind a proxy the port it listens on says nothing."""
        if self.demo_mode and "public_base_url" not in self.model_fields_set:
            self.public_base_url = f"http://localhost:{self.port}"
        return self

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> Settings:
        secret = self.secret_key.get_secret_value() if self.secret_key else None
        if self.demo_mode:
            if secret is None:
                self.secret_key = SecretStr(DEMO_SECRET_KEY)
        else:
            if secret is None:
                raise ValueError(
                    "SECRET_KEY is not set. Outside demo mode it must be a long random value "
                    "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`), "
                    "or set DEMO_MODE=true to run the demo."
                )
            if secret == DEMO_SECRET_KEY:
                raise ValueError(
                    "SECRET_KEY is the published demo key while DEMO_MODE is off; "
                    "set a private random SECRET_KEY for a real deployment."
                )
            if len(secret) < 32:
                raise ValueError("SECRET_KEY must be at least 32 characters long")
        if self.sms_backend == "twilio":
            missing = [
                name
                for name, value in (
                    ("TWILIO_ACCOUNT_SID", self.twilio_account_sid),
                    ("TWILIO_AUTH_TOKEN", self.twilio_auth_token),
                )
                if not value
            ]
            if not (self.twilio_from_number or self.twilio_messaging_service_sid):
                missing.append("TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
            if missing:
                raise ValueError("SMS_BACKEND=twilio needs " + ", ".join(missing))
        return self

    @property
    def secret(self) -> str:
        assert self.secret_key is not None  # guaranteed by the validator
        return self.secret_key.get_secret_value()

    @property
    def uses_tls(self) -> bool:
        return self.public_base_url.startswith("https://")


def describe_error(error: ValidationError) -> str:
    """One line per wrong setting, named as the environment variable a person would set."""
    lines = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]).upper() or "settings"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {name}: {message}" if item["loc"] else f"  {message}")
    return "Cannot start cgt-access, the settings are wrong:\n" + "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; raise SettingsError with a readable message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(describe_error(error)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once (tests build their own with load_settings)."""
    try:
        return load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        raise
