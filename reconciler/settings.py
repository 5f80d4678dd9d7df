"""Deployment settings: each a flag or a CATALOG_* environment variable (the flag wins)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from .budget import DEFAULT_BUDGET
from .errors import ConfigError

DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
DEFAULT_GITHUB_API_URL = "https://api.github.com"
DEFAULT_OIDC_ISSUER = "https://token.actions.githubusercontent.com"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass
class Settings:
    """Where state lives, where the catalog comes from, and how checks are dispatched."""

    home: Path = Path(".catalog")
    # sqlite:///PATH or postgresql://USER[:PASS]@HOST[:PORT]/DB; default SQLite in `home`. May hold a password.
    database_url: str | None = field(default=None, repr=False)
    repo: str | None = None
    branch: str | None = None
    server_url: str = DEFAULT_SERVER_URL
    github_token: str | None = field(default=None, repr=False)
    github_api_url: str = DEFAULT_GITHUB_API_URL
    github_app_id: str | None = None
    github_app_private_key: str | None = field(default=None, repr=False)  # PEM text or @PATH
    github_budget: str = DEFAULT_BUDGET
    dispatcher: str = "github"
    webhook_secret: str | None = field(default=None, repr=False)
    public_read: bool = False
    bot_name: str = "catalog-bot"  # author of write-back commits
    bot_email: str = "catalog-bot@users.noreply.localhost"
    # Trust (docs/operating.md): who may answer with an OIDC token instead of an API token, and the
    # SSH key that signs write-back commits. The audience defaults to server_url (expected_audience).
    oidc_issuer: str = DEFAULT_OIDC_ISSUER
    oidc_audience: str | None = None
    writeback_signing_key: str | None = field(default=None, repr=False)
    # the key that signed before a rotation: it signs the one commit that adds the new key
    writeback_previous_signing_key: str | None = field(default=None, repr=False)

    @property
    def checkout_path(self) -> Path:
        return self.home / "checkout"

    @property
    def expected_audience(self) -> str:
        """The `aud` an OIDC token must carry: CATALOG_OIDC_AUDIENCE, else the server's public URL."""
        return self.oidc_audience or self.server_url

    @classmethod
    def resolve(cls, flags: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None) -> "Settings":
        """Flags (None = not given) win over CATALOG_<NAME> environment variables, which win over defaults."""
        flags = flags or {}
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for item in fields(cls):
            flag = flags.get(item.name)
            env = environ.get(f"CATALOG_{item.name.upper()}")
            if flag is not None:
                values[item.name] = flag
            elif env is not None and env != "":
                values[item.name] = env
        settings = cls(**{k: v for k, v in values.items()})
        settings.home = Path(settings.home)
        settings.public_read = _as_bool("CATALOG_PUBLIC_READ", settings.public_read)
        settings.server_url = settings.server_url.rstrip("/")
        settings.github_api_url = settings.github_api_url.rstrip("/")
        settings.oidc_issuer = settings.oidc_issuer.rstrip("/")
        if not (settings.dispatcher in ("github", "log") or settings.dispatcher.startswith("local:")):
            raise ConfigError(
                f"unknown dispatcher {settings.dispatcher!r}: use github, log or local:DIR"
            )
        return settings


def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")
