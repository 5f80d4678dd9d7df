"""What the dashboard pages show, built from store rows: outcomes, staleness, the matrix, timelines."""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from markdown_it import MarkdownIt

from reconciler import cron
from reconciler.clock import format_time
from reconciler.outcomes import RESULT_VALUES, STATUSES
from reconciler.staleness import stale_cutoff  # noqa: F401  (pages, badges and tests import it from here)
from reconciler.store import Database

# Symbols so that colour is never the only signal; labels are what a screen reader says.
SYMBOLS = {
    "pass": "✓", "warning": "!", "fail": "✗", "error": "⚠", "skipped": "–",
    "pending": "…", "sent": "…", "timed-out": "◷", "none": "?",
}
LABELS = {
    "pass": "pass", "warning": "warning", "fail": "fail", "error": "error", "skipped": "skipped",
    "pending": "pending", "sent": "sent, waiting for the Action", "timed-out": "timed out", "none": "never run",
}
FAILING = {"fail", "error", "timed-out"}
RESULT_FILTERS = (*RESULT_VALUES, "unknown")
STATUS_FILTERS = STATUSES
_SAFE_LINK = re.compile(r"^(?:https?:|mailto:|[/#?.]|[^:]*$)", re.IGNORECASE)


def outcome(row: dict | None) -> str:
    """One word for a result row: its result once completed, else its status; `none` for no row."""
    if row is None:
        return "none"
    return row["result"] if row["status"] == "completed" else row["status"]


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False})
    # Only http(s), mailto and relative links: no javascript:, data:, vbscript:, file: ...
    md.validateLink = lambda url: bool(_SAFE_LINK.match(url.strip()))
    return md


_MD = _markdown()


def render_markdown(text: str | None) -> str:
    """Markdown to HTML with raw HTML escaped and links limited to safe schemes."""
    return _MD.render(text or "")


def safe_url(url: str | None) -> str | None:
    """A result's or repository's URL if it is http(s), else None (never a javascript: link)."""
    if url and re.match(r"^https?://", url.strip(), re.IGNORECASE):
        return url.strip()
    return None


def repository_url(repository: str | None) -> str | None:
    if not repository:
        return None
    return safe_url(repository) or f"https://github.com/{repository}"


def parse_stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def age(text: str | None, now: datetime) -> str:
    """`3 h ago`, `2 d ago`: how old a stored time is."""
    if not text:
        return "never"
    seconds = int((now - parse_stamp(text)).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def schedule_text(check: dict, now: datetime) -> str:
    if check["schedule"]:
        problem = cron.schedule_problem(check["schedule"], now)
        return f"cron {check['schedule']} (UTC)" + (f": not scheduled, {problem}" if problem else "")
    return "on request only (ad-hoc)" if check["frequency"] == "ad-hoc" else check["frequency"]


def targets_text(check: dict) -> str:
    kind = check["target_kind"]
    if kind == "all":
        return "all active services"
    if kind == "none":
        return "no service: one result per run, for the organisation"
    if kind == "list":
        return "listed services: " + ", ".join(check["targets"])
    parts = []
    if check["target_type"] is not None:
        parts.append(f"type {check['target_type']}")
    if check["target_owner"] is not None:
        parts.append(f"owner {check['target_owner']}")
    if check["target_tags"]:
        parts.append("tags " + ", ".join(check["target_tags"]))
    if check["target_max_priority"] is not None:
        parts.append(f"priority 1..{check['target_max_priority']}")
    return "services with " + " and ".join(parts)


@dataclass(slots=True)
class Cell:
    """One result shown in a table cell. A class, not a dict: Jinja reads attributes fastest."""

    key: str
    symbol: str
    title: str
    result_id: int | None = None
    stale: bool = False
    running: bool = False
    created_at: str | None = None
    finished_at: str | None = None


def cell(latest: dict | None, running: dict | None, cutoff: str | None, targeted: bool) -> Cell | None:
    """The latest finished result of a pair, flagged stale or running; None if not targeted."""
    if latest is None:
        if running is None:
            return _NEVER_RUN if targeted else None
        key = running["status"]
        return Cell(key, SYMBOLS[key], LABELS[key], running["id"])
    key = latest["result"] if latest["status"] == "completed" else latest["status"]
    stale = cutoff is not None and latest["created_at"] < cutoff
    title = LABELS[key] + (", stale" if stale else "") + (", a newer run is " + running["status"] if running else "")
    return Cell(key, SYMBOLS[key], title, latest["result_id"], stale, running is not None,
                latest["created_at"], latest["finished_at"])


_NEVER_RUN = Cell("none", SYMBOLS["none"], LABELS["none"])


def overall(cells: list[dict | None]) -> str:
    """`passing`, `N failing` or `unknown` over a service's cells (the badge's words)."""
    present = [c for c in cells if c is not None]
    failing = sum(1 for c in present if c.key in FAILING)
    if failing:
        return f"{failing} failing"
    if any(c.key in ("pass", "warning", "skipped") for c in present):
        return "passing"
    return "unknown"


# The header's totals scan every latest result (20,000 at 1,000 services x 20 checks): reused for a few
# seconds of the clock while the store's data version (sync run, newest result, open results) is the
# same, so a result or a sync shows at once and only the stale count can lag, by at most this long.
SUMMARY_SECONDS = 5
_summaries: weakref.WeakKeyDictionary[Database, dict] = weakref.WeakKeyDictionary()


def cached_summary(store: Database, version: tuple, key: tuple, now: datetime, compute: Any) -> tuple[Any, datetime]:
    """`compute()` and the time it describes, reused while the data `version` (`store.pages.version()`,
    read once per page) and `key` match and it is fresh."""
    entries = _summaries.setdefault(store, {})
    hit = entries.get(key)
    if hit is not None and hit[0] == version and timedelta(0) <= now - hit[1] < timedelta(seconds=SUMMARY_SECONDS):
        return hit[2], hit[1]
    if len(entries) > 100:  # filters come from the query string: keep the cache bounded
        entries.clear()
    value = compute()
    entries[key] = (version, now, value)
    return value, now


def facets(store: Database, version: tuple, now: datetime) -> dict[str, list[str]]:
    """The owners, types and tags in use (the filters' choices), through the summary cache."""
    return cached_summary(store, version, ("facets",), now, store.reads.facets)[0]


def matrix(
    store: Database, version: tuple, now: datetime, *,
    owner: str | None, type: str | None, tag: str | None, page: int, per_page: int,
) -> dict[str, Any]:
    """Services (rows, one page of them) against checks aimed at services (columns); totals over all rows."""
    # Only the shown page of services is read; the count and the totals are aggregates in SQL.
    service_count, page, shown = store.reads.services_page(
        owner=owner, type=type, tag=tag, page=page, per_page=per_page
    )
    all_checks = store.reads.checks(order="name")
    checks = [c for c in all_checks if c["target_kind"] != "none"]
    cutoffs = {c["id"]: stale_cutoff(c, now) for c in all_checks}
    pages = max(1, -(-service_count // per_page))
    ids = [s["id"] for s in shown]
    latest = store.pages.latest(service_ids=ids + [0])
    running = store.pages.open_runs(service_ids=ids + [0])
    targeted = store.dispatch.targeted_pairs(check_ids=[c["id"] for c in checks], service_ids=ids)
    rows = []
    for service in shown:
        sid = service["id"]
        cells = [
            cell(latest.get((c["id"], sid)), running.get((c["id"], sid)), cutoffs[c["id"]], (c["id"], sid) in targeted)
            for c in checks
        ]
        rows.append({"service": service, "cells": cells, "overall": overall(cells)})
    organisation = []
    for check in all_checks:
        if check["target_kind"] == "none":
            pair = (check["id"], 0)
            organisation.append(
                {"check": check, "cell": cell(latest.get(pair), running.get(pair), cutoffs[check["id"]], True)}
            )
    totals, totals_as_of = cached_summary(
        store, version, ("totals", owner, type, tag), now,
        lambda: store.pages.summary(cutoffs, owner=owner, type=type, tag=tag),
    )
    return {
        "rows": rows, "checks": checks, "organisation": organisation, "page": page, "pages": pages,
        "service_count": service_count, "totals": totals, "totals_as_of": format_time(totals_as_of),
    }


def service_cells(store: Database, service: dict, now: datetime) -> list[tuple[dict, Cell]]:
    """Each check that targets or has results for the service, with its cell (what its badge sums up)."""
    latest = store.pages.latest(service_ids=[service["id"]])
    running = store.pages.open_runs(service_ids=[service["id"]])
    targeted = store.dispatch.targeted_pairs(service_ids=[service["id"]])
    cells = []
    for check in store.reads.checks(order="name"):
        pair = (check["id"], service["id"])
        one = cell(latest.get(pair), running.get(pair), stale_cutoff(check, now), pair in targeted)
        if one is not None:
            cells.append((check, one))
    return cells


def service_checks(store: Database, service: dict, now: datetime) -> list[dict]:
    """The latest result of each check that targets or has results for the service, with its timeline."""
    timelines = store.pages.timelines(service["id"])
    return [{"check": check, "cell": one, "age": age(one.finished_at, now),
             "timeline": timeline(timelines.get(check["id"], []))} for check, one in service_cells(store, service, now)]


def timeline(history: list[dict]) -> dict:
    """An inline-SVG strip, one bar per finished result, oldest left; plus a text summary."""
    bars = []
    for index, row in enumerate(history):
        key = outcome(row)
        bars.append({
            "x": index * 10, "key": key, "id": row["id"],
            "title": f"#{row['id']} {LABELS[key]} {row['finished_at'][:16].replace('T', ' ')} UTC",
        })
    counts: dict[str, int] = {}
    for bar in bars:
        counts[bar["key"]] = counts.get(bar["key"], 0) + 1
    summary = ", ".join(f"{n} {LABELS[k]}" for k, n in counts.items()) or "no finished results yet"
    return {"bars": bars, "width": max(10, len(bars) * 10), "summary": f"last {len(bars)}: {summary}"}


def pass_rates(store: Database, check: dict, now: datetime, days: int = 30) -> list[dict]:
    """Per day of the last `days`: finished, passed and the pass rate in percent (None: no runs)."""
    since = (now - timedelta(days=days - 1)).strftime("%Y-%m-%d")
    by_day = {row["day"]: row for row in store.pages.pass_rates(check["id"], since)}
    out = []
    for offset in range(days):
        day = (now - timedelta(days=days - 1 - offset)).strftime("%Y-%m-%d")
        row = by_day.get(day)
        finished = row["finished"] if row else 0
        passed = row["passed"] if row else 0
        out.append({
            "day": day, "finished": finished, "passed": passed, "failed": row["failed"] if row else 0,
            "rate": round(100 * passed / finished) if finished else None, "x": offset * 12,
        })
    return out


def age_span(seconds: int) -> str:
    """A duration in the units people say: `30 min`, `6 h`, `1 d 12 h`."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")) if n]
    return " ".join(parts) or "0 s"
