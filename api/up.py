"""`catalog up`: the API, the sync loop, the scheduler, the write-back and the notification loops in one process."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from reconciler import scorecard_events
from reconciler.clock import Clock
from reconciler.dispatch import LOCAL_TOKEN_FILE, dispatcher_from_settings
from reconciler.errors import DispatchError, NotFound
from reconciler.gitsource import source_from_settings
from reconciler.notify import DEFAULT_INTERVAL as NOTIFY_INTERVAL, notify_pass
from reconciler.reconcile import sync
from reconciler.schedule import Scheduler, run_pass
from reconciler.commands import open_store
from reconciler.settings import Settings
from reconciler.store import Database
from reconciler.tokens import create_token, revoke_token
from reconciler.writeback import writeback_pass

log = logging.getLogger("catalog.up")

LOCAL_TOKEN_NAME = "local-dispatcher"  # then the home's digest: local_token_name
# How long a stop waits for the loops' jobs in flight (a check script answering, a sync's transaction).
# Less than the local dispatcher's time limit (60 s): with uvicorn's own 10 s for open requests it
# fits in the 30 s an orchestrator gives (Kubernetes' default grace period) before it kills.
STOP_WAIT = 15.0
EXAMPLE_DIRECTORY = "catalog-repo-example"


@dataclass
class Intervals:
    """Seconds between passes of each loop; each also a CATALOG_*_INTERVAL environment variable."""

    sync: float = 60.0
    dispatch: float = 15.0
    writeback: float = 30.0
    notify: float = NOTIFY_INTERVAL
    leader: float = 5.0  # how often a follower tries the leader lock: takeover within this (and well inside 30 s)

    @classmethod
    def from_environment(cls) -> "Intervals":
        values = {}
        for name in ("sync", "dispatch", "writeback", "notify", "leader"):
            raw = os.environ.get(f"CATALOG_{name.upper()}_INTERVAL")
            if raw:
                try:
                    values[name] = float(raw)
                except ValueError:
                    from reconciler.errors import ConfigError

                    raise ConfigError(f"CATALOG_{name.upper()}_INTERVAL must be a number of seconds, not {raw!r}")
        return cls(**values)


def apply_embedded_defaults(settings: Settings, *, dispatcher_given: bool, public_read_given: bool, host: str) -> list[str]:
    """With no CATALOG_REPO: serve the example catalog, run its checks locally, public reads on loopback."""
    notes: list[str] = []
    if settings.repo:
        return notes
    example = find_example_catalog()
    if example is None:
        from reconciler.errors import ConfigError

        raise ConfigError(
            "no catalog repository: set CATALOG_REPO or pass --repo (a git URL or a local path);"
            f" the embedded example needs a checkout of this project ({EXAMPLE_DIRECTORY}/ not found)"
        )
    settings.repo = str(example)
    notes.append(f"catalog      {example} (the embedded example; set CATALOG_REPO for your own)")
    if not dispatcher_given:
        settings.dispatcher = f"local:{example / 'health-checks'}"
        notes.append(f"checks run   as local scripts in {example / 'health-checks'}")
    if not public_read_given and host in ("127.0.0.1", "localhost", "::1"):
        settings.public_read = True
        notes.append("reads        public on this loopback address (no token needed to look)")
    return notes


def find_example_catalog() -> Path | None:
    """catalog-repo-example in the working directory, or beside the installed project's source."""
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        candidate = base / EXAMPLE_DIRECTORY
        if (candidate / "services").is_dir():
            return candidate.resolve()
    return None


def local_token_name(settings: Settings) -> str:
    """The name of this home's local token: `local-dispatcher-` and 8 hex digits of the machine's name
    and the home's path. Replicas on one database each keep a token of their own (one shared name
    let each start revoke the others': their local checks' answers were refused)."""
    digest = hashlib.sha256(f"{socket.gethostname()}:{settings.home.resolve()}".encode()).hexdigest()
    return f"{LOCAL_TOKEN_NAME}-{digest[:8]}"


def ensure_local_token(store: Database, settings: Settings, clock: Clock) -> Path:
    """A results:write token for the local check scripts, in $CATALOG_HOME/local-dispatcher.token
    (0600): kept while it is live, else replaced (the old one of this home revoked, no other)."""
    path = settings.home / LOCAL_TOKEN_FILE
    if path.exists():
        from reconciler.tokens import verify_token

        if verify_token(store, path.read_text().strip(), now=clock.now()) is not None:
            return path
    name = local_token_name(settings)
    try:
        revoke_token(store, name, now=clock.now())
    except NotFound:
        pass
    secret = create_token(store, name, ["results:write"], now=clock.now())
    settings.home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return path


class Loops:
    """Sync, dispatch, write-back and notifications, each on its own Scheduler thread, in the leader only.

    Separate threads so a long dispatch pass (GitHub is paced at one POST a second) never holds up a
    webhook's sync or the write-back; the database lets them write in turn.

    Any number of `catalog up` processes may share one database; one at a time holds its leader
    lock (a PostgreSQL advisory lock, or a file lock beside a SQLite file) and runs the loops. The
    others serve the API and try the lock every `intervals.leader` seconds, so when the leader dies
    (its lock goes with its connection) one of them takes over. Leases and serialised dispatch keep
    a result from being sent twice even while two processes briefly both believe they lead.

    Only the leader thread starts and stops the loops. A process that loses the lock, or stops,
    sends no dispatch after that (`_WhileLeading`), so a pass in flight ends at its next send.
    """

    def __init__(self, store: Database, settings: Settings, intervals: Intervals, clock: Clock):
        self.store, self.settings, self.clock = store, settings, clock
        self.source = source_from_settings(settings)
        self._stopping = threading.Event()
        self.leading = False
        self.dispatcher = _WhileLeading(dispatcher_from_settings(settings, clock=clock, store=store), self.may_dispatch)
        self.intervals = intervals
        self.schedulers: dict[str, Scheduler] = {}
        self._sync_requested = threading.Event()
        self._dispatch_requested = threading.Event()
        self._follower_sync = threading.Lock()
        self.leader_lock = store.leader_lock()
        self.threads: list[threading.Thread] = []  # the leader-lock thread
        self._loop_threads: list[threading.Thread] = []  # the loops', while leading

    def sync(self) -> None:
        self._sync_requested.clear()
        report = sync(self.store, self.source, clock=self.clock)
        if report.outcome == "applied":
            log.info(
                "synced %s: %d created, %d updated, %d removed, %d file errors",
                report.revision, report.plan.count("create"), report.plan.count("update"),
                report.plan.count("remove"), len(report.errors),
            )
            for error in report.errors:
                log.warning("catalog file error: %s", error)
            for warning in report.plan.warnings:
                log.warning("catalog warning: %s", warning)
            self._dispatch_requested.set()  # new services and checks get their first run now

    def dispatch(self) -> None:
        self._dispatch_requested.clear()
        report = run_pass(self.store, self.dispatcher, settings=self.settings, clock=self.clock)
        if report.created or report.expired or report.retried or report.failed:  # idle passes say nothing
            log.info("dispatch pass: %s", report)

    def writeback(self) -> None:
        report = writeback_pass(self.store, self.settings, push=True, clock=self.clock)
        if report.commit:
            log.info("write-back: %s", "; ".join(report.lines()))
        for finding in report.findings:
            log.warning("write-back: %s", finding)

    def scorecards(self) -> None:
        """Levels that time alone changes (a result gone stale, a waiver past its day), and the day's snapshot."""
        changed, recorded = scorecard_events.time_pass(self.store, self.clock.now())
        if changed:
            log.info("scorecards: %d levels changed with time", changed)
        if recorded:
            log.info("scorecards: %d waiver or campaign events", recorded)

    def notify(self) -> None:
        report = notify_pass(self.store, clock=self.clock, server_url=self.settings.server_url)
        if report.routed or report.messages or report.retried or report.failed:  # idle passes say nothing
            log.info("notifications: %s", report)

    def request_sync(self) -> None:
        """Called by the webhook and POST /api/sync: the leader's sync thread syncs as soon as it is
        free; a follower syncs at once in a thread of its own (one at a time: a sync in progress
        reads the newest revision anyway). Applying is serialised in the database, so a follower's
        sync and the leader's never both apply one revision."""
        if self.leading:
            self._sync_requested.set()
        elif self._follower_sync.acquire(blocking=False):
            threading.Thread(target=self._sync_as_follower, name="catalog-requested-sync", daemon=True).start()

    def _sync_as_follower(self) -> None:
        try:
            self.sync()
        except Exception:  # recorded in sync_runs by the reconciler; the log says it too
            log.exception("requested sync failed")
        finally:
            self._follower_sync.release()

    def may_dispatch(self) -> bool:
        return self.leading and not self._stopping.is_set()

    def start(self) -> None:
        """Try the leader lock now and every `intervals.leader` seconds; run the loops while holding it."""
        if self._stopping.is_set():  # a stop signal came while the server started
            return
        thread = threading.Thread(target=self._lead, name="catalog-leader", daemon=True)
        thread.start()
        self.threads.append(thread)

    def _lead(self) -> None:
        told_following = False
        while not self._stopping.is_set():
            holds = self.leader_lock.acquire()
            if holds and not self.leading:
                log.info("leading: this process runs the sync, dispatch, write-back and notification loops")
                self.leading = True
                self._start_loops()
            elif not holds and self.leading:
                log.warning("lost the leader lock (database connection lost?): loops stopped until it is back")
                self.leading = False  # no dispatch from now on: another process may lead already
                self._stop_loops(wait=0)  # not waiting, so the lock is tried again on time
                told_following = False  # say so again when another process leads
            elif not holds and not told_following:
                log.info("following: another process leads; this one serves the API and takes over if it stops")
                told_following = True
            self._stopping.wait(self.intervals.leader)
        self.leading = False
        self._stop_loops(wait=STOP_WAIT)

    def _start_loops(self) -> None:
        # Loops told to stop when the lock was lost may still be finishing a job (bounded: no dispatch
        # is sent meanwhile): wait for them, so that one process never runs two passes of one loop.
        _join_all(self._loop_threads, STOP_WAIT)
        self.schedulers = {name: Scheduler() for name in ("sync", "dispatch", "writeback", "notify")}
        sync_loop, dispatch_loop, writeback_loop = (self.schedulers[n] for n in ("sync", "dispatch", "writeback"))
        sync_loop.every(self.intervals.sync, "sync", self.sync)
        sync_loop.every(1.0, "requested-sync", _when(self._sync_requested, self.sync), run_now=False)
        dispatch_loop.every(self.intervals.dispatch, "dispatch", self.dispatch, run_now=False)
        dispatch_loop.every(1.0, "requested-dispatch", _when(self._dispatch_requested, self.dispatch), run_now=False)
        dispatch_loop.every(self.intervals.dispatch, "scorecards", self.scorecards)
        writeback_loop.every(self.intervals.writeback, "writeback", self.writeback, run_now=False)
        self.schedulers["notify"].every(self.intervals.notify, "notify", self.notify)
        self._loop_threads = []
        for name, scheduler in self.schedulers.items():
            thread = threading.Thread(target=scheduler.run, name=f"catalog-{name}", daemon=True)
            thread.start()
            self._loop_threads.append(thread)

    def _stop_loops(self, *, wait: float) -> None:
        """Tell the loops to stop after their jobs in flight; wait at most `wait` seconds for those."""
        for scheduler in self.schedulers.values():
            scheduler.stop()
        _join_all(self._loop_threads, wait)

    def stop(self) -> None:
        """Let the jobs in flight finish (their transactions with them; at most STOP_WAIT seconds), then
        let go of the lock. A dispatch pass stops sending at once: its unsent results stay pending."""
        self._stopping.set()  # wakes the leader thread, which stops the loops and waits for them
        _join_all(self.threads, STOP_WAIT + 5)  # + the lock's own connection, which may be slow to answer
        self.leader_lock.release()


def _join_all(threads: list[threading.Thread], timeout: float) -> None:
    """Wait for every thread, `timeout` seconds at most in all."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


class _WhileLeading:
    """A dispatcher that sends only while this process leads and is not stopping; otherwise a transient
    failure, which ends the pass and leaves its unsent results pending (leased) for the leader."""

    def __init__(self, inner, may_dispatch):
        self.inner, self.may_dispatch = inner, may_dispatch

    def send(self, payload) -> None:
        if not self.may_dispatch():
            raise DispatchError("not leading (lost the lock, or stopping): left pending for the leader",
                                transient=True, retry_after=0)
        self.inner.send(payload)

    def capacity(self) -> int | None:
        return self.inner.capacity()


def _when(event: threading.Event, job):
    """A job that runs only when `event` was set (by a webhook, or by a sync that applied changes)."""

    def run_if_requested() -> None:
        if event.is_set():
            job()

    return run_if_requested


def up(settings: Settings, *, host: str, port: int, notes: list[str], intervals: Intervals | None = None) -> int:
    """Run everything until SIGINT/SIGTERM: the loops stop first (their jobs in flight answered by the
    API), then the server; a second signal stops at once."""
    from api.access import AccessLog
    from api.app import LOG_FORMAT, create_app, run_server, server_config, settle_heap
    from api.shutdown import GracefulServer
    from reconciler.logs import log_to_stderr

    log_to_stderr(LOG_FORMAT)
    clock = Clock()
    store = open_store(settings)
    intervals = intervals or Intervals.from_environment()
    token_note = ""
    if settings.dispatcher.startswith("local:") and not os.environ.get("SERVICE_CATALOG_TOKEN"):
        token_note = str(ensure_local_token(store, settings, clock))
    loops = Loops(store, settings, intervals, clock)
    app = create_app(store, settings, clock=clock, sync_trigger=loops.request_sync, access_log=AccessLog())
    server = GracefulServer(server_config(app, host=host, port=port), before_exit=loops.stop)
    server.install_signal_handlers()  # before the banner, which tells the user they may stop us

    base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    print(_banner(settings, store, base, notes, token_note), flush=True)
    threading.Thread(target=_start_when_serving, args=(server, loops), name="catalog-start", daemon=True).start()
    settle_heap()
    try:
        run_server(server, base)
    finally:
        if not server.force_exit:  # a second signal: stop at once, not waiting for the jobs again
            loops.stop()
        store.close()
    return 0


def _start_when_serving(server, loops: Loops) -> None:
    # The local check scripts PATCH the API: dispatching before it listens would waste a run.
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if server.started:
        loops.start()


def _banner(settings: Settings, store: Database, base: str, notes: list[str], token_file: str) -> str:
    from reconciler.logs import redact_credentials
    from reconciler.writeback import resolve_target

    lines = ["", "catalog up: everything in one process", ""]
    lines += [f"  dashboard    {base}/", f"  API          {base}/api/services   (OpenAPI: {base}/schema)"]
    lines += [f"  {note}" for note in notes]
    lines.append(f"  state        {settings.home.resolve()} ({store.describe()})")
    if token_file:
        lines.append(f"  token file   {Path(token_file).resolve()} (results:write, used by the local checks)")
    try:
        target = resolve_target(store, settings)
        lines.append(f"  write-back   {redact_credentials(target.url)} branch {target.branch}")
        if Path(target.url).is_absolute():
            lines.append(f"               see it with: git -C {target.url} log --stat {target.branch}")
        else:  # a remote: `git -C` takes a folder, and the URL may hold a credential
            lines.append(f"               see it with: git fetch origin {target.branch} && git log --stat origin/{target.branch}")
    except Exception as error:  # the banner never stops the start; the loop will report it
        lines.append(f"  write-back   not available yet ({redact_credentials(str(error))})")
    lines += ["", "  Stop with Ctrl-C.", ""]
    return "\n".join(lines)

