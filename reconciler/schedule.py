"""The scheduler: what is due, the life of a result (created, sent, error, timed-out), and the loop.

A result is created `pending` before its dispatch and leased to the pass creating it, so nothing
else sends it meanwhile; `sent` once the dispatcher succeeds (only if still pending: the Action
may have answered already); `error` on a permanent failure; left pending with a backoff on a
transient one; `timed-out` when its check's timeout passes unanswered. A crash leaves pending rows
whose lease runs out: the next pass sends those same rows again, so no pair gets a second result
for one period. (A crash after GitHub's 204 but before `sent` is recorded sends that result
twice; the Action's second answer is then refused with 409, as the result is already finished.)

A check with `batch: N` sends up to N of its results in one dispatch: they are leased, sent and
marked together, and each keeps its own lease, retries and timeout, as a single result does.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from . import cron
from .clock import Clock, format_time
from .errors import Conflict, DispatchError, InvalidInput, NotFound
from .payload import build_batch_payload, build_payload
from .schema import FREQUENCY_PERIODS, format_duration
from .settings import Settings
from .store import Database

log = logging.getLogger("catalog.schedule")

CLAIM_SECONDS = 300  # a lease outlives any one send (GitHub's timeout, the local time limit)
RETRY_BASE_SECONDS = 30  # a transient failure without a hint: 30 s, 1 min, 2 min ... up to an hour
RETRY_MAX_SECONDS = 3600
STOP_AFTER_TRANSIENT = 3  # consecutive transient failures end a pass: the service is down, wait
# Created per pass at most: with one POST a second a pass takes ~8 minutes; the rest stay due
# and are created by the next passes, instead of waiting as pending rows that may time out.
MAX_PER_PASS = 500  # dispatches (with `batch: N`, N results each)
NEVER = "9999"  # a cutoff no result is created after: every targeted pair counts as due


LAST_PASS_KEY = "last_dispatch_pass"  # db.state: the figures of the newest scheduler pass


@dataclass
class PassReport:
    """What one pass did, by result id."""

    expired: list[int] = field(default_factory=list)
    created: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    deferred: list[tuple[int, str]] = field(default_factory=list)  # transient: still pending
    answered_first: list[int] = field(default_factory=list)  # the Action answered before `sent`
    unschedulable: list[tuple[str, str]] = field(default_factory=list)  # (check slug, why): skipped

    @property
    def dispatched(self) -> list[int]:
        return self.sent + self.answered_first

    @property
    def still_pending(self) -> list[int]:
        return [result_id for result_id, _ in self.deferred]

    def __str__(self) -> str:
        text = (
            f"{len(self.expired)} timed out, {len(self.created)} created, {len(self.retried)} retried,"
            f" {len(self.dispatched)} dispatched, {len(self.failed)} failed, {len(self.deferred)} still pending"
        )
        if self.unschedulable:
            text += "; skipped, as their schedule gives no time: " + "; ".join(
                f"{slug} ({why})" for slug, why in self.unschedulable
            )
        return text


# -- due computation ---------------------------------------------------------------------------


class Unschedulable(ValueError):
    """A stored check whose cron schedule gives no time (written under older rules): it is skipped."""


def check_cutoff(check: dict, now: datetime) -> str | None:
    """A pair of this check is due when its last result was created before this time; None: never.

    Unschedulable: the check's cron schedule has no time at or before now.
    """
    if not check["active"] or check["removed_at"] is not None:
        return None
    if check["schedule"]:
        # the newest scheduled time at or before now (croniter's start is exclusive, hence +1 s)
        last = cron.previous_time(check["schedule"], now.replace(microsecond=0) + timedelta(seconds=1))
        if last is None:
            raise Unschedulable(cron.schedule_problem(check["schedule"], now) or "it has no time at or before now")
        return format_time(last)
    period = FREQUENCY_PERIODS.get(check["frequency"])
    if period is None:
        return None  # ad-hoc: only on request
    # "created at least one period ago": created_at <= now - period, i.e. < now - period + 1 µs
    return format_time(now - period + timedelta(microseconds=1))


def due_cutoffs(
    checks: list[dict], now: datetime, *, unschedulable: list[tuple[str, str]] | None = None
) -> list[tuple[int, str]]:
    """(check_id, cutoff) of each check that runs by itself.

    An unschedulable check is logged, added to `unschedulable` as (slug, why) and left out: one bad
    row must never stop the pass for every other check.
    """
    cutoffs = []
    for check in checks:
        try:
            cutoff = check_cutoff(check, now)
        except Unschedulable as why:
            log.warning("check %s skipped: its schedule cannot be used: %s (fix %s)", check["slug"], why, check["path"])
            if unschedulable is not None:
                unschedulable.append((check["slug"], str(why)))
            continue
        if cutoff is not None:
            cutoffs.append((check["id"], cutoff))
    return cutoffs


def due_pairs(store: Database, now: datetime) -> list[tuple[int, int | None]]:
    """(check_id, service_id or None) of every pair due now; one query over the store."""
    due = store.dispatch.due(due_cutoffs(store.reads.checks(), now))
    return [(check_id, service_id) for check_id, service_ids in due for service_id in service_ids]


def expiry_limits(checks: list[dict], now: datetime) -> list[tuple[int, str, str]]:
    """[check_id, cutoff, message]: open results sent (or created) at or before cutoff have timed out."""
    return [
        (
            check["id"],
            format_time(now - timedelta(seconds=check["timeout_seconds"])),
            f"no answer within {format_duration(check['timeout_seconds'])} (the check's timeout)",
        )
        for check in checks
    ]


def expire_results(store: Database, now: datetime, *, dry_run: bool = False) -> list[int]:
    """Turn open results whose check's timeout has passed into `timed-out`; their ids."""
    limits = expiry_limits(store.reads.checks(include_removed=True), now)
    return store.dispatch.expire(limits, now=format_time(now), dry_run=dry_run)


# -- one pass ----------------------------------------------------------------------------------


def run_pass(
    store: Database,
    dispatcher,
    *,
    settings: Settings,
    clock: Clock | None = None,
    max_results: int = MAX_PER_PASS,
) -> PassReport:
    """Expire timed-out results, create and dispatch due pairs, then retry pending leftovers."""
    clock = clock or Clock()
    holder = new_lease_holder()
    report = PassReport()
    now = clock.now()
    checks = store.reads.checks(include_removed=True)
    report.expired = store.dispatch.expire(expiry_limits(checks, now), now=format_time(now))
    # Dispatches this pass may make: no more than the budget has room for now, so that results are
    # not created only to wait (and time out) as pending rows.
    capacity = getattr(dispatcher, "capacity", lambda: None)()
    dispatches = max_results if capacity is None else min(max_results, capacity)
    by_id = {c["id"]: c for c in checks}
    # Older results first: pending ones (deferred by a rate limit or a failure, a crash's leftovers),
    # then new due pairs in the room they leave. New work first starved them when the catalog did
    # not fit its budget: they timed out while newer results were sent.
    retries = _claim_retries(store, by_id, now, holder, dispatches)
    retries = _close_retired(store, retries, by_id, now, report)
    report.retried = [row["id"] for row in retries]
    created = store.dispatch.create_due(
        due_cutoffs(checks, now, unschedulable=report.unschedulable),
        now=format_time(now),
        revision=store.state.get("applied_revision"),
        claim_until=format_time(now + timedelta(seconds=CLAIM_SECONDS)),
        holder=holder,
        limit=dispatches - len(dispatch_units(retries, by_id)),
    )
    report.created = [row["id"] for row in created]
    _send_all(store, dispatcher, retries + created, by_id, settings, clock, holder, report)
    # what /metrics shows of the scheduler: counting due pairs on every scrape would cost a due query
    store.state.set({LAST_PASS_KEY: {
        "at": format_time(now), "due": len(created), "capped": len(created) >= max_results,
        "retried": len(report.retried), "sent": len(report.sent), "failed": len(report.failed),
        "deferred": len(report.deferred), "expired": len(report.expired),
    }})
    return report


def _close_retired(store: Database, rows: list[dict], checks: dict[int, dict], now, report: PassReport) -> list[dict]:
    """The leased pending rows still to send; the others are closed as `error` saying why: their check
    was removed or paused (`active: false`), or their service removed or made inactive, since they were
    made (a retry after a failure or a rate limit, a crash's leftover). They were sent all the same."""
    if not rows:
        return rows
    services = store.reads.services_by_id(sorted({row["service_id"] for row in rows if row["service_id"] is not None}))
    keep, closing = [], {}
    for row in rows:
        why = _why_not_sent(checks.get(row["check_id"]), services.get(row["service_id"]) if row["service_id"] else None)
        if why is None:
            keep.append(row)
        else:
            closing.setdefault(why, []).append(row["id"])
    for why, ids in closing.items():
        closed = store.dispatch.mark_failed_many(ids, why, now=format_time(now))
        report.failed.extend((result_id, why) for result_id in closed)
    return keep


def _why_not_sent(check: dict | None, service: dict | None) -> str | None:
    if check is None or check["removed_at"] is not None:
        return f"not sent: check {check['slug'] if check else '?'} was removed from the catalog before it was sent"
    if not check["active"]:
        return f"not sent: check {check['slug']} was paused (active: false) before it was sent"
    if service is not None and service["removed_at"] is not None:
        return f"not sent: service {service['slug']} was removed from the catalog before it was sent"
    if service is not None and not service["active"]:
        return f"not sent: service {service['slug']} was made inactive before it was sent"
    return None


def _claim_retries(store: Database, checks: dict[int, dict], now, holder: str, dispatches: int) -> list[dict]:
    """Lease the pending results due for another try, oldest first, as many as `dispatches` dispatches
    carry (a `batch: N` check's rows go N to a dispatch); those beyond stay claimable by the next pass."""
    # a pass killed with -9 holds its leases until they expire: free them now, not minutes later
    store.dispatch.release_leases(now=format_time(now), keep=holder_is_alive)
    if dispatches <= 0:
        return []
    largest = max((check.get("batch_size", 1) for check in checks.values()), default=1)
    claimed = store.dispatch.claim_pending(
        now=format_time(now), claim_until=format_time(now + timedelta(seconds=CLAIM_SECONDS)), holder=holder,
        limit=dispatches * largest,
    )
    units = dispatch_units(claimed, checks)
    if len(units) <= dispatches:
        return claimed
    store.dispatch.defer([row["id"] for unit in units[dispatches:] for row in unit], until=format_time(now), error=None)
    return [row for unit in units[:dispatches] for row in unit]


def run_check(
    store: Database,
    dispatcher,
    check_slug: str,
    service_slug: str | None = None,
    *,
    settings: Settings,
    clock: Clock | None = None,
) -> list[dict]:
    """Dispatch a check now on all its services, or on one; works for `ad-hoc` checks too.

    Returns the created results (with their `check` and `service` slugs) after their dispatch.
    NotFound: unknown or removed check or service. InvalidInput: an inactive check or service, or a
    service the check does not target. Conflict: every pair asked for already has a result pending
    or sent (one open result per pair; pairs that have one are skipped when others do not).
    """
    clock = clock or Clock()
    checks = store.reads.checks(include_removed=True)
    check = next((c for c in checks if c["slug"] == check_slug), None)
    if check is None:
        raise NotFound(f"check {check_slug!r} does not exist")
    if check["removed_at"] is not None:
        raise NotFound(f"check {check_slug!r} was removed from the catalog")
    if not check["active"]:
        raise InvalidInput(f"check {check_slug!r} is inactive (active: false in {check['path']})")
    targeted = {service for _, service in store.dispatch.targeted_pairs(check_ids=[check["id"]])}
    service_id = None
    if service_slug is not None:
        service = store.reads.service(service_slug)  # NotFound when unknown
        if service["removed_at"] is not None:
            raise NotFound(f"service {service_slug!r} was removed from the catalog")
        if check["target_kind"] == "none":
            raise InvalidInput(f"check {check_slug!r} runs without a service (services: none); leave out the service")
        if not service["active"]:
            raise InvalidInput(f"service {service_slug!r} is inactive (active: false)")
        if service["id"] not in targeted:
            raise InvalidInput(f"check {check_slug!r} does not target service {service_slug!r} (its services: {check['targets']})")
        service_id = service["id"]
    elif not targeted and check["target_kind"] != "none":
        raise InvalidInput(f"check {check_slug!r} targets no active service")
    now = clock.now()
    holder = new_lease_holder()
    created = store.dispatch.create_due(
        [(check["id"], NEVER)],
        now=format_time(now),
        revision=store.state.get("applied_revision"),
        claim_until=format_time(now + timedelta(seconds=CLAIM_SECONDS)),
        holder=holder,
        trigger="ad-hoc",
        service_id=service_id,
    )
    if not created:
        open_rows = store.dispatch.open_results(check["id"], service_id) if service_slug or check["target_kind"] == "none" else []
        which = f" on {service_slug!r}" if service_slug else ""
        detail = f" (result {open_rows[0]['id']} is {open_rows[0]['status']})" if open_rows else ""
        raise Conflict(
            f"check {check_slug!r}{which} is already running{detail}; it finishes when answered or timed out"
        )
    report = PassReport(created=[row["id"] for row in created])
    _send_all(store, dispatcher, created, {check["id"]: check}, settings, clock, holder, report)
    return [store.results.get(row["id"]) for row in created]


def _send_all(
    store: Database, dispatcher, rows: list[dict], checks: dict[int, dict], settings: Settings, clock: Clock,
    holder: str, report: PassReport,
) -> None:
    """Send leased rows, one dispatch per row or per batch of a check's rows (`batch: N`), one at a
    time; stop early (rows stay pending) when the dispatcher must wait."""
    if not rows:
        return
    config = store.state.get("catalog_config")
    services = store.reads.services_by_id([row["service_id"] for row in rows if row["service_id"] is not None])
    units = dispatch_units(rows, checks)
    transient_in_a_row = 0
    for index, unit in enumerate(units):
        claim_until = format_time(clock.now() + timedelta(seconds=CLAIM_SECONDS))
        check = checks.get(unit[0]["check_id"])
        if check.get("batch_size", 1) == 1:
            if not store.dispatch.renew_claim(unit[0]["id"], holder=holder, claim_until=claim_until):
                continue  # answered, expired, or taken over by another pass since we leased it
        else:
            ours = set(store.dispatch.renew_claims([row["id"] for row in unit], holder=holder, claim_until=claim_until))
            unit = [row for row in unit if row["id"] in ours]
            if not unit:
                continue
        ids = [row["id"] for row in unit]
        try:
            dispatcher.send(_unit_payload(store, unit, check, services, settings, config, clock))
        except DispatchError as error:
            if not error.transient:
                transient_in_a_row = 0
                failed = store.dispatch.mark_failed_many(ids, str(error), now=format_time(clock.now()))
                report.failed.extend((result_id, str(error)) for result_id in failed)
                continue
            transient_in_a_row += 1
            delay = error.retry_after if error.retry_after is not None else _retry_delay(unit[0].get("attempts", 0))
            until = format_time(clock.now() + timedelta(seconds=delay))
            store.dispatch.defer(ids, until=until, error=str(error))
            report.deferred.extend((result_id, str(error)) for result_id in ids)
            if error.retry_after is not None or transient_in_a_row >= STOP_AFTER_TRANSIENT:
                rest = [row["id"] for later in units[index + 1:] for row in later]
                if rest:
                    store.dispatch.defer(rest, until=until, error=None)
                    report.deferred.extend((result_id, f"not tried: {error}") for result_id in rest)
                log.warning("dispatch paused for %.0f s: %s (%d results wait)", delay, error, len(rest) + len(ids))
                return
            continue
        transient_in_a_row = 0
        sent = set(store.dispatch.mark_sent_many(ids, now=format_time(clock.now())))
        report.sent.extend(result_id for result_id in ids if result_id in sent)
        report.answered_first.extend(result_id for result_id in ids if result_id not in sent)


def dispatch_units(rows: list[dict], checks: dict[int, dict]) -> list[list[dict]]:
    """The dispatches leased rows make: one per row, or, for a check with `batch: N`, its rows in
    lists of at most N (id order)."""
    units: list[list[dict]] = []
    open_batch: dict[int, list[dict]] = {}
    for row in rows:
        size = checks[row["check_id"]].get("batch_size", 1)
        if size == 1:
            units.append([row])
            continue
        unit = open_batch.get(row["check_id"])
        if unit is None or len(unit) >= size:
            unit = open_batch[row["check_id"]] = []
            units.append(unit)
        unit.append(row)
    return units


def _unit_payload(store: Database, unit: list[dict], check: dict, services: dict, settings: Settings,
                  config: dict | None, clock: Clock):
    if check.get("batch_size", 1) == 1:
        row = unit[0]
        service = services.get(row["service_id"]) if row["service_id"] is not None else None
        return build_payload(row, check, service, server_url=settings.server_url,
                             catalog_repository=settings.repo, catalog_config=config)
    batch_id = store.dispatch.create_batch(check["id"], [row["id"] for row in unit], now=format_time(clock.now()))
    return build_batch_payload(batch_id, unit, check, services, server_url=settings.server_url,
                               catalog_repository=settings.repo, catalog_config=config)


def new_lease_holder() -> str:
    """Who holds a lease: host and process, so a restart can tell its dead predecessor's leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def holder_is_alive(holder: str) -> bool:
    """False only for a holder on this host whose process is gone; other hosts' leases just expire."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _retry_delay(attempts: int) -> float:
    return float(min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1)))


# -- the loop ----------------------------------------------------------------------------------


@dataclass
class _Entry:
    """A job of a Scheduler: its interval now (shorter while it fails), its own, and when it is next due."""

    name: str
    job: Callable[[], object]
    interval: float
    every: float
    due: float  # on the scheduler's monotonic clock


class Scheduler:
    """Runs registered periodic jobs until stopped, timed on the monotonic clock.

    Wall time is never read: the `schedule` library timed jobs on naive local time, so at a DST
    fall-back (or an NTP step back) every loop of `catalog up` stood still for the hour. A failing job
    is logged with its reason and retried with backoff (5 s, 10 s ... never more than its interval); it
    never stops the loop. `run()` stops cleanly on SIGINT/SIGTERM (when called from the main thread) or
    when `stop()` is called from any thread. `monotonic` is the clock (seconds, never going back).
    """

    def __init__(self, *, retry_base_seconds: float = 5.0, tick_seconds: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic):
        self._entries: list[_Entry] = []
        self._stopping = threading.Event()
        self._monotonic = monotonic
        self.retry_base_seconds = retry_base_seconds
        self.tick_seconds = tick_seconds
        self.failures: dict[str, int] = {}

    def every(self, seconds: float, name: str, job: Callable[[], object], *, run_now: bool = True) -> None:
        """Run `job` every `seconds` (first at once, unless `run_now` is False)."""
        self._entries.append(_Entry(name, job, seconds, seconds, self._monotonic() + (0.0 if run_now else seconds)))
        self.failures[name] = 0

    def run_pending(self) -> float | None:
        """Run the jobs due now, the longest due first, each next due its interval after it ended;
        the seconds until the next one is due (None: no job)."""
        for entry in sorted(self._entries, key=lambda entry: entry.due):
            if entry.due <= self._monotonic() and not self._stopping.is_set():
                self._guarded(entry)
                entry.due = self._monotonic() + entry.interval
        if not self._entries:
            return None
        return max(0.0, min(entry.due for entry in self._entries) - self._monotonic())

    def _guarded(self, entry: "_Entry") -> None:
        name = entry.name
        try:
            entry.job()
        except Exception as error:  # a failing job must never stop the loop
            self.failures[name] += 1
            entry.interval = min(entry.every, self.retry_base_seconds * 2 ** (self.failures[name] - 1))
            log.error("job %s failed (%s: %s); retrying in %.0f s", name, type(error).__name__, error, entry.interval)
        else:
            if self.failures[name]:
                log.info("job %s recovered after %d failures", name, self.failures[name])
            self.failures[name] = 0
            entry.interval = entry.every

    def run(self) -> None:
        """Run jobs as they fall due until `stop()` or SIGINT/SIGTERM."""
        previous = self._install_signal_handlers()
        try:
            while not self._stopping.is_set():
                idle = self.run_pending()
                self._stopping.wait(self.tick_seconds if idle is None else min(idle, self.tick_seconds))
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            log.info("scheduler stopped: %s", ", ".join(entry.name for entry in self._entries) or "no jobs")

    def stop(self) -> None:
        self._stopping.set()

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: self.stop())
        return previous
