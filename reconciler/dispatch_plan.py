"""`catalog dispatch --plan`: the dispatches a day each check needs, against the GitHub budget.

A dispatch is a workflow run: one per (check, service) pair, or one per `batch: N` pairs of a check.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from datetime import datetime

from . import cron
from .budget import Budget
from .schema import FREQUENCY_PERIODS, MAX_BATCH
from .settings import Settings
from .store import Database

PLAN_DOES_NOT_FIT = 2  # the exit status of `catalog dispatch --plan` when the budget is too small


@dataclass(frozen=True)
class CheckLoad:
    slug: str
    services: int  # pairs per run (1 for `services: none`)
    runs_per_day: float
    batch: int

    def dispatches_per_day(self, batch: int | None = None) -> float:
        return self.runs_per_day * math.ceil(self.services / (batch or self.batch)) if self.services else 0.0


def check_loads(store: Database, now: datetime) -> list[CheckLoad]:
    """Every active check that runs by itself, with its targeted services and runs a day."""
    checks = [c for c in store.reads.checks() if c["active"]]
    targeted: dict[int, int] = {}
    for check_id, _ in store.dispatch.targeted_pairs(check_ids=[c["id"] for c in checks]):
        targeted[check_id] = targeted.get(check_id, 0) + 1
    loads = []
    for check in checks:
        if check["schedule"]:
            runs = cron.runs_per_day(check["schedule"], now)
        elif check["frequency"] in FREQUENCY_PERIODS:
            runs = 86400 / FREQUENCY_PERIODS[check["frequency"]].total_seconds()
        else:
            continue  # ad-hoc: only on request
        services = 1 if check["target_kind"] == "none" else targeted.get(check["id"], 0)
        loads.append(CheckLoad(check["slug"], services, runs, check.get("batch_size", 1)))
    return loads


def total(loads: list[CheckLoad], at_least: int = 1) -> float:
    """Dispatches a day when every check's batch is at least `at_least`."""
    return sum(load.dispatches_per_day(max(load.batch, at_least)) for load in loads)


def batch_that_fits(loads: list[CheckLoad], per_day: int) -> int | None:
    """The smallest `batch:` that, given to every check with less, fits the budget; None if even 1000 does not."""
    if total(loads) <= per_day:
        return 1
    low, high = 1, MAX_BATCH
    if total(loads, high) > per_day:
        return None
    while low < high:  # the total only falls as the batch grows
        middle = (low + high) // 2
        if total(loads, middle) <= per_day:
            high = middle
        else:
            low = middle + 1
    return low


def print_plan(store: Database, settings: Settings, now: datetime) -> int:
    """The plan as `catalog dispatch --plan` prints it; 0 when it fits the budget, 2 when not."""
    budget = Budget.from_text(store, settings.github_budget)
    per_day = budget.per_day()
    loads = sorted(check_loads(store, now), key=lambda load: -load.dispatches_per_day())
    width = max([len(load.slug) for load in loads] + [5])
    print(f"{'check':<{width}}  {'services':>8}  {'runs/day':>8}  {'batch':>5}  {'dispatches/day':>14}")
    for load in loads:
        print(f"{load.slug:<{width}}  {load.services:>8,}  {load.runs_per_day:>8.2f}  {load.batch:>5}"
              f"  {load.dispatches_per_day():>14,.1f}")
    needed = total(loads)
    print(f"total: {needed:,.0f} dispatches/day; budget {per_day:,}/day ({budget})")
    if needed <= per_day:
        return 0
    fits = batch_that_fits(loads, per_day)
    advice = f"set batch: {fits}+" if fits else "even batch: 1000 does not fit; run checks less often"
    print(f"catalog: warning: needs {needed:,.0f} runs/day, budget {per_day:,}: {advice}", file=sys.stderr)
    return PLAN_DOES_NOT_FIT
