"""Scorecards, waivers and campaigns: which level each service holds, kept current.

A rubric is a scorecard (its levels, lowest first) or a campaign of checks (one level). A service
holds a level when every check of it and of the levels below is met (its latest finished result,
not stale, is one of `met_by`) or waived (until the end of the waiver's expiry day, UTC); a check
that does not target the service, or is removed or inactive, does not count.

Levels live in the store (`db.scorecards`, table scorecard_levels: per (rubric, service) the state
of every counted check and the level they give) and are kept current three ways: `evaluate_all`
after a sync applies (definitions, services or checks changed); `after_answers` inside the
transaction of each batch of answers, which changes only the answered check's state in the rows
that count it (no re-read of the service's results); and `refresh_due` from the leader's loop for
rows whose `valid_until` passed (a result went stale, a waiver ended). Each returns the
`LevelChange`s it made: the one place a level is seen to change.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Sequence

import msgspec

from .clock import format_time
from .events import Event
from .staleness import stale_cutoff, stale_from, stale_offset

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
    checks: dict[str, str]  # every counted check -> its state
    valid_until: str | None


# A row's `checks` as stored: keys sorted, no spaces, so one state gives one text (a row is rewritten
# only when its text changes). msgspec: five times quicker than json.dumps, which a first evaluation
# pays 30,000 times at 10,000 services (bench/bench_scorecards.py).
_STATES_ENCODER = msgspec.json.Encoder(order="sorted")
decode_states = msgspec.json.Decoder(dict[str, str]).decode


def encode_states(states: dict[str, str]) -> str:
    return _STATES_ENCODER.encode(states).decode()


def level_of(rubric: Rubric, states: dict[str, str]) -> int:
    """Levels held: consecutive levels, lowest first, whose counted checks are all met or waived."""
    level = 0
    for _, checks in rubric.levels:  # loops written out: the answer path runs this for each answer
        for check in checks:
            if states.get(check, "met") not in COUNTING:
                return level
        level += 1
    return level


def parse_stamp(text: str) -> datetime:
    """A stored time (`clock.TIME_FORMAT`); fromisoformat is ten times quicker than strptime."""
    return datetime.fromisoformat(text)


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
        self.rubrics_by_check: dict[str, list[Rubric]] = {}
        for rubric in self.rubrics.values():
            for check in sorted(rubric.checks):
                self.rubrics_by_check.setdefault(check, []).append(rubric)

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


def check_state(rubric: Rubric, check: dict, service_slug: str, row: tuple | None, cutoff: str | None,
                waived: dict[tuple[str, str], Waiver], now: datetime) -> str:
    """One counted check's state for a service: `row` is its latest finished (result, completed?, created_at)."""
    if row is not None and row[1] and row[0] in rubric.met_by and not (cutoff and row[2] < cutoff):
        return "met"
    waiver = waived.get((check["slug"], service_slug))
    if waiver is not None:
        return "waived" if waiver.counts_at(now) else "waiver-expired"
    if row is None:
        return "missing"
    return "stale" if row[1] and row[0] in rubric.met_by else "failing"


def evaluate(rubric: Rubric, plan: tuple, service: dict, latest: dict[int, tuple], hits: list[bool],
             waived: dict[tuple[str, str], Waiver], now: datetime, until_of: dict) -> Evaluation:
    """One service's level of one rubric. `plan`: the rubric's levels, each a tuple of (check slug,
    check id, index of its `services:` in `hits`, stale cutoff, live check); `hits`: whether each
    distinct `services:` selects this service; `latest`: check id -> (result, completed?, created_at, ...)
    of its latest finished result; `until_of`: a cache of stamps (results of one scheduler pass share one).

    The loop is written out (no helper per check on the usual path): a first evaluation runs it
    for every (service, rubric) pair, 50,000 times at 10,000 services (bench/bench_scorecards.py)."""
    met_by = rubric.met_by
    states: dict[str, str] = {}
    ends: list[str] = []
    oldest_by_offset: dict[timedelta, str] = {}  # checks going stale alike: only the oldest result matters
    level, holding = 0, True
    for level_checks in plan:
        complete = True
        for slug, check_id, target, cutoff, check in level_checks:
            if not hits[target]:
                continue  # does not target the service (or is removed, or paused): does not count
            row = latest.get(check_id)
            if row is not None and row[1] and row[0] in met_by and (not cutoff or row[2] >= cutoff):
                states[slug] = "met"
                offset = check["stale_offset"]
                if offset is not None:
                    if row[2] < oldest_by_offset.get(offset, "~"):
                        oldest_by_offset[offset] = row[2]
                else:
                    key = (slug, row[2])
                    until = until_of.get(key)
                    if until is None:
                        moment = stale_from(check, parse_stamp(row[2]))
                        until = until_of[key] = format_time(moment) if moment is not None else ""
                    if until:
                        ends.append(until)
                continue
            if waived and (slug, service["slug"]) in waived:
                state = states[slug] = check_state(rubric, check, service["slug"], row, cutoff, waived, now)
            else:  # check_state without a waiver, written out: most counted checks of a first evaluation come here
                states[slug] = state = "missing" if row is None else "stale" if row[1] and row[0] in met_by else "failing"
            if state == "waived":
                expires = waived[(slug, service["slug"])].expires
                until = until_of.get(expires)
                if until is None:
                    until = until_of[expires] = format_time(waiver_end(expires))
                ends.append(until)
            else:
                complete = False
        if holding and complete:
            level += 1
        else:
            holding = False
    for offset, created in oldest_by_offset.items():
        key = (offset, created)
        until = until_of.get(key)
        if until is None:
            until = until_of[key] = format_time(parse_stamp(created) + offset)
        ends.append(until)
    return Evaluation(level, states, min(ends) if ends else None)  # stamps of one width: text order is time order


class Evaluator:
    """Definitions and live checks read once per applied revision (a process may keep one)."""

    def __init__(self, db):
        self.db = db
        self._revision: object = object()
        self.definitions = Definitions(())
        self.checks: dict[str, dict] = {}
        self.check_slugs: dict[int, str] = {}
        self._cutoffs: tuple[int, dict[str, str | None]] = (-1, {})
        # (check, created_at) -> when a met result goes stale: answers to one scheduler pass share a
        # created_at (bench/bench_scorecards.py: the PATCH hook). Kept small; cleared with the checks.
        self._until_of: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def current(self, session=None) -> "Evaluator":
        """Itself, with the definitions and checks of the applied revision (re-read when it moved)."""
        revision = self.db.scorecards.revision(session)
        if revision != self._revision:
            with self._lock:  # request threads and the writer thread share it: one re-read at a time
                if revision != self._revision:
                    self._reload(revision, session)
        return self

    def _reload(self, revision, session) -> None:
        checks = {row["slug"]: row for row in self.db.scorecards.live_checks(session)}
        for check in checks.values():
            check["stale_offset"] = stale_offset(check)
        self.definitions = Definitions(self.db.scorecards.definitions(session))
        self.checks = checks
        self.check_slugs = {row["id"]: slug for slug, row in checks.items()}
        self._cutoffs = (-1, {})
        self._until_of = {}
        self._revision = revision  # last: another thread sees the new revision only once all is in place

    def cutoffs(self, now: datetime) -> dict[str, str | None]:
        """Each rubric check's stale cutoff at `now`, to the second (cron's are costly; answers come in hundreds a second)."""
        second = int(now.timestamp())
        if self._cutoffs[0] != second:
            self._cutoffs = (second, {slug: stale_cutoff(check, now) for slug, check in self.checks.items()
                                      if slug in self.definitions.rubric_checks})
        return self._cutoffs[1]

    def evaluate_services(self, services: list[dict], latest: dict[int, dict[int, tuple]], now: datetime,
                          rubrics: Iterable[str] | None = None) -> dict[tuple[str, int], Evaluation]:
        """(rubric, service id) -> evaluation, for the rubrics that apply to each service. What does not
        depend on the service is worked out once: each rubric's checks with their cutoffs, and the
        distinct `services:` of those checks (matched once per service, not once per check)."""
        cutoffs = self.cutoffs(now)
        waived = self.definitions.waived
        wanted = [self.definitions.rubrics[key] for key in (rubrics if rubrics is not None else self.definitions.rubrics)
                  if key in self.definitions.rubrics]
        targets: list = ["none"]  # a removed or paused check selects nothing, like `services: none`

        def target_of(check: dict | None) -> int:
            if check is None or not check["active"]:
                return 0
            if check["targets"] not in targets:
                targets.append(check["targets"])
            return targets.index(check["targets"])

        plans = [(rubric, tuple(tuple((slug, (self.checks.get(slug) or {}).get("id"), target_of(self.checks.get(slug)),
                                       cutoffs.get(slug), self.checks.get(slug)) for slug in level_checks)
                                for _, level_checks in rubric.levels))
                 for rubric in wanted]
        until_of: dict = {}
        found = {}
        for service in services:
            hits = [selects(target, service) for target in targets]
            mine = latest.get(service["id"], {})
            for rubric, plan in plans:
                if selects(rubric.services, service):
                    found[(rubric.key, service["id"])] = evaluate(rubric, plan, service, mine, hits, waived, now, until_of)
        return found

    def answered(self, stored: dict[tuple[str, int], tuple], answers: list[tuple[dict, str]], now: datetime
                 ) -> dict[tuple[str, int], Evaluation]:
        """The rows an answer changes: its check's new state in each stored row that counts the check.
        `stored`: (rubric, service id) -> (level, checks JSON, valid_until); `answers`: (completed row, check slug).
        A row whose state and valid_until stay as they were (pass after pass, the usual answer) is left out:
        nothing to write. The level is worked out again only when the state moved in or out of COUNTING."""
        cutoffs, waived = self.cutoffs(now), self.definitions.waived
        changed: dict[tuple[str, int], Evaluation] = {}
        for row, slug in answers:
            check = self.checks[slug]
            latest = (row["result"], row["status"] == "completed", row["created_at"])
            service_id, met_until = row["service_id"], None
            for rubric in self.definitions.rubrics_by_check[slug]:
                key = (rubric.key, service_id)
                evaluation = changed.get(key)
                if evaluation is None:
                    held = stored.get(key)
                    if held is None:
                        continue  # the rubric does not apply to the service
                    evaluation = Evaluation(held[0], decode_states(held[1]), held[2])
                before = evaluation.checks.get(slug)
                if before is None:
                    continue  # the check does not target the service
                state = check_state(rubric, check, row["service"], latest, cutoffs.get(slug), waived, now)
                until = evaluation.valid_until
                if state == "met":
                    if met_until is None:  # once per answer, whatever the rubrics counting its check
                        met_until = self._stale_at(check, slug, row["created_at"])
                    if met_until and (until is None or met_until < until):
                        until = met_until
                elif state == "waived":
                    ends = format_time(waiver_end(waived[(slug, row["service"])].expires))
                    if until is None or ends < until:
                        until = ends
                if state == before and until == evaluation.valid_until:
                    continue  # nothing a reader sees moves (may be early, never late: refresh_due re-evaluates)
                evaluation.checks[slug] = state
                evaluation.valid_until = until
                if (state in COUNTING) != (before in COUNTING):
                    evaluation.level = level_of(rubric, evaluation.checks)
                changed[key] = evaluation
        return changed

    def _stale_at(self, check: dict, slug: str, created_at: str) -> str:
        """When a met result of `check` created at `created_at` goes stale, as stored ("" for never)."""
        result_key = (slug, created_at)
        until = self._until_of.get(result_key)
        if until is None:
            if len(self._until_of) > 10_000:
                self._until_of.clear()
            moment = stale_from(check, parse_stamp(created_at))
            until = self._until_of[result_key] = format_time(moment) if moment else ""
        return until


def evaluate_all(db, now: datetime, *, services: Sequence[str] | None = None) -> list[LevelChange]:
    """Every service's level of every rubric, from the stored results (after a sync applies); with
    `services`, the levels of those slugs only (a sync that changed nothing but those services: a
    one-file change of a 100,000-service catalog must not read every service)."""
    evaluator = db.scorecards.evaluator.current()
    with db.transaction() as session:
        service_ids = None if services is None else db.scorecards.service_ids(session, services)
        if service_ids == []:
            return []
        # The level rows first, locked (PostgreSQL): an answer committing meanwhile is then in the
        # results read below, or it waits and applies its state to the rows written here.
        stored = db.scorecards.stored_levels(session, service_ids)
        if not evaluator.definitions.rubrics:  # none defined (any more): no service to read, rows to drop
            return db.scorecards.replace_levels(session, {}, now, stored=stored, drop_gone=True)
        inputs = db.scorecards.evaluation_inputs(session, evaluator.definitions.rubric_checks, service_ids)
        found = evaluator.evaluate_services(*inputs, now)
        changes = db.scorecards.replace_levels(session, found, now, stored=stored, drop_gone=True)
        record_level_events(db, session, evaluator, changes, now)
        return changes


def after_answers(db, session, completed: Iterable[dict], now: datetime) -> list[LevelChange]:
    """The PATCH hook, in the answers' transaction: each answered check's new state in the rows that
    count it, and the levels those give. Returns the level changes (for `level-changed` events)."""
    evaluator = db.scorecards.evaluator.current(session)
    rubric_checks = evaluator.definitions.rubric_checks
    if not rubric_checks:
        return []
    answers = [(row, slug) for row in completed
               if row["service_id"] is not None and (slug := evaluator.check_slugs.get(row["check_id"])) in rubric_checks]
    if not answers:
        return []
    by_check = evaluator.definitions.rubrics_by_check
    stored = db.scorecards.levels_of_pairs(
        session, {(rubric.key, row["service_id"]) for row, slug in answers for rubric in by_check[slug]})
    changed = evaluator.answered(stored, answers, now)
    if not changed:
        return []  # every state as it was: nothing to write
    changes = db.scorecards.replace_levels(session, changed, now, stored=stored, drop_gone=False)
    record_level_events(db, session, evaluator, changes, now)
    return changes


def refresh_due(db, now: datetime) -> list[LevelChange]:
    """Re-evaluate the services whose level may have changed with time alone (stale, waiver ended)."""
    evaluator = db.scorecards.evaluator.current()
    with db.transaction() as session:
        service_ids = db.scorecards.due_services(session, format_time(now))
        if not service_ids:
            return []
        stored = db.scorecards.stored_levels(session, service_ids)  # locked before the results are read
        services, latest = db.scorecards.evaluation_inputs(session, evaluator.definitions.rubric_checks, service_ids)
        found = evaluator.evaluate_services(services, latest, now)
        changes = db.scorecards.replace_levels(session, found, now, stored=stored, drop_gone=True)
        record_level_events(db, session, evaluator, changes, now)
        return changes


def record_level_events(db, session, evaluator: Evaluator, changes: list[LevelChange], now: datetime) -> int:
    """`level-changed` events for these changes, in the caller's transaction (the one that wrote the
    levels). A scorecard's level that moved between two levels reports; a first evaluation (no level
    before), a row that no longer applies, and a campaign of checks (`campaign:SLUG`) do not. Nothing is
    read when nothing changed: the answer path pays only when a level moves."""
    rubrics = evaluator.definitions.rubrics
    moved = [c for c in changes if c.before is not None and c.after is not None and c.before != c.after
             and c.rubric in rubrics and not c.rubric.startswith(CAMPAIGN_PREFIX)]
    if not moved:
        return 0
    owners = db.scorecards.service_owners(session, sorted({c.service_id for c in moved}))
    events = []
    for change in moved:
        slug, owner = owners.get(change.service_id, (None, None))
        if slug is None:
            continue
        rubric = rubrics[change.rubric]
        names = [name for name, _ in rubric.levels]
        before = names[change.before - 1] if 0 < change.before <= len(names) else None
        after = names[change.after - 1] if 0 < change.after <= len(names) else None
        verb = "rose" if change.after > change.before else "fell"
        events.append(Event(
            "level-changed", f"{slug}: {rubric.name} level {verb} from {before or 'no level'} to {after or 'no level'}",
            team=owner, service=slug,
            data={"scorecard": rubric.key, "scorecard_name": rubric.name, "level_before": before,
                  "level_after": after, "levels_before": change.before, "levels_after": change.after}))
    return db.events.emit(events, now=now)


def snapshot(db, now: datetime) -> bool:
    """Record today's level of every (rubric, service) and today's counts, once a day; True if it did."""
    day = now.astimezone(timezone.utc).strftime("%Y-%m-%d")
    if (db.state.get("scorecard_snapshot_day") or "") >= day:
        # today's is taken; an earlier day is history (a clock stepped back rewrote a recorded day)
        return False
    db.scorecards.record_snapshot(day)
    db.state.set({"scorecard_snapshot_day": day})
    return True
