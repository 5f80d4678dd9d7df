"""GET /metrics: Prometheus text format from prometheus-client, under the read rule.

Two sources, one registry per app (so two apps in one process, as tests make, never share counts):

- `HttpMetrics`: requests by method, route template and status, and a latency histogram, counted
  in Litestar's before-send hook (it sees every response, errors and unknown routes included).
- `CatalogCollector`: the store's figures, read at scrape time from maintained tables and indexed
  rows (`db.metrics`, `db.state`), never by counting the results table, so a scrape stays cheap
  at 1,000,000 results (bench/bench_metrics_export.py).

Figures other issues add plug in as collectors: `CatalogCollector.dispatch_budget` (the GitHub
budget left per window, rate-limit pauses and budget waits, from `db.budget`) and
`CatalogCollector.notification_backlog` (issue 14) are the named places.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Iterator

import anyio.to_thread
from litestar import MediaType, Response
from litestar.datastructures import State
from litestar.types import Message, Scope
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from api.auth import SECURITY, requires_read
from api.models import error_responses
from api.routing import get
from reconciler.budget import Budget, describe_window
from reconciler.clock import Clock, format_time, parse_time
from reconciler.errors import ConfigError
from reconciler.schedule import LAST_PASS_KEY
from reconciler.settings import Settings
from reconciler.store import Database

# Ages of open (pending or sent) results, in seconds: a result still open after hours is stuck
OPEN_AGE_BUCKETS = (("5m", 300), ("1h", 3600), ("6h", 6 * 3600), ("1d", 86400), ("7d", 7 * 86400))
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UNMATCHED_ROUTE = "unmatched"  # 404s: the raw path would give a label per URL anyone types


class HttpMetrics:
    """Requests and their latency by route template: a fixed, small set of label values."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter("catalog_http_requests", "HTTP requests answered",
                                ("method", "route", "status"), registry=registry)
        self.latency = Histogram("catalog_http_request_duration_seconds", "Time to answer an HTTP request",
                                 ("method", "route"), buckets=LATENCY_BUCKETS, registry=registry)
        # (method, route, status) -> the two children: `labels()` costs 2 µs a call, a tenth of a
        # PATCH's server time each (bench/bench_api.py); the keys are few (routes x statuses)
        self._children: dict[tuple, tuple] = {}

    async def before_send(self, message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start":
            scope.setdefault("state", {})["metrics_status"] = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            state = scope.get("state", {})
            key = (scope.get("method", "-"), scope.get("path_template") or UNMATCHED_ROUTE, state.get("metrics_status", 0))
            children = self._children.get(key)
            if children is None:
                method, route, status = key  # the route: set by Litestar's router
                children = self._children[key] = (self.requests.labels(method, route, str(status)),
                                                  self.latency.labels(method, route))
            children[0].inc()
            started = state.get("started_at")  # stamped by api.auth.AuthMiddleware for routed requests
            if started is not None:
                children[1].observe(time.perf_counter() - started)


class CatalogCollector:
    """The store's figures, read when Prometheus scrapes."""

    def __init__(self, store: Database, clock: Clock, budget: Budget | None = None):
        self.store, self.clock, self.budget = store, clock, budget

    def collect(self) -> Iterator[Metric]:
        now = self.clock.now()
        yield from self.results(now)
        yield from self.dispatch(now)
        yield from self.sync(now)
        yield from self.writeback(now)
        yield from self.dispatch_budget(now)
        yield from self.notification_backlog(now)

    def results(self, now: datetime) -> Iterator[Metric]:
        family = GaugeMetricFamily("catalog_results", "Results ever recorded, by status and outcome",
                                   labels=("status", "result"))
        for row in self.store.metrics.result_counts():
            family.add_metric((row["status"], row["result"]), row["count"])
        yield family
        cutoffs = [format_time(now - timedelta(seconds=seconds)) for _, seconds in OPEN_AGE_BUCKETS]
        *older, total = self.store.metrics.open_results_by_age(cutoffs)
        ages = GaugeMetricFamily("catalog_open_results", "Results pending or sent, by how long ago they were"
                                 " created (older_than: at least this old; all: every open result)",
                                 labels=("older_than",))
        ages.add_metric(("all",), total)
        for (name, _), count in zip(OPEN_AGE_BUCKETS, older):
            ages.add_metric((name,), count)
        yield ages

    def dispatch(self, now: datetime) -> Iterator[Metric]:
        last = self.store.state.get(LAST_PASS_KEY) or {}
        yield GaugeMetricFamily("catalog_due_pairs", "Pairs (check, service) found due by the last scheduler"
                                " pass (at most its per-pass limit)", value=last.get("due", 0))
        yield _timestamp("catalog_dispatch_last_pass_timestamp_seconds", "When the last scheduler pass ran",
                         last.get("at"))

    def sync(self, now: datetime) -> Iterator[Metric]:
        run = self.store.catalog.last_sync_run()
        checked = self.store.state.get("last_sync_check") or {}
        yield GaugeMetricFamily("catalog_sync_last_duration_seconds", "How long the last sync that planned took",
                                value=(run["duration_ms"] / 1000) if run else 0)
        outcome = GaugeMetricFamily("catalog_sync_last_outcome", "1 for the outcome of the last recorded sync"
                                    " (applied, refused, failed, or unchanged: reachable again after a failure)",
                                    labels=("outcome",))
        for name in ("applied", "refused", "failed", "unchanged"):
            outcome.add_metric((name,), 1 if run and run["outcome"] == name else 0)
        yield outcome
        yield _timestamp("catalog_sync_last_success_timestamp_seconds", "When a sync last applied a revision or"
                         " found it already applied", checked.get("at"))
        yield GaugeMetricFamily("catalog_sync_file_errors", "Catalog files whose current version has an error",
                                value=self.store.metrics.file_error_count())

    def writeback(self, now: datetime) -> Iterator[Metric]:
        oldest = self.store.metrics.oldest_unwritten()
        lag = max(0.0, (now - parse_time(oldest)).total_seconds()) if oldest else 0.0
        yield GaugeMetricFamily("catalog_writeback_lag_seconds", "Age of the oldest finished result not yet"
                                " written back to git (0: none waiting)", value=lag)

    def dispatch_budget(self, now: datetime) -> Iterator[Metric]:
        """The GitHub budget (CATALOG_GITHUB_BUDGET) shared in the store: room per window, GitHub's pause,
        and how often dispatching was paused or had to wait. Index range counts over a table pruned
        to the longest window, and one read of three state keys: no scan grows with the results."""
        if self.budget is None:  # CATALOG_GITHUB_BUDGET does not parse: the scheduler says so, loudly
            return
        limit = GaugeMetricFamily("catalog_dispatch_budget_limit", "Dispatches the budget allows per window",
                                  labels=("window",))
        left = GaugeMetricFamily("catalog_dispatch_budget_left", "Dispatches left in each window of the budget now",
                                 labels=("window",))
        for allowed, seconds, room in self.budget.left():
            window = describe_window(allowed, seconds)
            limit.add_metric((window,), allowed)
            left.add_metric((window,), room)
        yield limit
        yield left
        figures = self.store.budget.figures()
        paused = figures["paused_until"]
        yield GaugeMetricFamily("catalog_dispatch_paused_seconds", "Seconds left of a pause GitHub's rate limit"
                                " asked for (0: not paused)", value=max(0.0, paused - now.timestamp()) if paused else 0.0)
        yield CounterMetricFamily("catalog_dispatch_rate_limit_pauses", "Rate-limit answers from GitHub that paused"
                                  " dispatching", value=figures["pauses"])
        yield CounterMetricFamily("catalog_dispatch_budget_waits", "Dispatches that found the budget spent or paused"
                                  " and had to wait (or were deferred)", value=figures["waits"])

    def notification_backlog(self, now: datetime) -> Iterator[Metric]:
        """Notifications waiting: events not yet routed, deliveries pending / due / failed for good."""
        backlog = self.store.metrics.notification_backlog(format_time(now))
        yield GaugeMetricFamily("catalog_notification_events_waiting", "Events recorded but not yet handed to"
                                " the notification routes (the sender's outbox)", value=backlog["unrouted"])
        oldest = backlog["oldest_unrouted"]
        yield GaugeMetricFamily("catalog_notification_events_waiting_age_seconds", "Age of the oldest event not yet"
                                " handed to the routes (0: none waiting)",
                                value=max(0.0, (now - parse_time(oldest)).total_seconds()) if oldest else 0)
        deliveries = GaugeMetricFamily("catalog_notification_deliveries", "Deliveries to routes by state: pending"
                                       " (waiting for a send, a retry or a digest's window), due (pending and their"
                                       " time has come), failed (gave up after the last retry, ever)",
                                       labels=("state",))
        for state in ("pending", "due", "failed"):
            deliveries.add_metric((state,), backlog[state])
        yield deliveries
        due = backlog["oldest_due"]
        lag = (now - parse_time(due)).total_seconds() if due else 0.0
        yield GaugeMetricFamily("catalog_notification_delivery_lag_seconds", "How long the oldest pending delivery"
                                " has been due (0: none due)", value=max(0.0, lag))


def _timestamp(name: str, documentation: str, text: str | None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation + " (Unix time; 0: never)",
                             value=parse_time(text).timestamp() if text else 0)


def metrics_registry(store: Database, clock: Clock, settings: Settings) -> tuple[CollectorRegistry, HttpMetrics]:
    try:
        budget = Budget.from_text(store, settings.github_budget, clock)
    except ConfigError:
        budget = None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CatalogCollector(store, clock, budget))
    return registry, HttpMetrics(registry)


@get("/metrics", guards=[requires_read], tags=["operations"], security=SECURITY,
     summary="Prometheus metrics (text exposition format)", media_type=MediaType.TEXT,
     responses=error_responses(401, 403))
async def metrics(state: State) -> Response[bytes]:
    store: Database = state.store
    registry: CollectorRegistry = state.metrics_registry
    if store.reads_on_loop:
        body = generate_latest(registry)
    else:  # PostgreSQL: round trips stay off the event loop
        body = await anyio.to_thread.run_sync(generate_latest, registry)
    return Response(body, media_type=_MEDIA_TYPE)


_MEDIA_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")  # Litestar adds the charset to text/*
