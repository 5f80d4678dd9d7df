"""Scorecards, waivers and campaigns: which level each service holds, kept current.

A rubric is a scorecard (its levels, lowest first) or a campaign of checks (one level). A service
holds a level when every check of it and of the levels below is met (its latest finished result,
not stale, is one of `met_by`) or waived (until the end of the waiver's expiry day, UTC); a check
that does not target the service, or is removed or inactive, does not count.

Levels live in the store (`db.scorecards`, table scorecard_levels) and are kept current three ways:
`evaluate_all` after a sync applies (definitions, services or checks changed), `after_answers`
inside the transaction of each batch of answers (only the answered services), and `refresh_due`
from the leader's loop for rows whose `valid_until` passed (a result went stale, a waiver ended).
Each returns the `LevelChange`s it made: the one place a level is seen to change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable

from .clock import format_time, parse_time
from .staleness import stale_cutoff, stale_from

# What a counted check can be for a service; only the first two count towards a level
CHECK_STATES = ("met", "waived", "failing", "stale", "missing", "waiver-expired")
COUNTING = ("met", "waived")
CAMPAIGN_PREFIX = "campaign:"  # a campaign of checks is evaluated as a rubric of this key


@dataclass(frozen=True)
class Rubric:
    key: str  # the scorecard's slug, or campaign:SLUG
    name: str
    levels: tuple[tuple[str, tuple[str, ...]], ...]  # (name, check slugs), lowest first
    met_by: frozenset[str]
    services: Any  # which services it applies to, as written: "all", "none", [slugs] or a selector

    @property
    def checks(self) -> set[str]:
        return {check for _, checks in self.levels for check in checks}


@dataclass(frozen=True)
class Waiver:
    slug: str
    check: str
    reason: str
    owner: str | None
    expires: str  # YYYY-MM-DD, the last day it counts

    def counts_at(self, now: datetime) -> bool:
        return now < waiver_end(self.expires)


@dataclass(frozen=True)
class LevelChange:
    """A service's level of a rubric moved (notifications listen for these: `level-changed`)."""

    rubric: str
    service_id: int
    before: int | None  # None: not evaluated before
    after: int | None  # None: no longer applies


@dataclass
class Evaluation:
    level: int
    checks: dict[str, str]  # counted checks not plainly met -> state
    valid_until: str | None


def waiver_end(expires: str) -> datetime:
    """A waiver counts until the end of its expiry day, UTC."""
    return datetime.combine(date.fromisoformat(expires) + timedelta(days=1), time(), tzinfo=timezone.utc)


class Definitions:
    """The stored scorecards, waivers and campaigns, as evaluation and the pages use them."""

    def __init__(self, rows: Iterable[dict]):
        self.scorecards: dict[str, dict] = {}
        self.waivers: dict[str, dict] = {}
        self.campaigns: dict[str, dict] = {}
        for row in rows:
            if row["removed_at"] is None:
                body = json.loads(row["body"]) if isinstance(row["body"], str) else row["body"]
                body = {**body, "slug": row["slug"], "path": row["path"], "error": row["error"]}
                getattr(self, row["kind"] + "s")[row["slug"]] = body
        self.rubrics: dict[str, Rubric] = {}
        for slug, card in sorted(self.scorecards.items()):
            self.rubrics[slug] = Rubric(
                slug, card["name"], tuple((level["name"], tuple(level["checks"])) for level in card["levels"]),
                frozenset(card.get("met_by", ["pass"])), card.get("services", "all"),
            )
        for slug, campaign in sorted(self.campaigns.items()):
            if campaign.get("checks"):
                self.rubrics[CAMPAIGN_PREFIX + slug] = Rubric(
                    CAMPAIGN_PREFIX + slug, campaign["name"], (("met", tuple(campaign["checks"])),),
                    frozenset(["pass"]), campaign.get("services", "all"),
                )
        self.waived: dict[tuple[str, str], Waiver] = {}  # (check, service) -> the waiver ending last
        for slug, body in sorted(self.waivers.items()):
            waiver = Waiver(slug, body["check"], body["reason"], body.get("owner"), body["expires"])
            for service in body["services"]:
                held = self.waived.get((body["check"], service))
                if held is None or held.expires < waiver.expires:
                    self.waived[(body["check"], service)] = waiver
        self.rubric_checks = {check for rubric in self.rubrics.values() for check in rubric.checks}

    def level_names(self, key: str) -> list[str]:
        return [name for name, _ in self.rubrics[key].levels] if key in self.rubrics else []


def selects(targets: Any, service: dict) -> bool:
    """Whether `services:` as written (all, none, a list of slugs, a selector) selects an active
    service. The same rule as the due query's (store/dispatch.py); tests hold the two together."""
    if service["removed_at"] is not None or not service["active"]:
        return False
    if targets == "all":
        return True
    if targets == "none":
        return False
    if isinstance(targets, list):
        return service["slug"] in targets
    if "type" in targets and service["type"] != targets["type"]:
        return False
    if "owner" in targets and service["owner"] != targets["owner"]:
        return False
    if "max_priority" in targets and service["priority"] > targets["max_priority"]:
        return False
    tags = targets.get("tags")
    return not tags or set(tags) <= set(service["tags"])


def evaluate(rubric: Rubric, service: dict, latest: dict[str, tuple], checks: dict[str, dict],
             cutoffs: dict[str, str | None], waived: dict[tuple[str, str], Waiver], now: datetime) -> Evaluation:
    """One service's level of one rubric. `latest`: check slug -> (result, status, created_at) of its
    latest finished result; `checks`: live checks by slug (with their parsed `targets`)."""
    states: dict[str, str] = {}
    level, holding = 0, True
    oldest_met: dict[str, str] = {}  # check -> created_at of the met result (it goes stale first)
    ends: list[datetime] = []
    for _, level_checks in rubric.levels:
        met_all = True
        for slug in level_checks:
            check = checks.get(slug)
            if check is None or not check["active"] or not selects(check["targets"], service):
                continue  # does not target the service: does not count
            row = latest.get(slug)
            cutoff = cutoffs.get(slug)
            if row is not None and row[1] == "completed" and row[0] in rubric.met_by and not (cutoff and row[2] < cutoff):
                oldest_met[slug] = row[2]
                continue
            waiver = waived.get((slug, service["slug"]))
            if waiver is not None and waiver.counts_at(now):
                states[slug] = "waived"
                ends.append(waiver_end(waiver.expires))
                continue
            met_all = False
            if waiver is not None:
                states[slug] = "waiver-expired"
            elif row is None:
                states[slug] = "missing"
            elif row[1] == "completed" and row[0] in rubric.met_by:
                states[slug] = "stale"
            else:
                states[slug] = "failing"
        if holding and met_all:
            level += 1
        else:
            holding = False
    for slug, created in oldest_met.items():
        moment = stale_from(checks[slug], parse_time(created))
        if moment is not None:
            ends.append(moment)
    return Evaluation(level, states, format_time(min(ends)) if ends else None)


class Evaluator:
    """Definitions and live checks read once per applied revision (a process may keep one)."""

    def __init__(self, db):
        self.db = db
        self._revision: object = object()
        self.definitions = Definitions(())
        self.checks: dict[str, dict] = {}
        self.check_slugs: dict[int, str] = {}

    def current(self, session=None) -> "Evaluator":
        revision = self.db.scorecards.revision(session)
        if revision != self._revision:
            self.definitions = Definitions(self.db.scorecards.definitions(session))
            self.checks = {row["slug"]: row for row in self.db.scorecards.live_checks(session)}
            self.check_slugs = {row["id"]: slug for slug, row in self.checks.items()}
            self._revision = revision
        return self

    def evaluate_services(self, services: list[dict], latest: dict[int, dict[str, tuple]], now: datetime,
                          rubrics: Iterable[str] | None = None) -> dict[tuple[str, int], Evaluation]:
        """(rubric, service id) -> evaluation, for the rubrics that apply to each service."""
        cutoffs = {slug: stale_cutoff(check, now) for slug, check in self.checks.items()
                   if slug in self.definitions.rubric_checks}
        waived = self.definitions.waived
        wanted = [self.definitions.rubrics[key] for key in (rubrics if rubrics is not None else self.definitions.rubrics)
                  if key in self.definitions.rubrics]
        found = {}
        for service in services:
            mine = latest.get(service["id"], {})
            for rubric in wanted:
                if selects(rubric.services, service):
                    found[(rubric.key, service["id"])] = evaluate(rubric, service, mine, self.checks, cutoffs, waived, now)
        return found


def evaluate_all(db, now: datetime) -> list[LevelChange]:
    """Every service's level of every rubric, from the stored results (after a sync applies)."""
    evaluator = db.scorecards.evaluator.current()
    with db.transaction() as session:
        services, latest = db.scorecards.evaluation_inputs(session, evaluator.definitions.rubric_checks)
        found = evaluator.evaluate_services(services, latest, now)
        return db.scorecards.replace_levels(session, found, now, whole=True)


def after_answers(db, session, completed: Iterable[dict], now: datetime) -> list[LevelChange]:
    """The levels of the services just answered, in the answers' transaction (the PATCH hook)."""
    evaluator = db.scorecards.evaluator.current(session)
    rubric_checks = evaluator.definitions.rubric_checks
    if not rubric_checks:
        return []
    service_ids = {row["service_id"] for row in completed
                   if row["service_id"] is not None and evaluator.check_slugs.get(row["check_id"]) in rubric_checks}
    if not service_ids:
        return []
    services, latest = db.scorecards.evaluation_inputs(session, rubric_checks, sorted(service_ids))
    found = evaluator.evaluate_services(services, latest, now)
    return db.scorecards.replace_levels(session, found, now, service_ids=sorted(service_ids))


def refresh_due(db, now: datetime) -> list[LevelChange]:
    """Re-evaluate the services whose level may have changed with time alone (stale, waiver ended)."""
    evaluator = db.scorecards.evaluator.current()
    with db.transaction() as session:
        service_ids = db.scorecards.due_services(session, format_time(now))
        if not service_ids:
            return []
        services, latest = db.scorecards.evaluation_inputs(session, evaluator.definitions.rubric_checks, service_ids)
        found = evaluator.evaluate_services(services, latest, now)
        return db.scorecards.replace_levels(session, found, now, service_ids=service_ids)


def snapshot(db, now: datetime) -> bool:
    """Record today's level of every (rubric, service) and today's counts, once a day; True if it did."""
    day = now.astimezone(timezone.utc).strftime("%Y-%m-%d")
    if db.state.get("scorecard_snapshot_day") == day:
        return False
    db.scorecards.record_snapshot(day)
    db.state.set({"scorecard_snapshot_day": day})
    return True
