"""Events that time alone causes: a waiver about to end or ended, a campaign past its deadline.

Run by the leader's scorecards loop (`catalog up`, with `scorecards.refresh_due`) on the injected
clock. Each event has a once-only key, so a pass that finds one already recorded writes nothing:

    waiver-expiring:SLUG:EXPIRES      from the start of the day 14 days before the expiry day (UTC)
    waiver-expired:SLUG:EXPIRES       once the expiry day is over (UTC); not also "expiring" if first seen then
    campaign-overdue:SLUG:DEADLINE    once the deadline day is over (UTC) and not every targeted service meets it

A waiver or campaign whose date is moved gets new keys: it is reported again for the new date.
`level-changed` is recorded where levels are written (`scorecards.record_level_events`).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from . import scorecard_views
from .events import Event
from .scorecards import refresh_due, snapshot, waiver_end

EXPIRING_DAYS = 14  # waiver-expiring: this many days before the expiry day
MISSING_LISTED = 100  # campaign-overdue: services not meeting it listed in the event's data


def time_pass(db, now: datetime) -> tuple[int, int]:
    """What time alone changes, run with each dispatch pass (`catalog up`'s scorecards job, and `catalog
    dispatch` for those who run the passes from cron): levels whose results went stale or whose waiver
    ended (with their level-changed events), waiver and campaign events due, and the day's snapshot.
    Returns (levels changed, events recorded)."""
    changes = refresh_due(db, now)
    recorded = record_due(db, now)
    snapshot(db, now)
    return len(changes), recorded


def record_due(db, now: datetime) -> int:
    """Record the waiver and campaign events whose time has come and that were not recorded before;
    returns how many. Nothing is written (and little read) on a pass with nothing new."""
    definitions = db.scorecards.evaluator.current().definitions
    today = now.astimezone(timezone.utc).date()
    waivers: dict[str, tuple[str, dict]] = {}  # key -> (type, waiver)
    for slug, body in sorted(definitions.waivers.items()):
        if now >= waiver_end(body["expires"]):
            kind = "waiver-expired"
        elif today >= date.fromisoformat(body["expires"]) - timedelta(days=EXPIRING_DAYS):
            kind = "waiver-expiring"
        else:
            continue
        waivers[f"{kind}:{slug}:{body['expires']}"] = (kind, body)
    campaigns = {f"campaign-overdue:{slug}:{body['deadline']}": body
                 for slug, body in sorted(definitions.campaigns.items()) if today.isoformat() > body["deadline"]}
    recorded = db.events.recorded_keys([*waivers, *campaigns])
    waivers = {key: found for key, found in waivers.items() if key not in recorded}
    campaigns = {key: body for key, body in campaigns.items() if key not in recorded}
    if not waivers and not campaigns:
        return 0
    owners = {s["slug"]: s["owner"] for s in db.scorecards.services_for_campaigns()}
    events = [_waiver_event(kind, body, owners, key) for key, (kind, body) in waivers.items()]
    for key, body in campaigns.items():
        event = _campaign_event(db, body, now, key)
        if event is not None:
            events.append(event)
    return db.events.emit(events, now=now) if events else 0


def _waiver_event(kind: str, body: dict, owners: dict[str, str | None], key: str) -> Event:
    services = list(body["services"])
    teams = {owners.get(service) for service in services} - {None}
    team = next(iter(teams)) if len(teams) == 1 else body.get("owner")  # whose level it holds up
    named = ", ".join(services)
    if kind == "waiver-expiring":
        summary = f"waiver {body['slug']} ({body['check']} on {named}) expires at the end of {body['expires']}"
    else:
        summary = f"waiver {body['slug']} ({body['check']} on {named}) expired at the end of {body['expires']}"
    return Event(kind, summary, team=team, service=services[0] if len(services) == 1 else None,
                 check=body["check"], key=key,
                 data={"waiver": body["slug"], "services": services, "expires": body["expires"],
                       "reason": body["reason"], "owner": body.get("owner"), "path": body["path"]})


def _campaign_event(db, body: dict, now: datetime, key: str) -> Event | None:
    """The overdue event of a campaign not complete at its deadline; None when every targeted service meets it."""
    shown = scorecard_views.campaign(db, body["slug"], now)
    if shown["met"] >= shown["targeted"]:
        return None
    missing = [s["slug"] for s in shown["services"] if not s["met"]]
    return Event(
        "campaign-overdue",
        f"campaign {shown['name']} is overdue: {shown['met']} of {shown['targeted']} services met it by {shown['deadline']}",
        team=shown["owner"], key=key,
        data={"campaign": shown["slug"], "deadline": shown["deadline"], "targeted": shown["targeted"],
              "met": shown["met"], "missing": missing[:MISSING_LISTED], "missing_count": len(missing),
              "teams": shown["teams"], "scorecard": shown["scorecard"], "level": shown["level"],
              "checks": shown["checks"]})
