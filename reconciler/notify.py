"""Notifications: hand new events to the routes of catalog.yaml `notifications:` and deliver them.

One pass (`notify_pass`, every CATALOG_NOTIFY_INTERVAL seconds in `catalog up`'s leader):

1. route: events in the outbox become one delivery per route that wants them (its `events:` and
   `services:`), due now, or at the end of the hour / day for a digest route; one transaction.
2. send: due deliveries become messages (one per event, or one per route and team for a digest)
   sent through the route's channel: Apprise for chat and mail, or a JSON POST signed like GitHub's
   (`X-Catalog-Signature-256: sha256=HMAC`). Each carries its event ids, so receivers drop repeats.
3. mark: delivered once the receiver said so; a failure is retried with backoff, and marked failed
   after the last attempt (shown by `catalog status` and the sync page).

A crash between send and mark sends again: at least once, never lost. URLs and secrets come only
from the environment variables a route names, and appear in no log, page, error or API answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping, Protocol

import requests

from .clock import Clock, format_time
from .schema import CatalogConfig, NotificationRoute, Selector
from .store import Database

log = logging.getLogger("catalog.notify")

DEFAULT_INTERVAL = 10.0  # CATALOG_NOTIFY_INTERVAL
SEND_TIMEOUT = 10.0  # seconds for one message: a slow receiver is a failed attempt, retried later
DIGEST_LINES = 50  # a digest's chat message lists this many events, then counts the rest
MARK_EVERY = 100  # sends between marks: a crash resends at most this many (and those in flight)
SEND_WORKERS = 4  # messages in flight at once (bench/bench_notify.py: Apprise opens a connection per message)
HELD = object()  # a lane's outcome for a message not sent: an earlier one of its pair failed in this pass
USER_AGENT = "service-catalog-notifications"
SIGNATURE_HEADER = "X-Catalog-Signature-256"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a delivery is retried: first after `first` seconds, doubling up to `cap`."""

    attempts: int = 8
    first: float = 10.0
    cap: float = 3600.0

    def delay(self, attempts_made: int) -> float:
        return min(self.cap, self.first * 2 ** max(0, attempts_made - 1))


class DeliveryFailed(Exception):
    """A message the receiver did not take; the text names no URL or secret."""


class Channel(Protocol):
    def send(self, message: "Message") -> None: ...


@dataclass
class Message:
    """What one send carries: one event, or a digest of one team's events for one route."""

    route: str
    events: list[dict]
    digest: str | None = None
    team: str | None = None
    server_url: str = ""

    @property
    def event_ids(self) -> list[int]:
        return [event["id"] for event in self.events]

    def title(self) -> str:
        if self.digest is None:
            return self.events[0]["summary"]
        return f"{len(self.events)} catalog events for {self.team or 'the catalog'} ({self.digest} digest)"

    def body(self) -> str:
        if self.digest is None:
            event = self.events[0]
            lines = [event["summary"], f"event {event['id']} ({event['type']}) at {event['created_at']}"]
            if self.server_url:
                lines.append(f"{self.server_url.rstrip('/')}/events/{event['id']}")
            return "\n".join(lines)
        lines = [f"#{event['id']} {event['type']}: {event['summary']}" for event in self.events[:DIGEST_LINES]]
        if len(self.events) > DIGEST_LINES:
            lines.append(f"... and {len(self.events) - DIGEST_LINES} more")
        if self.server_url:
            lines.append(f"All events: {self.server_url.rstrip('/')}/events")
        return "\n".join(lines)

    def as_json(self) -> bytes:
        if self.digest is None:
            document = _event_json(self.events[0])
        else:
            document = {"digest": self.digest, "team": self.team, "route": self.route,
                        "events": [_event_json(event) for event in self.events]}
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _event_json(event: dict) -> dict:
    return {key: event[key] for key in ("id", "type", "created_at", "team", "service", "check", "result_id",
                                        "outcome", "summary", "data")}


def sign(secret: str, body: bytes) -> str:
    """The value of X-Catalog-Signature-256, as GitHub signs webhooks: `sha256=` + HMAC-SHA256 hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel:
    """A JSON POST, signed; 2xx is delivered. Headers name the event(s) so receivers drop repeats."""

    def __init__(self, url: str, secret: str, *, session: requests.Session | None = None, timeout: float = SEND_TIMEOUT):
        self.url, self.secret, self.timeout = url, secret, timeout
        self.session = session or requests.Session()

    def send(self, message: Message) -> None:
        body = message.as_json()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, SIGNATURE_HEADER: sign(self.secret, body)}
        if message.digest:  # the ids are in the body: a header of 1,000s of them would pass proxies' limits
            headers["X-Catalog-Event"] = "digest"
        else:
            headers["X-Catalog-Event"] = message.events[0]["type"]
            headers["X-Catalog-Event-Id"] = str(message.events[0]["id"])
        try:
            response = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout,
                                         allow_redirects=False)
        except requests.Timeout:
            raise DeliveryFailed(f"the webhook did not answer within {self.timeout:g} s") from None
        except requests.RequestException as error:  # its text holds the URL: say only what kind it was
            raise DeliveryFailed(f"the webhook could not be reached ({type(error).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"the webhook answered HTTP {response.status_code}")


class AppriseChannel:
    """Chat and mail through Apprise (slack://, msteams://, mailto://, json://, ...)."""

    def __init__(self, plugin, *, timeout: float = SEND_TIMEOUT):
        self.plugin = plugin
        plugin.socket_connect_timeout = timeout
        plugin.socket_read_timeout = timeout

    @classmethod
    def from_url(cls, url: str, *, timeout: float = SEND_TIMEOUT) -> "AppriseChannel | None":
        import apprise

        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        return None if plugin is None else cls(plugin, timeout=timeout)

    def send(self, message: Message) -> None:
        import apprise

        with apprise.LogCapture(level=logging.WARNING) as captured:
            sent = self.plugin.notify(body=message.body(), title=message.title())
        if not sent:
            reason = " ".join(line.split(" - ", 2)[-1] for line in captured.getvalue().splitlines() if line.strip())
            raise DeliveryFailed(f"Apprise could not deliver it: {_without_host(reason) or 'no reason given'}")


def _without_host(text: str) -> str:
    """Apprise names the host it could not reach: a URL's parts are secrets here."""
    return re.sub(r"notification to \S+", "notification", text)[:500]


# Apprise's own log names hosts and, at debug level, whole URLs: keep it out of ours.
logging.getLogger("apprise").propagate = False


@dataclass
class Destination:
    """A route with its channel, or why it has none (an unset or unusable environment variable)."""

    route: NotificationRoute
    channel: Channel | None
    problem: str | None = None


def destinations(config: CatalogConfig, environ: Mapping[str, str], *, timeout: float = SEND_TIMEOUT,
                 session: requests.Session | None = None) -> dict[str, Destination]:
    """Each route by name, with a channel built from the environment variables it names."""
    found = {}
    session = session or requests.Session()
    for route in config.notifications:
        missing = [v for v in (route.url_env, route.webhook_env, route.secret_env) if v and not environ.get(v)]
        if missing:
            found[route.name] = Destination(route, None, f"environment variable {missing[0]} is not set")
        elif route.url_env:
            channel = AppriseChannel.from_url(environ[route.url_env], timeout=timeout)
            problem = None if channel else f"{route.url_env} does not hold a URL Apprise knows"
            found[route.name] = Destination(route, channel, problem)
        else:
            found[route.name] = Destination(route, WebhookChannel(
                environ[route.webhook_env], environ[route.secret_env], session=session, timeout=timeout))
    return found


def targets(route: NotificationRoute, event: dict) -> bool:
    """Does the route want this event? Its type in `events:`; its service selected by `services:` (a
    check's forms, on the service's current fields). An event without a service (a sync or write-back
    event) goes to `services: all` routes, and to a selector of only `owner` when its team matches."""
    if not route.wants(event["type"]):
        return False
    services = route.services
    if services == "all":
        return True
    if services == "none":
        return False
    if event["service"] is None or event.get("service_priority") is None:
        return isinstance(services, Selector) and services.owner is not None and services.type is None \
            and not services.tags and services.max_priority is None and event["team"] == services.owner
    if isinstance(services, list):
        return event["service"] in services
    return ((services.type is None or event["service_type"] == services.type)
            and (services.owner is None or event["service_owner"] == services.owner)
            and (services.max_priority is None or event["service_priority"] <= services.max_priority)
            and all(tag in event["service_tags"] for tag in services.tags or ()))


def window_end(now: datetime, digest: str) -> datetime:
    """When a digest that takes an event at `now` is sent: the next full hour, or the next midnight (UTC)."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    if digest == "hourly":
        return hour + timedelta(hours=1)
    return hour.replace(hour=0) + timedelta(days=1)


@dataclass
class NotifyReport:
    routed: int = 0  # events handed to routes
    deliveries: int = 0  # deliveries those made
    messages: int = 0  # messages sent
    delivered: int = 0  # deliveries they carried
    retried: int = 0
    failed: int = 0  # failed for good in this pass

    def __str__(self) -> str:
        return (f"{self.routed} events routed ({self.deliveries} deliveries), {self.messages} messages sent"
                f" ({self.delivered} deliveries), {self.retried} to retry, {self.failed} failed for good")


def notify_pass(store: Database, *, clock: Clock | None = None, environ: Mapping[str, str] | None = None,
                policy: RetryPolicy = RetryPolicy(), server_url: str = "", timeout: float = SEND_TIMEOUT,
                batch: int = 2000, workers: int = SEND_WORKERS,
                routes: dict[str, Destination] | None = None) -> NotifyReport:
    """Route the new events, then send every due delivery; see the module docstring."""
    clock = clock or Clock()
    report = NotifyReport()
    if routes is None:
        config = CatalogConfig.from_stored(store.state.get("catalog_config"))
        routes = destinations(config, os.environ if environ is None else environ, timeout=timeout)
    while True:
        events = store.events.unrouted(batch)
        if not events:
            break
        _route(store, events, routes, clock.now(), report)
        if len(events) < batch:
            break
    while True:
        due = store.events.due(now=clock.now(), limit=batch)
        if not due:
            break
        handled = _send(store, _in_order(store, due, routes, clock.now()), routes, clock, policy, server_url, report, workers)
        if len(due) < batch or not handled:
            break
    return report


def _order_key(route: str, row: dict, routes: dict[str, Destination]) -> tuple:
    """What keeps its order: a pair's messages on a route (`failing` before `recovered`), or a digest's."""
    destination = routes.get(route)
    if destination is not None and destination.route.digest != "none":
        return (route, row["team"])
    return (route, row["service"], row["check_slug"])


def _in_order(store: Database, due: list[dict], routes: dict[str, Destination], now: datetime) -> list[dict]:
    """The due deliveries in the order their events happened, less those behind an earlier delivery of
    the same pair and route that waits for a retry: a `recovered` sent before the `failing` it follows
    left receivers on the wrong state."""
    waiting: dict[tuple, int] = {}
    for row in store.events.retrying(now=now):
        key = _order_key(row["route"], row, routes)
        waiting[key] = min(waiting.get(key, row["delivery_id"]), row["delivery_id"])
    return [row for row in sorted(due, key=lambda row: row["delivery_id"])
            if row["delivery_id"] < waiting.get(_order_key(row["route"], row, routes), row["delivery_id"] + 1)]


def _route(store: Database, events: list[dict], routes: dict[str, Destination], now: datetime, report: NotifyReport) -> None:
    deliveries = []
    for event in events:
        for name, destination in routes.items():
            if targets(destination.route, event):
                digest = destination.route.digest
                due = now if digest == "none" else window_end(now, digest)
                deliveries.append((name, event["id"], event["team"], format_time(due)))
    store.events.route([event["id"] for event in events], deliveries)
    report.routed += len(events)
    report.deliveries += len(deliveries)


def _messages(due: list[dict], routes: dict[str, Destination], server_url: str) -> list[tuple[tuple, Message, list[int]]]:
    """Due deliveries as messages with the delivery ids each carries: a digest route's, one per team;
    each with its `_order_key`, what keeps the order of its messages."""
    messages: list[tuple[tuple, Message, list[int]]] = []
    folded: dict[tuple, tuple[tuple, Message, list[int]]] = {}
    for row in due:
        destination = routes.get(row["route"])
        event = {key: row[key] for key in ("id", "type", "created_at", "team", "service", "result_id", "outcome",
                                           "summary")}
        event["check"] = row["check_slug"]
        event["data"] = json.loads(row["data"]) if row["data"] else {}
        key = _order_key(row["route"], row, routes)
        digest = destination.route.digest if destination else "none"
        if digest == "none":
            messages.append((key, Message(row["route"], [event], server_url=server_url), [row["delivery_id"]]))
            continue
        if key not in folded:
            folded[key] = (key, Message(row["route"], [], digest=digest, team=row["team"], server_url=server_url), [])
            messages.append(folded[key])
        folded[key][1].events.append(event)
        folded[key][2].append(row["delivery_id"])
    return messages


def _send(store: Database, due: list[dict], routes: dict[str, Destination], clock: Clock, policy: RetryPolicy,
          server_url: str, report: NotifyReport, workers: int) -> int:
    """Send the messages in `workers` lanes at once (a receiver's round trip is most of a send), each
    message of one pair (or one digest) always in the same lane, so a pair's `failing` and `recovered`
    keep their order; after a failed send, the lane sends nothing more of that pair in this pass. Marks
    are written here, by this thread, as the lanes report. Returns how many deliveries it was given."""
    attempts = {row["delivery_id"]: row["attempts"] for row in due}
    lanes: list[list[tuple[Message, list[int]]]] = [[] for _ in range(workers)]
    for key, message, delivery_ids in _messages(due, routes, server_url):
        lanes[zlib.crc32("|".join(map(str, key)).encode()) % workers].append((key, message, delivery_ids))
    outcomes: queue.Queue = queue.Queue()

    def run_lane(lane: list[tuple[tuple, Message, list[int]]]) -> None:
        failed: set[tuple] = set()
        for key, message, delivery_ids in lane:
            if key in failed:  # behind a message of its pair that failed: waits for that one's retry
                outcomes.put((message.route, delivery_ids, HELD))
                continue
            destination = routes.get(message.route)
            try:
                if destination is None:
                    raise DeliveryFailed(f"route {message.route} is no longer in catalog.yaml")
                if destination.channel is None:
                    raise DeliveryFailed(destination.problem or "the route cannot send")
                destination.channel.send(message)
            except DeliveryFailed as failure:
                failed.add(key)
                outcomes.put((message.route, delivery_ids, str(failure)))
            except Exception as error:  # a channel's bug must not stop the other lanes: retried, its kind named
                failed.add(key)
                outcomes.put((message.route, delivery_ids, f"sending failed ({type(error).__name__})"))
            else:
                outcomes.put((message.route, delivery_ids, None))

    busy = [lane for lane in lanes if lane]
    expected = sum(len(lane) for lane in busy)
    sent: list[int] = []
    with ThreadPoolExecutor(max(1, len(busy)), thread_name_prefix="catalog-notify") as pool:
        for lane in busy:
            pool.submit(run_lane, lane)
        for _ in range(expected):
            route, delivery_ids, error = outcomes.get()
            if error is HELD:
                continue
            if error is not None:
                _retry(store, delivery_ids, error, attempts, clock, policy, report, route)
                continue
            sent += delivery_ids
            report.messages += 1
            if len(sent) >= MARK_EVERY:
                store.events.delivered(sent, now=clock.now())
                report.delivered += len(sent)
                sent = []
    if sent:
        store.events.delivered(sent, now=clock.now())
        report.delivered += len(sent)
    return len(due)


def _retry(store, delivery_ids, error, attempts, clock, policy, report, route) -> None:
    now = clock.now()
    made = attempts[delivery_ids[0]] + 1
    store.events.retry(delivery_ids, error=error, until=now + timedelta(seconds=policy.delay(made)), now=now,
                       max_attempts=policy.attempts)
    if made >= policy.attempts:
        report.failed += len(delivery_ids)
        log.warning("notification route %s: %d deliveries failed for good after %d attempts: %s",
                    route, len(delivery_ids), made, error)
    else:
        report.retried += len(delivery_ids)
        log.info("notification route %s: attempt %d failed (%s); retrying in %.0f s", route, made, error,
                 policy.delay(made))
