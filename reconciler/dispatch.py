"""Dispatchers: send one payload to GitHub (`repository_dispatch`), to a local script, or to the log.

Every dispatcher has `send(payload)`, which returns when the check has been started and raises
`DispatchError(message, transient=..., retry_after=...)` otherwise. Transient failures (rate limits,
5xx, connection errors) leave the result pending for a later pass; permanent ones (401, 404, 422,
a missing script) turn it into an `error` with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Protocol

import requests

from .budget import Budget
from .clock import Clock
from .errors import ConfigError, DispatchError
from .github_auth import AppCredentials, TokenCredentials, load_private_key
from .payload import Payload, check_limits, owner_and_repo
from .settings import Settings

log = logging.getLogger("catalog.dispatch")

USER_AGENT = "service-catalog-dispatcher"
# GitHub: "make requests for a single user serially", and for mutating requests "wait at least one
# second between each request". One POST a second is 3,600 an hour, under the 5,000 an hour a token
# may make; anything faster is GitHub's to allow, and it says so with its rate-limit headers.
DEFAULT_PACING_SECONDS = 1.0
# Waits longer than this are not slept through inside a pass: the results stay pending instead.
DEFAULT_MAX_WAIT_SECONDS = 60.0
DEFAULT_LOCAL_TIME_LIMIT = 60.0
LOCAL_TOKEN_FILE = "local-dispatcher.token"


class Dispatcher(Protocol):
    def send(self, payload: Payload) -> None: ...

    def capacity(self) -> int | None:
        """Dispatches that may be sent now without waiting; None: no limit but the dispatcher's own pace."""


class GitHubDispatcher:
    """POST {api}/repos/{owner}/{repo}/dispatches, one at a time, paced, honouring rate limits."""

    def __init__(
        self,
        api_url: str,
        token: str | TokenCredentials | AppCredentials,
        *,
        session: requests.Session | None = None,
        clock: Clock | None = None,
        budget: Budget | None = None,
        pacing_seconds: float = DEFAULT_PACING_SECONDS,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
        request_timeout: float = 30.0,
    ):
        self.api_url = api_url.rstrip("/")
        self.credentials = TokenCredentials(token) if isinstance(token, str) else token
        self.session = session or requests.Session()
        self.clock = clock or Clock()
        self.budget = budget
        self.pacing_seconds = pacing_seconds
        self.max_wait_seconds = max_wait_seconds
        self.request_timeout = request_timeout
        self._not_before: datetime | None = None  # no request before this (pacing or a rate limit)
        self._failures = 0  # consecutive transient failures without a hint: exponential backoff

    def send(self, payload: Payload) -> None:
        check_limits(payload)
        if not payload.repository:
            raise DispatchError(
                f"check {payload.event_type!r} has no repository to dispatch to: set `repository` in its"
                " file or `defaults.repository` in catalog.yaml",
                transient=False,
            )
        owner, repo = owner_and_repo(payload.repository)
        url = f"{self.api_url}/repos/{owner}/{repo}/dispatches"
        for attempt in (1, 2):
            token = self.credentials.token(owner, repo)
            self._wait_for_turn()
            try:
                response = self.session.post(url, json=payload.body, headers=self._headers(token), timeout=self.request_timeout)
            except requests.RequestException as error:
                self._back_off(None)
                raise DispatchError(f"GitHub did not answer ({type(error).__name__}: {error})", transient=True) from None
            finally:
                self._pace()
            self._note_rate_limit(response)
            if response.status_code in (200, 201, 202, 204):
                self._failures = 0
                return
            if response.status_code == 401 and attempt == 1 and self.credentials.renewable:
                self.credentials.forget(owner)  # an installation token revoked or expired early: one more try
                continue
            raise self._failure(response, f"{owner}/{repo}")

    def capacity(self) -> int | None:
        """Dispatches that may be made now without waiting (None: no budget, only pacing)."""
        return self.budget.capacity() if self.budget is not None else None

    def _headers(self, token: str) -> dict:
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": USER_AGENT,
        }

    def _wait_for_turn(self) -> None:
        """Pacing and GitHub's own hints first, then one request from the budget (shared in the store)."""
        if self._not_before is not None:
            wait = (self._not_before - self.clock.now()).total_seconds()
            if wait > self.max_wait_seconds:
                raise DispatchError(f"GitHub asked us to wait {wait:.0f} s more", transient=True, retry_after=wait)
            if wait > 0:
                self.clock.sleep(wait)
        while self.budget is not None:
            wait = self.budget.take()
            if wait <= 0:
                return
            if wait > self.max_wait_seconds:
                raise DispatchError(f"dispatch budget {self.budget} spent: next request in {wait:.0f} s",
                                    transient=True, retry_after=wait)
            self.clock.sleep(wait)

    def _pace(self) -> None:
        earliest = self._after(self.pacing_seconds)
        if self._not_before is None or earliest > self._not_before:
            self._not_before = earliest

    def _after(self, seconds: float) -> datetime:
        return self.clock.now() + timedelta(seconds=max(0.0, seconds))

    def _back_off(self, hint: float | None) -> float:
        """Wait `hint` seconds if GitHub gave one, else 1, 2, 4 ... up to 15 minutes."""
        self._failures += 1
        delay = hint if hint is not None else min(900.0, 2.0 ** (self._failures - 1))
        self._not_before = max(self._not_before or self.clock.now(), self._after(delay))
        if hint is not None and self.budget is not None:
            self.budget.pause(delay)  # GitHub's word holds for every process on the store
        return delay

    def _note_rate_limit(self, response: requests.Response) -> None:
        """Spent the hourly budget: nothing more until GitHub's reset time (even after a success)."""
        if response.headers.get("x-ratelimit-remaining") == "0":
            reset = _reset_seconds(response, self.clock)
            if reset is not None:
                self._not_before = max(self._not_before or self.clock.now(), self._after(reset))
                if self.budget is not None:
                    self.budget.pause(reset)

    def _failure(self, response: requests.Response, repository: str) -> DispatchError:
        message = _github_message(response)
        status = response.status_code
        retry_after = retry_after_seconds(response)
        rate_limited = (
            status == 429
            or retry_after is not None
            or response.headers.get("x-ratelimit-remaining") == "0"
            or "rate limit" in message.lower()
        )
        if status in (403, 429) and rate_limited:
            if retry_after is None and response.headers.get("x-ratelimit-remaining") == "0":
                retry_after = _reset_seconds(response, self.clock)
            if retry_after is None:  # a secondary limit without a hint: GitHub says wait a minute, then longer
                retry_after = 60.0 * 2 ** min(self._failures, 4)
            delay = self._back_off(retry_after)
            return DispatchError(f"GitHub rate limit ({status}): {message}", transient=True, retry_after=delay)
        if status >= 500:
            delay = self._back_off(retry_after)
            return DispatchError(f"GitHub answered {status}: {message}", transient=True, retry_after=delay if retry_after else None)
        self._failures = 0
        hint = {
            401: " (check the GitHub App's installation and permissions)" if self.credentials.renewable
            else " (check CATALOG_GITHUB_TOKEN)",
            404: f" (does {repository} exist, and may the token reach it?)",
        }.get(status, "")
        return DispatchError(f"GitHub answered {status}: {message}{hint}", transient=False)


class LocalDispatcher:
    """Runs DIR/<check-slug> with the environment a GitHub Action gives it: PAYLOAD and SERVICE_CATALOG_TOKEN.

    A batch runs the script once, like one Action run: it answers its results with
    `catalog answer --results FILE` (or reads them from the payload itself)."""

    def __init__(self, directory: str | Path, token: str = "", *, time_limit: float = DEFAULT_LOCAL_TIME_LIMIT):
        self.directory = Path(directory).resolve()
        if not self.directory.is_dir():
            raise ConfigError(f"local dispatcher directory {self.directory} does not exist")
        self._token = token
        self.time_limit = time_limit

    def capacity(self) -> None:
        return None  # one script at a time, on this machine: no budget

    def send(self, payload: Payload) -> None:
        script = self.directory / payload.event_type
        if not script.is_file():
            raise DispatchError(f"no check script {script}", transient=False)
        if not os.access(script, os.X_OK):
            raise DispatchError(f"check script {script} is not executable (chmod +x it)", transient=False)
        environment = {
            **os.environ,
            "PAYLOAD": payload.client_payload["data"],
            "SERVICE_CATALOG_TOKEN": self._token,
        }
        label = payload.label
        try:
            process = subprocess.Popen(  # a session of its own: the time limit kills what it started too
                [str(script)], cwd=self.directory, env=environment, start_new_session=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        except OSError as error:
            raise DispatchError(f"cannot run check script {script}: {error.strerror or error}", transient=False) from None
        # Started: that counts as sent, like GitHub's 204. The script answers the API itself.
        try:
            output, _ = process.communicate(timeout=self.time_limit)
        except subprocess.TimeoutExpired:
            output = _kill(process)
            log.warning("check script %s killed after %.0f s; output:\n%s", label, self.time_limit, _text(output))
            return
        if process.returncode == 0:  # the answer is in the access log and the store; output only on request
            log.debug("check script %s exited with 0; output:\n%s", label, _text(output))
        else:
            log.warning("check script %s exited with %s; output:\n%s", label, process.returncode, _text(output))


def _kill(process: subprocess.Popen) -> bytes:
    """Kill a script and every process of its session (a shell's `sleep`, `curl`: they hold its output
    open, so waiting for the output would wait for them); the output it wrote. A process that left the
    session and still holds the output is not waited for beyond a few seconds."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        output, _ = process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        process.stdout.close()  # type: ignore[union-attr]
        process.wait()
        output = b""
    return output or b""


class LogDispatcher:
    """Prints what would be sent, one JSON line per dispatch (with `data` decoded); counts as sent."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream

    def capacity(self) -> None:
        return None

    def send(self, payload: Payload) -> None:
        check_limits(payload)
        line = {
            "repository": payload.repository,
            "event_type": payload.event_type,
            "client_payload": {**payload.client_payload, "data": payload.data},
        }
        print(json.dumps(line, sort_keys=True), file=self.stream or sys.stdout, flush=True)


def dispatcher_from_settings(settings: Settings, *, clock: Clock | None = None, store=None) -> Dispatcher:
    """`github` (needs CATALOG_GITHUB_TOKEN or a GitHub App), `local:DIR` or `log`; ConfigError for
    anything else. With `store`, GitHub dispatches keep to CATALOG_GITHUB_BUDGET, counted there."""
    kind = settings.dispatcher
    if kind == "log":
        return LogDispatcher()
    if kind.startswith("local:"):
        directory = kind[len("local:"):]
        if not directory:
            raise ConfigError("the local dispatcher needs a directory: local:DIR")
        return LocalDispatcher(directory, local_token(settings))
    if kind == "github":
        budget = Budget.from_text(store, settings.github_budget, clock) if store is not None else None
        session = requests.Session()
        if settings.github_app_id or settings.github_app_private_key:
            if not (settings.github_app_id and settings.github_app_private_key):
                raise ConfigError("a GitHub App needs both CATALOG_GITHUB_APP_ID and CATALOG_GITHUB_APP_PRIVATE_KEY")
            credentials = AppCredentials(settings.github_api_url, settings.github_app_id,
                                         load_private_key(settings.github_app_private_key), session=session, clock=clock)
            return GitHubDispatcher(settings.github_api_url, credentials, session=session, clock=clock, budget=budget)
        if not settings.github_token:
            raise ConfigError(
                "CATALOG_GITHUB_TOKEN is not set: the github dispatcher needs a token or a GitHub App"
                " (CATALOG_GITHUB_APP_ID, CATALOG_GITHUB_APP_PRIVATE_KEY), or use --dispatcher log, or"
                " local:DIR to run checks on this machine"
            )
        return GitHubDispatcher(settings.github_api_url, settings.github_token, session=session, clock=clock, budget=budget)
    raise ConfigError(f"unknown dispatcher {kind!r}: use github, log or local:DIR")


def local_token(settings: Settings) -> str:
    """SERVICE_CATALOG_TOKEN from the environment, else $CATALOG_HOME/local-dispatcher.token, else empty."""
    token = os.environ.get("SERVICE_CATALOG_TOKEN")
    if token:
        return token
    path = Path(settings.home) / LOCAL_TOKEN_FILE
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _github_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "").strip()[:300] or "no message"
    if not isinstance(body, dict):
        return str(body)[:300]
    message = str(body.get("message") or "no message")
    errors = body.get("errors")
    if errors:
        message += ": " + "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)[:300]
    return message


def retry_after_seconds(response: requests.Response) -> float | None:
    """The seconds a response's Retry-After asks to wait, if it gives a number (GitHub's, the catalog's)."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _reset_seconds(response: requests.Response, clock: Clock) -> float | None:
    try:
        reset = float(response.headers["x-ratelimit-reset"])
    except (KeyError, ValueError):
        return None
    return max(0.0, reset - clock.now().astimezone(timezone.utc).timestamp())


def _text(output: bytes | None) -> str:
    return (output or b"").decode("utf-8", "replace")[-4000:].rstrip() or "(none)"
