"""End-to-end helpers: a bare catalog remote, `catalog up` as a subprocess, and a stand-in Action."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests

from conftest import PROJECT, copy_example

CATALOG = shutil.which("catalog") or "catalog"

# The origin project's docs (health-checks.md, "Payload: data" and "Updating status"), verbatim but
# for one line: the docs index `payload`, which is still the base64 string there; the decoded object
# is `data`, so the URL is read from `data[...]`.
ACTION_SCRIPT = '''\
import os
import base64
import json

payload = os.getenv("PAYLOAD")
decoded = base64.b64decode(payload).decode('utf-8')
data = json.loads(decoded)
print("Received payload of:", data)

import requests

url = data["server"]["url"] + data["server"]["endpoint"]  # the docs write payload[...]: see above
token = os.getenv("SERVICE_CATALOG_TOKEN")
headers = {"Authorization": f"Token {token}"}

data = {"result": "pass"} # Set the health check to pass
res = requests.patch(url, data, headers=headers)
print("Response", res.status_code)
'''


# GitHub asks for one dispatch a second, and the dispatcher obeys, so every (check, service) pair
# costs a second. The end-to-end remotes are the example catalog without its three busiest checks:
# 6 pairs (readme-present on the 5 web services, github-org-audit once) instead of 28.
DROPPED_CHECKS = ("has-owner", "log4j-vulnerability", "oncall-configured")
INITIAL_PAIRS = 6


def clean_environment() -> dict[str, str]:
    """This process's environment without any catalog setting a developer may have exported."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CATALOG_") and k != "SERVICE_CATALOG_TOKEN"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 20.0, interval: float = 0.2):
    """Poll until `predicate()` is truthy and return its value; AssertionError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (requests.RequestException, ValueError, KeyError) as error:
            last_error = error
        time.sleep(interval)
    detail = f" (last error: {last_error!r})" if last_error else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")


# -- git -------------------------------------------------------------------------------------------

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@example.test",
    "GIT_COMMITTER_NAME": "Test Author", "GIT_COMMITTER_EMAIL": "author@example.test",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
}


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV}, timeout=30,
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result.stdout


class CatalogRemote:
    """A bare repository (the catalog's 'GitHub') and a working clone that commits and pushes to it."""

    def __init__(self, root: Path, *, drop_checks: tuple[str, ...] = ()):
        self.bare = root / "catalog.git"
        self.work = root / "work"
        git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare), cwd=root)
        copy_example(self.work, ignore=("health-checks",))
        for slug in drop_checks:
            (self.work / "checks" / f"{slug}.yaml").unlink()
        if drop_checks:  # the example's scorecard, waiver and campaign name the dropped checks
            for folder in ("scorecards", "waivers", "campaigns"):
                shutil.rmtree(self.work / folder)
        git("init", "--quiet", "--initial-branch=main", cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)
        self.commit_and_push("Seed the catalog from catalog-repo-example")

    def commit_and_push(self, message: str, changes: dict[str, str | None] | None = None) -> str:
        """Write (text) or delete (None) files, commit them all, push main; the new sha."""
        for path, text in (changes or {}).items():
            target = self.work / path
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        git("add", "--all", cwd=self.work)
        git("commit", "--quiet", "-m", message, cwd=self.work)
        git("push", "--quiet", "origin", "main", cwd=self.work)
        return self.head()

    def head(self, branch: str = "main") -> str:
        return git("rev-parse", branch, cwd=self.bare).strip()

    def log(self, branch: str) -> list[str]:
        """Commit subjects on `branch` of the bare remote, newest first; [] when it does not exist."""
        if not git("branch", "--list", branch, cwd=self.bare).strip():
            return []
        return git("log", "--format=%s", branch, cwd=self.bare).splitlines()


def history_ids(bare: Path, branch: str = "catalog-results", root: str = "results/") -> list[int]:
    """Every result id in the write-back history files on `branch`, in file order (duplicates kept)."""
    try:
        if not git("branch", "--list", branch, cwd=bare).strip():
            return []
    except AssertionError:
        return []  # not (yet) a repository: the first write-back pass creates it
    names = git("ls-tree", "-r", "--name-only", branch, "--", f"{root}history", cwd=bare).split()
    ids = []
    for name in sorted(names):
        for line in git("show", f"{branch}:{name}", cwd=bare).splitlines():
            if line.strip():
                ids.append(json.loads(line)["id"])
    return ids


def push_webhook(base: str, secret: str, *, ref: str = "refs/heads/main", after: str = "", signature: str | None = None,
                 delivery: str | None = None) -> requests.Response:
    """GitHub's push webhook, signed with X-Hub-Signature-256 unless a signature is given."""
    body = json.dumps({"ref": ref, "after": after, "repository": {"default_branch": "main"}}).encode()
    if signature is None:
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json", "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery or os.urandom(8).hex(), "X-Hub-Signature-256": signature,
    }
    return requests.post(f"{base}/webhooks/github", data=body, headers=headers, timeout=10)


# -- the Action ----------------------------------------------------------------------------------


@dataclass
class ActionRun:
    result_id: int
    returncode: int
    output: str


class ActionPlayer:
    """Plays GitHub Actions for the stand-in: each dispatch runs ACTION_SCRIPT in a subprocess.

    GitHub answers the dispatch at once and runs the workflow later, so runs are queued and made by
    worker threads. A run that fails (the catalog unreachable) is re-run after a pause, as a person
    would press "Re-run failed jobs", until `rerun_for` seconds have passed. `hold()` queues runs
    without starting them until `release()`.
    """

    def __init__(self, script_dir: Path, token: str, *, workers: int = 2, rerun_for: float = 60.0):
        self.script = script_dir / "calculate-result.py"
        self.script.write_text(ACTION_SCRIPT)
        self.token = token
        self.rerun_for = rerun_for
        self.runs: list[ActionRun] = []
        self._queue: queue.Queue = queue.Queue()
        self._open = threading.Event()
        self._open.set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._busy = 0
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"action-{i}") for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def on_dispatch(self, request) -> None:
        """The stand-in's hook: queue a run of the Action with the dispatch's `data`; GitHub answers 204."""
        self._queue.put(request.body["client_payload"]["data"])
        return None

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def idle(self) -> bool:
        with self._lock:
            return self._queue.empty() and self._busy == 0

    def answered(self) -> dict[int, list[int]]:
        """Result id -> the HTTP statuses its successful runs printed."""
        out: dict[int, list[int]] = {}
        for run in list(self.runs):
            if run.returncode == 0:
                status = int(run.output.rsplit("Response", 1)[1].split()[0])
                out.setdefault(run.result_id, []).append(status)
        return out

    def stop(self) -> None:
        self._stopping.set()
        self._open.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(10)

    def _work(self) -> None:
        while True:
            data = self._queue.get()
            if data is None or self._stopping.is_set():
                return
            with self._lock:
                self._busy += 1
            try:
                self._open.wait()
                self._run(data)
            finally:
                with self._lock:
                    self._busy -= 1

    def _run(self, data: str) -> None:
        result_id = int(json.loads(base64.b64decode(data))["result"]["id"])
        environment = {**os.environ, "PAYLOAD": data, "SERVICE_CATALOG_TOKEN": self.token}
        deadline = time.monotonic() + self.rerun_for
        while not self._stopping.is_set():
            done = subprocess.run([sys.executable, str(self.script)], env=environment, capture_output=True,
                                  text=True, timeout=60)
            self.runs.append(ActionRun(result_id, done.returncode, done.stdout + done.stderr))
            if done.returncode == 0 or time.monotonic() > deadline:
                return
            self._stopping.wait(0.5)


# -- catalog up ----------------------------------------------------------------------------------


class UpProcess:
    """`catalog up` as a real subprocess on a loopback port, its output in a log file."""

    def __init__(self, home: Path, env: dict[str, str], *, cwd: Path = PROJECT, port: int | None = None, name: str = "up"):
        self.home = home
        self.env = env
        self.cwd = cwd
        self.port = port or free_port()
        self.log_path = home.parent / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> "UpProcess":
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")
        log.write(f"\n===== catalog up --port {self.port} started =====\n")
        log.flush()
        environment = clean_environment()
        environment.update({"CATALOG_HOME": str(self.home), "PYTHONUNBUFFERED": "1", **self.env})
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [CATALOG, "up", "--port", str(self.port)], cwd=self.cwd, env=environment,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        if wait:
            wait_for(self.healthy, f"catalog up to answer /healthz on {self.base}", timeout=30)
        return self

    def healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"catalog up exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            return requests.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def get(self, path: str, **params) -> dict:
        response = requests.get(f"{self.base}{path}", params=params, timeout=10)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    def results(self, **filters) -> list[dict]:
        return self.get("/api/results", **{"limit": 1000, **filters})["results"]

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float) -> int:
        """SIGTERM and the exit code; AssertionError if it takes longer than `timeout` seconds."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"catalog up still running {timeout} s after SIGTERM:\n{self.log_tail()}") from None

    def stop(self) -> None:
        """Always leaves no process behind: SIGTERM, then SIGKILL of the whole session."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def create_token(home: Path, name: str, *scopes: str, database_url: str | None = None) -> str:
    """`catalog token create NAME --scope ...` with CATALOG_HOME=home (and the database, if not the
    home's SQLite file): the token printed alone on stdout."""
    arguments = [CATALOG, "token", "create", name]
    for scope in scopes:
        arguments += ["--scope", scope]
    environment = {**clean_environment(), "CATALOG_HOME": str(home)}
    if database_url:
        environment["CATALOG_DATABASE_URL"] = database_url
    done = subprocess.run(arguments, env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# A check script that says when it starts (a file named for its result), takes CHECK_SECONDS, then
# answers `pass` to the API that ran it, as the example's scripts do.
SLOW_CHECK = '''#!/usr/bin/env python3
import base64, json, os, time, urllib.parse, urllib.request

data = json.loads(base64.b64decode(os.environ["PAYLOAD"]))
marks = os.environ["CHECK_MARKS"]
open(os.path.join(marks, f"{data['result']['id']}.started"), "w").close()
time.sleep(float(os.environ["CHECK_SECONDS"]))
request = urllib.request.Request(
    data["server"]["url"] + data["server"]["endpoint"], data=urllib.parse.urlencode({"result": "pass"}).encode(),
    method="PATCH", headers={"Authorization": "Token " + os.environ["SERVICE_CATALOG_TOKEN"]},
)
urllib.request.urlopen(request, timeout=10)
'''


def slow_checks(folder: Path) -> Path:
    """The remote's two checks as SLOW_CHECK scripts; the folder for `local:`."""
    folder.mkdir()
    for slug in ("readme-present", "github-org-audit"):
        (folder / slug).write_text(SLOW_CHECK)
        (folder / slug).chmod(0o755)
    return folder


def local_up(root: Path, database_url: str, *, check_seconds: float, **env: str) -> UpProcess:
    """`catalog up` on a catalog remote, its checks run by `local:` slow_checks, more settings in
    `env`; not started."""
    remote = CatalogRemote(root, drop_checks=DROPPED_CHECKS)
    (root / "marks").mkdir()
    return UpProcess(root / "home", {
        "CATALOG_DATABASE_URL": database_url,
        "CATALOG_REPO": str(remote.bare),
        "CATALOG_DISPATCHER": f"local:{slow_checks(root / 'checks')}",
        "CATALOG_SYNC_INTERVAL": "3600",
        "CATALOG_DISPATCH_INTERVAL": "1",
        "CATALOG_WRITEBACK_INTERVAL": "3600",  # no write-back: what is tested is the dispatch in flight
        "CHECK_MARKS": str(root / "marks"),
        "CHECK_SECONDS": str(check_seconds),
        **env,
    })


def started_checks(up: UpProcess) -> list[int]:
    return sorted(int(mark.stem) for mark in (up.home.parent / "marks").glob("*.started"))
