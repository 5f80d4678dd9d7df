"""Credentials for GitHub's API: a personal token, or a GitHub App's installation tokens.

A GitHub App (`CATALOG_GITHUB_APP_ID`, `CATALOG_GITHUB_APP_PRIVATE_KEY`) signs a short app JWT
(RS256), finds the installation on each repository owner, and exchanges the JWT for an
installation token, cached per owner until shortly before it expires (GitHub: one hour).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from .clock import Clock
from .errors import ConfigError, DispatchError

# Renew an installation token this long before GitHub's expiry, so none expires mid-request.
TOKEN_MARGIN = timedelta(minutes=5)
# GitHub rejects app JWTs valid for more than 10 minutes; iat is backdated for clock drift.
JWT_LIFETIME_SECONDS = 540
JWT_BACKDATE_SECONDS = 60


class TokenCredentials:
    """A personal access token (or any fixed token): the same for every owner."""

    def __init__(self, token: str):
        self._token = token

    def token(self, owner: str, repo: str) -> str:
        return self._token

    def forget(self, owner: str) -> None:
        """Nothing to renew: a fixed token that GitHub refuses stays refused."""

    @property
    def renewable(self) -> bool:
        return False


class AppCredentials:
    """A GitHub App: installation tokens per repository owner, cached, renewed on expiry or a 401."""

    def __init__(self, api_url: str, app_id: str, private_key: str, *, session: requests.Session,
                 clock: Clock | None = None, user_agent: str = "service-catalog-dispatcher", request_timeout: float = 30.0):
        self.api_url = api_url.rstrip("/")
        self.app_id = str(app_id)
        self._key = private_key
        self.session = session
        self.clock = clock or Clock()
        self.user_agent = user_agent
        self.request_timeout = request_timeout
        self._tokens: dict[str, tuple[str, datetime]] = {}  # owner -> (token, expires_at)
        self._lock = threading.Lock()

    @property
    def renewable(self) -> bool:
        return True

    def app_jwt(self) -> str:
        now = int(self.clock.now().timestamp())
        claims = {"iat": now - JWT_BACKDATE_SECONDS, "exp": now + JWT_LIFETIME_SECONDS, "iss": self.app_id}
        return jwt.encode(claims, self._key, algorithm="RS256")

    def token(self, owner: str, repo: str) -> str:
        """The installation token for `owner`, from the cache while it has more than TOKEN_MARGIN left."""
        key = owner.lower()
        with self._lock:
            cached = self._tokens.get(key)
            if cached and cached[1] - TOKEN_MARGIN > self.clock.now():
                return cached[0]
            token, expires_at = self._exchange(owner, repo)
            self._tokens[key] = (token, expires_at)
            return token

    def forget(self, owner: str) -> None:
        """GitHub refused the token (401): the next `token` asks for a new one."""
        with self._lock:
            self._tokens.pop(owner.lower(), None)

    def _exchange(self, owner: str, repo: str) -> tuple[str, datetime]:
        headers = {
            "Authorization": f"Bearer {self.app_jwt()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": self.user_agent,
        }
        installation = self._call("GET", f"/repos/{owner}/{repo}/installation", headers, f"{owner}/{repo}")
        installation_id = installation.get("id")
        if not isinstance(installation_id, int):
            raise DispatchError(f"GitHub's installation answer for {owner}/{repo} has no id", transient=True)
        answer = self._call("POST", f"/app/installations/{installation_id}/access_tokens", headers, f"{owner}/{repo}")
        try:
            token = str(answer["token"])
            expires_at = datetime.fromisoformat(str(answer["expires_at"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            raise DispatchError("GitHub's installation token answer has no token or expires_at", transient=True) from None
        return token, expires_at

    def _call(self, method: str, path: str, headers: dict, repository: str) -> dict:
        try:
            response = self.session.request(method, self.api_url + path, headers=headers, timeout=self.request_timeout)
        except requests.RequestException as error:
            raise DispatchError(f"GitHub did not answer the app token request ({type(error).__name__})", transient=True) from None
        if response.status_code in (200, 201):
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                return body
            raise DispatchError(f"GitHub answered {method} {path} with no JSON object", transient=True)
        try:
            message = str(response.json().get("message") or "no message")
        except (ValueError, AttributeError):
            message = (response.text or "no message")[:200]
        if response.status_code >= 500 or response.status_code == 429:
            raise DispatchError(f"GitHub answered {response.status_code} to the app token request: {message}", transient=True)
        hint = {
            401: " (check CATALOG_GITHUB_APP_ID and CATALOG_GITHUB_APP_PRIVATE_KEY)",
            404: f" (is the GitHub App installed on {repository.split('/')[0]} with access to {repository}?)",
        }.get(response.status_code, "")
        raise DispatchError(f"GitHub answered {response.status_code} to the app token request: {message}{hint}",
                            transient=False)


def load_private_key(value: str) -> str:
    """The PEM text of `CATALOG_GITHUB_APP_PRIVATE_KEY` (PEM text, or @PATH), checked; never echoed."""
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).expanduser().read_text()
        except OSError as error:
            raise ConfigError(f"CATALOG_GITHUB_APP_PRIVATE_KEY: cannot read {value[1:]}: {error.strerror or error}") from None
    text = text.replace("\\n", "\n").strip() + "\n"  # a PEM pasted into one line of an env file
    try:
        key = load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError("CATALOG_GITHUB_APP_PRIVATE_KEY is not an unencrypted PEM private key (give the text or @PATH)") from None
    if not isinstance(key, RSAPrivateKey):  # GitHub signs app JWTs with RS256 only
        raise ConfigError("CATALOG_GITHUB_APP_PRIVATE_KEY is not an RSA key: a GitHub App's private key is the RSA"
                          " .pem GitHub generates in the app's settings")
    return text
