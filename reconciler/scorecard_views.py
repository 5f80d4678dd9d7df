"""What the API, the pages, the CLI and the write-back show of scorecards, teams and campaigns.

Everything here reads the maintained levels (`db.scorecards`); nothing re-evaluates a service.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import NotFound
from .outcomes import NO_LEVEL
from .scorecards import CAMPAIGN_PREFIX, Definitions, selects, waiver_end

TREND_DAYS = 365
EXPIRING_DAYS = 30  # a team page lists the waivers ending within this many days


def definitions(db) -> Definitions:
    return db.scorecards.evaluator.current().definitions


def level_name(names: list[str], level: int | None) -> str | None:
    """Level 0 (none held) is None; level n is the n-th name."""
    return names[level - 1] if level else None


def _card_head(slug: str, card: dict) -> dict:
    return {
        "slug": slug, "name": card["name"], "description": card.get("description"), "path": card["path"],
        "error": card["error"], "services_selector": card.get("services", "all"),
        "levels": [{"name": level["name"], "checks": level["checks"]} for level in card["levels"]],
        "met_by": card.get("met_by", ["pass"]),
    }


def _by_level(names: list[str], counts: dict[int, int]) -> dict[str, int]:
    """{"none": n, "Bronze": n, ...}: every level, lowest first, zero when no service holds it."""
    return {NO_LEVEL: counts.get(0, 0), **{name: counts.get(i + 1, 0) for i, name in enumerate(names)}}


def scorecard_summaries(db) -> list[dict]:
    """Every scorecard with how many services hold each level (highest level held counts)."""
    found = definitions(db)
    counts: dict[str, dict[int, int]] = {}
    for rubric, level, services in db.scorecards.level_counts():
        counts.setdefault(rubric, {})[level] = services
    summaries = []
    for slug, card in sorted(found.scorecards.items()):
        names = found.level_names(slug)
        mine = counts.get(slug, {})
        summaries.append({**_card_head(slug, card), "services": sum(mine.values()), "by_level": _by_level(names, mine)})
    return summaries


def holding_back(checks: dict[str, str]) -> dict[str, str]:
    """The counted checks not plainly met (waived ones included: they show with their reason)."""
    return {check: state for check, state in checks.items() if state != "met"}


def _service_rows(rows: list[dict], names: list[str]) -> list[dict]:
    return [{
        "service": row["service"], "name": row["service_name"], "owner": row["owner"],
        "level": level_name(names, row["level"]), "level_index": row["level"], "checks": holding_back(row["checks"]),
    } for row in rows]


def trend(db, rubric: str, names: list[str], now: datetime, today: dict[int, int], *,
          team: str | None = None) -> list[dict]:
    """A year of daily counts per level: [{day, by_level}], oldest first; `today`: the counts (level ->
    services) as they stand, which replace today's snapshot (taken once, maybe before the day's first levels)."""
    since = (now - timedelta(days=TREND_DAYS - 1)).strftime("%Y-%m-%d")
    days: dict[str, dict[int, int]] = {}
    for day, level, services in db.scorecards.trend(rubric, team=team, since=since):
        days.setdefault(day, {})[level] = services
    days[now.astimezone(timezone.utc).strftime("%Y-%m-%d")] = today
    return [{"day": day, "by_level": _by_level(names, counts)} for day, counts in sorted(days.items())]


PAGE_SIZE = 100  # services per page of a scorecard


def scorecard(db, slug: str, now: datetime, *, page: int | None = 1) -> dict:
    """One scorecard: a page of its services by level (highest first; every one with `page=None`),
    how many hold each level, and its trend."""
    found = definitions(db)
    card = found.scorecards.get(slug)
    if card is None:
        raise NotFound(f"scorecard {slug!r} does not exist")
    names = found.level_names(slug)
    counts = {level: services for _, level, services in db.scorecards.level_counts(rubric=slug)}
    total = sum(counts.values())
    pages = max(1, -(-total // PAGE_SIZE))
    if page is None:
        rows = db.scorecards.levels(rubric=slug)
    else:
        page = min(max(page, 1), pages)
        rows = db.scorecards.levels(rubric=slug, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return {**_card_head(slug, card), "services": total, "by_level": _by_level(names, counts),
            "page": page, "pages": pages, "service_levels": _service_rows(rows, names), "trend": trend(db, slug, names, now, counts)}


def service_trend(db, scorecard: str, service_id: int, names: list[str], now: datetime) -> list[dict]:
    """A year of one service's daily level, shaped as `trend`'s days (one service at its level)."""
    since = (now - timedelta(days=TREND_DAYS - 1)).strftime("%Y-%m-%d")
    return [{"day": day, "by_level": _by_level(names, {level: 1})}
            for day, level in db.scorecards.service_trend(scorecard, service_id, since=since)]


def service_levels(db, service_id: int, now: datetime | None = None) -> list[dict]:
    """A service's level of each scorecard that applies to it, with the checks that hold it back
    (and, given `now`, a year of its daily level)."""
    found = definitions(db)
    shown = []
    for row in db.scorecards.levels(service_id=service_id):
        if row["rubric"] in found.scorecards:
            names = found.level_names(row["rubric"])
            waived = {check: _waiver_view(found.waived[(check, row["service"])])
                      for check, state in row["checks"].items() if state in ("waived", "waiver-expired")
                      and (check, row["service"]) in found.waived}
            shown.append({"scorecard": row["rubric"], "name": found.scorecards[row["rubric"]]["name"],
                          "level": level_name(names, row["level"]), "level_index": row["level"], "levels": names,
                          "checks": holding_back(row["checks"]), "waivers": waived,
                          "trend": service_trend(db, row["rubric"], service_id, names, now) if now else []})
    return shown


def levels_by_service(db, service_ids: list[int]) -> dict[int, dict[str, str | None]]:
    """service id -> scorecard slug -> level name held (None: none), for a page of services."""
    found = definitions(db)
    held: dict[int, dict[str, str | None]] = {}
    for row in db.scorecards.levels(service_ids=service_ids):
        if row["rubric"] in found.scorecards:
            held.setdefault(row["service_id"], {})[row["rubric"]] = level_name(found.level_names(row["rubric"]), row["level"])
    return held


def _waiver_view(waiver) -> dict:
    return {"slug": waiver.slug, "check": waiver.check, "reason": waiver.reason, "owner": waiver.owner,
            "expires": waiver.expires}


def waivers(db, now: datetime, *, services: set[str] | None = None) -> list[dict]:
    """Waivers (of some services, if given), soonest expiry first, with whether each still counts."""
    found = definitions(db)
    shown = []
    for slug, body in found.waivers.items():
        named = [s for s in body["services"] if services is None or s in services]
        if named:
            shown.append({"slug": slug, "check": body["check"], "services": named, "reason": body["reason"],
                          "owner": body.get("owner"), "expires": body["expires"], "path": body["path"],
                          "expired": now >= waiver_end(body["expires"])})
    return sorted(shown, key=lambda w: (w["expires"], w["slug"]))


def team_owners(db) -> list[dict]:
    """Every owner with services and how many: [{owner, services}] (no levels: a list of teams to link to
    needs no count per level, which costs 30 ms at 10,000 services, bench/bench_scorecards.py)."""
    return [{"owner": row["owner"], "services": row["services"]} for row in db.scorecards.teams() if row["owner"]]


def teams(db) -> list[dict]:
    """Every owner with services, with its services' levels per scorecard."""
    found = definitions(db)
    shown = team_owners(db)
    by_team: dict[str, dict[str, dict[int, int]]] = {}
    for team, rubric, level, services in db.scorecards.team_level_counts():
        by_team.setdefault(team, {}).setdefault(rubric, {})[level] = services
    for team in shown:
        team["scorecards"] = {slug: _by_level(found.level_names(slug), by_team.get(team["owner"], {}).get(slug, {}))
                              for slug in sorted(found.scorecards)}
    return shown


def _counts(rows: list[dict]) -> dict[int, int]:
    """Level -> services, of service rows shaped by `_service_rows`."""
    counts: dict[int, int] = {}
    for row in rows:
        counts[row["level_index"]] = counts.get(row["level_index"], 0) + 1
    return counts


def team(db, owner: str, now: datetime) -> dict:
    """One team: its services and their levels, failing checks, waivers ending soon, campaigns, trend."""
    found = definitions(db)
    services = db.scorecards.services_for_campaigns(owner=owner)
    if not owner or not services:
        raise NotFound(f"team {owner!r} owns no service")
    slugs = {service["slug"] for service in services}
    levels: dict[str, list[dict]] = {}
    held: dict[str, dict[str, str | None]] = {}
    failing = []
    # (check, state) -> scorecards and services, each in first-seen order (dicts as ordered sets: a team
    # fails thousands of (service, check) pairs at 10,000 services, bench/bench_scorecards.py)
    grouped: dict[tuple[str, str], tuple[dict[str, None], dict[str, None]]] = {}
    # by the team's service ids: the level rows of 250 services, not a scan of every level joined to its owner
    for row in db.scorecards.levels(service_ids=[service["id"] for service in services]):
        rubric = row["rubric"]
        if rubric in found.scorecards:
            shown = _service_rows([row], found.level_names(rubric))[0]
            levels.setdefault(rubric, []).append(shown)
            held.setdefault(row["service"], {})[rubric] = shown["level"]
            for check, state in sorted(row["checks"].items()):
                if state not in ("met", "waived"):
                    failing.append({"service": row["service"], "scorecard": rubric, "check": check, "state": state})
                    cards, named = grouped.setdefault((check, state), ({}, {}))
                    cards[rubric] = None
                    named[row["service"]] = None
    soon = (now + timedelta(days=EXPIRING_DAYS)).strftime("%Y-%m-%d")
    team_waivers = waivers(db, now, services=slugs)
    by_check = [{"check": check, "state": state, "scorecards": list(cards), "services": list(named)}
                for (check, state), (cards, named) in grouped.items()]
    return {
        "owner": owner,
        "services": [{"slug": s["slug"], "name": s["name"], "levels": held.get(s["slug"], {})} for s in services],
        "failing_by_check": sorted(by_check, key=lambda g: (-len(g["services"]), g["check"], g["state"])),
        "scorecards": [{"slug": slug, "name": found.scorecards[slug]["name"],
                        "levels": found.level_names(slug), "services": levels.get(slug, []),
                        "trend": trend(db, slug, found.level_names(slug), now, _counts(levels.get(slug, [])), team=owner)}
                       for slug in sorted(found.scorecards)],
        "failing_checks": failing,
        "waivers": team_waivers,
        "waivers_expiring": [w for w in team_waivers if w["expires"] <= soon],
        "campaigns": [c for c in campaigns(db, now, services=services) if c["targeted"]],
    }


def campaigns(db, now: datetime, *, services: list[dict] | None = None) -> list[dict]:
    """Every campaign with its progress (over the services given, else all)."""
    found = definitions(db)
    if not found.campaigns:
        return []
    services = services if services is not None else db.scorecards.services_for_campaigns()
    return [_campaign(db, found, slug, body, services, now) for slug, body in sorted(found.campaigns.items())]


def campaign(db, slug: str, now: datetime) -> dict:
    """One campaign: progress, overdue, per team, and each targeted service."""
    found = definitions(db)
    body = found.campaigns.get(slug)
    if body is None:
        raise NotFound(f"campaign {slug!r} does not exist")
    return _campaign(db, found, slug, body, db.scorecards.services_for_campaigns(), now, detail=True)


def _campaign(db, found: Definitions, slug: str, body: dict, services: list[dict], now: datetime,
              detail: bool = False) -> dict[str, Any]:
    targeted = [s for s in services if selects(body.get("services", "all"), s)]
    if body.get("checks"):
        rubric, needed = CAMPAIGN_PREFIX + slug, 1
    else:
        rubric = body["scorecard"]
        names = found.level_names(rubric)
        needed = names.index(body["level"]) + 1 if body["level"] in names else len(names) + 1
    held = {row["service_id"]: row["level"] for row in db.scorecards.levels(rubric=rubric)} if targeted else {}
    met = [s for s in targeted if held.get(s["id"], 0) >= needed]
    overdue = now.strftime("%Y-%m-%d") > body["deadline"] and len(met) < len(targeted)
    shown: dict[str, Any] = {
        "slug": slug, "name": body["name"], "description": body.get("description"), "owner": body.get("owner"),
        "deadline": body["deadline"], "scorecard": body.get("scorecard"), "level": body.get("level"),
        "checks": body.get("checks"), "path": body["path"], "error": body["error"],
        "targeted": len(targeted), "met": len(met),
        "progress": round(100 * len(met) / len(targeted)) if targeted else 100, "overdue": overdue,
    }
    if detail:
        met_ids = {s["id"] for s in met}
        per_team: dict[str, dict[str, int]] = {}
        for s in targeted:
            counts = per_team.setdefault(s["owner"] or "", {"targeted": 0, "met": 0})
            counts["targeted"] += 1
            counts["met"] += s["id"] in met_ids
        shown["teams"] = [{"owner": owner, **counts} for owner, counts in sorted(per_team.items())]
        shown["services"] = [{"slug": s["slug"], "name": s["name"], "owner": s["owner"], "met": s["id"] in met_ids}
                             for s in targeted]
    return shown
