"""Rules across catalog files, in one pass over what a sync read: unique slugs, known dependencies and
check targets, no dependency cycles.

It sees the files read now beside the store's index (`CatalogIndex`): after a git diff only what
the changed files can affect is looked at, since the rest passed these rules when it was applied.
A file that fails validation but still parses counts for the slug it declares (a bad file never
blocks the others): what points at that slug applies, with a warning naming the broken file. The
checks read no file: problems carry a key path, and `locate_problems` turns them into lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Literal

from . import backstage
from .catalog_index import CatalogIndex, dependencies_of
from .errors import CatalogIntegrityError, Location
from .document_paths import display_path, file_of
from .last_good import Keepers
from .loader import DEFINITION_KINDS, LoadedFile, locate
from .schema import MAX_WAIVER_DAYS

REFERENCE_FIELD = {"service": "dependencies", "check": "services"}
PastExpiry = Literal["error", "warning"]  # what a waiver read after its expiry day is (check_integrity)


@dataclass
class Problem:
    """A rule a file breaks, at a key path such as ("dependencies", 2); `entity` for a file not read now."""

    path: str
    loc: tuple
    message: str
    other: str | None = None
    entity: tuple[str, str] | None = None  # (kind, slug) the blamed file keeps, when it was not read now


@dataclass
class Verdict:
    problems: dict[str, list[Problem]] = field(default_factory=dict)  # by the file to blame
    warnings: list[Problem] = field(default_factory=list)

    def blame(self, problem: Problem) -> None:
        self.problems.setdefault(problem.path, []).append(problem)


def check_integrity(read: dict[str, LoadedFile], deleted: Iterable[str], index: CatalogIndex,
                    today: date | None = None, *, past_expiry: PastExpiry = "error",
                    without_store: bool = False) -> Verdict:
    """Every cross-file problem the files read now (and the deleted ones) cause, in one pass.
    `today` (UTC) bounds a waiver's expiry. A waiver read now whose expiry day has passed is an
    error for `catalog validate` (a pull request's new waiver that could never count), a warning for
    a sync (`past_expiry="warning"`): it applies and shows as expired, so every home reads one commit
    alike, whenever it first syncs (a new replica, a rebuilt database, `./run` next year).
    `without_store` (`catalog validate`): which file had a duplicated slug is unknown, so each file
    defining it is named, not only those a first sync would refuse."""
    catalog = _After(read, set(deleted), index)
    verdict = Verdict()
    _find_duplicates(catalog, verdict, without_store)
    _find_unknown_references(catalog, verdict)
    _find_lost_references(catalog, verdict)
    _find_cycles(catalog, verdict)
    _warn_about_broken_targets(catalog, verdict)
    _check_definitions(catalog, verdict, today or datetime.now(timezone.utc).date(), past_expiry)
    return verdict


def locate_problems(root: Path, verdict: Verdict) -> dict[str, list[CatalogIntegrityError]]:
    """The problems as errors at file:line:col (each blamed file is parsed once)."""
    parsed: dict = {}
    return {
        path: [_located(root, problem, parsed) for problem in problems]
        for path, problems in verdict.problems.items()
    }


def locate_warnings(root: Path, verdict: Verdict) -> list[CatalogIntegrityError]:
    parsed: dict = {}
    return [_located(root, problem, parsed) for problem in verdict.warnings]


def _located(root: Path, problem: Problem, parsed: dict) -> CatalogIntegrityError:
    where = locate(root, problem.path, problem.loc, parsed)
    message, held = problem.message, parsed.get(problem.path)
    if isinstance(held, tuple) and problem.loc and message.startswith(f"{problem.loc[0]}: "):
        # a Backstage document (locate keeps its node and values): the message names its key, not ours
        message = backstage.document_field(held[1], problem.loc[0]) + message[len(problem.loc[0]):]
    return CatalogIntegrityError(where, message, Location(file_of(problem.other)) if problem.other else None)


class _After:
    """The catalog as it would be after the sync, asked slug by slug."""

    def __init__(self, read: dict[str, LoadedFile], deleted: set[str], index: CatalogIndex):
        self.read, self.deleted, self.index = read, deleted, index
        # paths, not (path, file) pairs: a first sync reads 100,000 files (bench/bench_sync.py's peak)
        entity_paths = sorted(path for path, f in read.items() if f.kind in REFERENCE_FIELD)
        self.order: list[str] = []  # the valid files read now, in path order
        # kind -> slug -> the first read file declaring it; `also` holds the others (a duplicate is rare,
        # and a first sync declares 100,000 slugs: a list for each would cost 10s of MB)
        self.declared: dict[str, dict[str, str]] = {kind: {} for kind in REFERENCE_FIELD}
        self.also: dict[tuple[str, str], list[str]] = {}
        self.unnamed: dict[str, str] = {}  # file name -> broken service file that declares no slug
        for path in entity_paths:  # one pass: a first sync reads 100,000 files (bench/bench_sync.py)
            loaded = read[path]
            if loaded.ok:
                self.order.append(path)
            if loaded.slug:
                first = self.declared[loaded.kind].setdefault(loaded.slug, path)
                if first != path:
                    self.also.setdefault((loaded.kind, loaded.slug), []).append(path)
            elif loaded.kind == "service":
                self.unnamed.setdefault(path.rpartition("/")[2].rpartition(".")[0], path)
        self.applying = set(self.order)  # shrinks as files break the rules
        self.keepers = Keepers(read, deleted, index, self.applying.__contains__)
        if not index.is_whole:  # one query for the rows the rules ask for, rather than one each
            index.load_services(
                set(self.declared["service"])
                | {ref for path in self.applying for ref in read[path].references}
                | {row["slug"] for path in (*read, *deleted) if (row := index.files.get(path)) and row["slug"]}
            )

    def applying_in_order(self) -> list[str]:
        return [path for path in self.order if path in self.applying]

    def break_rule(self, verdict: Verdict, problem: Problem) -> None:
        verdict.blame(problem)
        self.applying.discard(problem.path)
        self.keepers.forget()

    def keeper(self, kind: str, slug: str) -> str | None:
        """The file that keeps the stored entity of a slug after the sync, if any (`last_good`)."""
        return self.keepers.keeper(kind, slug)

    def applied_by(self, kind: str, slug: str) -> str | None:
        path = self.declared[kind].get(slug)
        if path in self.applying:
            return path
        for path in self.also.get((kind, slug), ()):
            if path in self.applying:
                return path
        return None

    def declaring(self, kind: str, slug: str) -> list[str]:
        """The files read now that declare a slug, in path order."""
        first = self.declared[kind].get(slug)
        return [first, *self.also.get((kind, slug), ())] if first else []

    def exists(self, slug: str) -> bool:
        """Whether a service with this slug exists after the sync (applied now, or kept)."""
        return self.applied_by("service", slug) is not None or self.keeper("service", slug) is not None

    def known(self, slug: str) -> bool:
        """Exists, or is declared by a file read now that fails validation but parses."""
        return slug in self.declared["service"] or self.keeper("service", slug) is not None

    def dependencies(self, slug: str) -> list[str]:
        """A service's dependencies after the sync: its new file's, else its stored ones."""
        path = self.applied_by("service", slug)
        if path is not None:
            return self.read[path].references
        keeper = self.keeper("service", slug)
        return dependencies_of(self.index.row("service", slug)) if keeper else []  # type: ignore[arg-type]

    def path_of(self, slug: str) -> str | None:
        return self.applied_by("service", slug) or self.keeper("service", slug)


def _find_duplicates(catalog: _After, verdict: Verdict, without_store: bool) -> None:
    """A slug defined by two files: the file that had it keeps it, else the first path; blame the rest.
    Without a store the first path is blamed too (not broken: its dependents are still checked): a pull
    request adding a file with a taken slug was told only about the file that already had it."""
    clashes = []
    for kind, slugs in catalog.declared.items():
        # a slug one file declares and no stored entity has cannot clash: of a first sync's 100,000
        # slugs, only the others are looked at
        maybe = {slug for (also_kind, slug) in catalog.also if also_kind == kind} | catalog.index.stored_slugs(kind, slugs)
        for slug in maybe:
            first = slugs[slug]
            if (kind, slug) in catalog.also:
                contenders = [path for path in catalog.declaring(kind, slug) if path in catalog.applying]
            elif first in catalog.applying:  # the usual case, one file: a clash only with a keeper
                contenders = [first]
            else:
                continue
            keeper = catalog.keeper(kind, slug) if contenders else None
            if keeper is not None and keeper not in contenders:
                contenders.append(keeper)
            if len(contenders) > 1:
                clashes.append((kind, slug, sorted(contenders)))
    for kind, slug, contenders in sorted(clashes):
        holder = catalog.keepers.holder(kind, slug)  # the file (or document) that had it, wherever it moved in its file
        winner = holder if holder in contenders else contenders[0]
        for path in contenders:
            if path != winner:
                catalog.break_rule(verdict, Problem(path, ("slug",), f"slug {slug!r} is already defined in {display_path(winner)}", winner))
        if without_store and holder is None:
            others = [path for path in contenders if path != winner]
            verdict.blame(Problem(winner, ("slug",), f"slug {slug!r} is also defined in"
                                  f" {', '.join(map(display_path, others))}; a sync keeps the file that already has it"
                                  " and refuses the others", others[0]))


def _find_unknown_references(catalog: _After, verdict: Verdict) -> None:
    read, declared = catalog.read, catalog.declared["service"]
    for path in catalog.applying_in_order():
        loaded = read[path]
        for position, slug in enumerate(loaded.references):
            if slug not in declared and not catalog.known(slug):  # the first test answers most: read now
                name = REFERENCE_FIELD[loaded.kind]
                catalog.break_rule(verdict, Problem(path, (name, position), _unknown(name, slug, catalog)))


def _find_lost_references(catalog: _After, verdict: Verdict) -> None:
    """Files not read now that point at a service that no file defines any more."""
    index = catalog.index
    former = {row["slug"] for path in (*catalog.read, *catalog.deleted)
              if (row := index.files.get(path)) and row["kind"] == "service" and row["slug"]}
    lost = {slug for slug in former if not catalog.known(slug)}
    if not lost:
        return
    unread = lambda path: path not in catalog.read and path not in catalog.deleted  # noqa: E731
    for slug, row in sorted(index.every_service().items()):
        if row["removed_at"] is None and unread(row["path"]) and any(f'"{s}"' in row["dependencies"] for s in lost):
            for position, dependency in enumerate(dependencies_of(row)):
                if dependency in lost:
                    verdict.blame(Problem(row["path"], ("dependencies", position), _unknown("dependencies", dependency, catalog),
                                          entity=("service", slug)))
    for slug, row in sorted(index.checks.items()):
        if row["removed_at"] is None and unread(row["path"]):
            for position, target in enumerate(row["list_targets"]):
                if target in lost:
                    verdict.blame(Problem(row["path"], ("services", position), _unknown("services", target, catalog),
                                          entity=("check", slug)))


def _unknown(name: str, slug: str, catalog: _After) -> str:
    """The message for a reference to no service; it names a broken file of that name, if any."""
    broken = catalog.unnamed.get(slug)
    if broken is None:
        return f"{name}: unknown service {slug!r} (no service file or Backstage Component defines it)"
    return f"{name}: unknown service {slug!r} (no service file or Backstage Component defines it; {broken} has errors and declares no slug)"


def _find_cycles(catalog: _After, verdict: Verdict) -> None:
    """Cycles through a dependency added now: the store held none, so a new cycle has a new edge.
    With the whole index (a full read), every edge is looked at once instead."""
    if catalog.index.is_whole:
        graph = {}
        read, applying = catalog.read, catalog.applying
        for slug, path in catalog.declared["service"].items():
            graph[slug] = read[path].references if path in applying else catalog.dependencies(slug)
        for slug, row in catalog.index.every_service().items():
            if slug not in graph and catalog.keeper("service", slug):
                graph[slug] = dependencies_of(row)
        cycles = _cycles(graph)  # a dependency outside the graph is no edge: `_cycles` skips it
    else:
        cycles = []
        for path in catalog.applying_in_order():
            loaded = catalog.read[path]
            if loaded.kind != "service":
                continue
            row = catalog.index.row("service", loaded.slug)  # type: ignore[arg-type]
            before = set(dependencies_of(row)) if row and row["removed_at"] is None else set()
            for dependency in loaded.references:
                if dependency not in before:
                    cycle = _path_back(catalog, dependency, loaded.slug)  # type: ignore[arg-type]
                    if cycle is not None:
                        cycles.append([loaded.slug, *cycle])
    found: list[Problem] = []
    seen = set()
    for cycle in cycles:
        start = cycle.index(min(cycle[:-1]))
        cycle = cycle[start:-1] + cycle[:start] + [cycle[start]]  # each cycle once, from its first slug
        if tuple(cycle) in seen:
            continue
        seen.add(tuple(cycle))
        files = [catalog.path_of(slug) for slug in cycle[:-1]]
        text = f"dependency cycle: {' -> '.join(cycle)} ({', '.join(map(display_path, files))})"  # type: ignore[arg-type]
        for slug, following, path in zip(cycle, cycle[1:], files):
            position = catalog.dependencies(slug).index(following)
            entity = None if path in catalog.read else ("service", slug)
            found.append(Problem(path, ("dependencies", position), text, entity=entity))  # type: ignore[arg-type]
    for problem in found:  # after every cycle is placed: a broken file's dependencies are its old ones
        catalog.break_rule(verdict, problem)


def _path_back(catalog: _After, start: str, goal: str) -> list[str] | None:
    """The dependency path from `start` to `goal` (both included), breadth first, or None."""
    parents: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        catalog.index.load_services(slug for slug in frontier)
        following = []
        for slug in frontier:
            for dependency in catalog.dependencies(slug):
                if dependency in parents:
                    continue
                parents[dependency] = slug
                if dependency == goal:
                    path = [dependency]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])  # type: ignore[arg-type]
                    return path[::-1]
                following.append(dependency)
        frontier = following
    return None


def _warn_about_broken_targets(catalog: _After, verdict: Verdict) -> None:
    """References that stay because a broken file declares the slug, while no service has it yet."""
    # a slug whose first file applies exists: only the others are asked (a first sync declares 100,000)
    broken = {slug: path for slug, path in catalog.declared["service"].items()
              if path not in catalog.applying and not catalog.exists(slug)}
    if not broken:
        return
    for path in catalog.applying_in_order():
        loaded = catalog.read[path]
        name = REFERENCE_FIELD[loaded.kind]
        for position, slug in enumerate(loaded.references):
            if slug in broken:
                verdict.warnings.append(Problem(
                    path, (name, position),
                    f"{name}: service {slug!r} is declared by {display_path(broken[slug])}, which has errors;"
                    " it exists once that file is fixed",
                    broken[slug],
                ))


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Each dependency cycle once, as [a, b, ..., a]; iterative DFS (catalogs can be deep). A
    dependency that is not a key of `graph` leads nowhere."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    found = []
    for start in sorted(graph):
        if colour[start] != white:
            continue
        stack = [(start, iter(graph[start]))]
        path = [start]
        colour[start] = grey
        while stack:
            node, children = stack[-1]
            for child in children:  # up to the first white child, which is entered
                seen = colour.get(child, black)
                if seen == white:
                    colour[child] = grey
                    stack.append((child, iter(graph[child])))
                    path.append(child)
                    break
                if seen == grey:
                    found.append(path[path.index(child):] + [child])
            else:  # every child done
                colour[node] = black
                stack.pop()
                path.pop()
    return found


# -- scorecards, waivers, campaigns ----------------------------------------------------------------


def _check_definitions(catalog: _After, verdict: Verdict, today: date, past_expiry: PastExpiry) -> None:
    """Scorecards, waivers and campaigns after the sync (read now, or kept) name checks, services,
    scorecards and levels that exist; a slug is defined once; a waiver read now expires at most 365
    days ahead, and not in the past (an error or a warning: `past_expiry`). A kept file is blamed too
    when what it names went away."""
    index, read, deleted = catalog.index, catalog.read, catalog.deleted
    after: dict[tuple[str, str], tuple[str, dict, bool]] = {}  # (kind, slug) -> (path, body, read now)
    for (kind, slug), row in index.definitions.items():
        if row["removed_at"] is None and row["path"] not in deleted and _kept_whole(read.get(row["path"])):
            after[(kind, slug)] = (row["path"], row["body"], False)
    for path, loaded in sorted((path, f) for path, f in read.items() if f.kind in DEFINITION_KINDS):
        if not loaded.slug:
            continue
        key = (loaded.kind, loaded.slug)
        holder = after.get(key)
        if holder is not None and holder[0] != path:
            verdict.blame(Problem(path, ("slug",) if loaded.kind != "waiver" else (),
                                  f"{loaded.kind} {loaded.slug!r} is already defined in {holder[0]}", holder[0]))
        elif loaded.ok:
            after[key] = (path, json.loads(loaded.record["body"]), True)  # type: ignore[index]
        elif (row := index.definitions.get(key)) is not None and row["removed_at"] is None:
            after[key] = (row["path"], row["body"], False)  # a bad file keeps its last good state
    scorecards = {slug: (path, body) for (kind, slug), (path, body, _) in after.items() if kind == "scorecard"}
    # the services the definitions list by slug, read in one query rather than one each
    index.load_services(service for _, body, _ in after.values() for service in _listed(body))
    for (kind, slug), (path, body, now) in sorted(after.items(), key=lambda item: item[1][0]):
        entity = None if now else (kind, slug)
        problems = [(("services", j), _unknown("services", service, catalog))
                    for j, service in enumerate(_listed(body)) if not catalog.known(service)]
        if kind == "scorecard":
            for i, level in enumerate(body["levels"]):
                problems += [((("levels", i, "checks", j)), _unknown_check("levels", check))
                             for j, check in enumerate(level["checks"]) if not _check_known(catalog, check)]
        elif kind == "waiver":
            if not _check_known(catalog, body["check"]):
                problems.append((("check",), _unknown_check("check", body["check"])))
            expires = date.fromisoformat(body["expires"])
            if now and expires < today:
                if past_expiry == "error":
                    problems.append((("expires",), f"expires: {expires} is in the past (today is {today}, UTC);"
                                                   " renew the waiver with a reason, or remove it"))
                else:
                    verdict.warnings.append(Problem(path, ("expires",), f"expires: {expires} has passed (today is"
                                                    f" {today}, UTC): the waiver no longer counts; renew it with a"
                                                    " reason, or remove it"))
            elif now and expires > today + timedelta(days=MAX_WAIVER_DAYS):
                problems.append((("expires",), f"expires: {expires} is more than {MAX_WAIVER_DAYS} days ahead;"
                                               f" the latest allowed today is {today + timedelta(days=MAX_WAIVER_DAYS)}"))
        elif kind == "campaign":
            problems += [(("checks", j), _unknown_check("checks", check))
                         for j, check in enumerate(body.get("checks") or ()) if not _check_known(catalog, check)]
            card = body.get("scorecard")
            if card is not None and card not in scorecards:
                problems.append((("scorecard",), f"scorecard: unknown scorecard {card!r} (no file under scorecards/ defines it)"))
            elif card is not None:
                card_path, card_body = scorecards[card]
                names = [level["name"] for level in card_body["levels"]]
                if body["level"] not in names:
                    verdict.blame(Problem(path, ("level",), f"level: {body['level']!r} is not a level of scorecard"
                                          f" {card!r} in {card_path} (its levels: {', '.join(names)})", card_path, entity))
        for loc, message in problems:
            verdict.blame(Problem(path, loc, message, entity=entity))


def _kept_whole(loaded: LoadedFile | None) -> bool:
    """Whether a stored definition stays as it is: its file was not read now, or was read and does not
    parse at all (it declares no slug, so it keeps its last good state and its slug, whatever its error)."""
    return loaded is None or (not loaded.ok and not loaded.slug)


def _listed(body: dict) -> list[str]:
    """The services a scorecard, waiver or campaign names by slug (`services: [a, b]`; not all, none or a selector)."""
    services = body.get("services")
    return services if isinstance(services, list) else []


def _check_known(catalog: _After, slug: str) -> bool:
    return slug in catalog.declared["check"] or catalog.keeper("check", slug) is not None


def _unknown_check(name: str, slug: str) -> str:
    return f"{name}: unknown check {slug!r} (no file under checks/ defines it)"
