"""Write-back: finished results committed to the results branch of the catalog repository, and pushed."""

from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import git

from . import scorecard_views
from . import writeback_files as files
from .clock import Clock, format_time, parse_time
from .errors import WritebackError
from .events import Event
from .gitsource import exclusive_lock, is_git_repository
from .ledger import chain_state, signer_for, with_allowed_signer
from .logs import redact_credentials
from .progress import Progress
from .results_clone import Author, Clone
from .schema import CatalogConfig
from .settings import Settings
from .store import Database

log = logging.getLogger("catalog.writeback")

BATCH_SIZE = 50_000
PUSH_ATTEMPTS = 6
BASELINE_KEY = "writeback_verified_commit"  # the newest remote commit this store has checked or pushed
BASELINE_BRANCH_KEY = "writeback_verified_branch"  # the branch of that commit (unset: written before it was kept)
BASELINE_REMOTE_KEY = "writeback_verified_remote"  # the repository of that commit, credentials masked (unset: before it was kept)
FINDINGS_KEY = "writeback_findings"  # tampering found so far, newest last (kept for `status`)
_KEPT_FINDINGS = 200


@dataclass(frozen=True)
class Target:
    """Where results go: a remote (URL or path), its branch, and the folder on that branch."""

    url: str
    branch: str
    path: str
    local_fallback: bool = False

    @property
    def shown(self) -> str:
        """The URL as printed and kept in the store (`BASELINE_REMOTE_KEY`): credentials masked."""
        return redact_credentials(self.url)


@dataclass(frozen=True)
class TamperFinding:
    """A pushed history file that changed other than by growing with lines that match the store."""

    path: str
    message: str
    result_id: int | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def as_dict(self) -> dict:
        return {"path": self.path, "message": self.message, "result_id": self.result_id}


@dataclass
class WritebackReport:
    """What one pass did."""

    remote: str
    branch: str
    path: str
    local_fallback: bool = False
    written: list[int] = field(default_factory=list)  # results marked written by this pass
    appended: int = 0  # history lines this pass added (written minus those found already pushed)
    commits: list[str] = field(default_factory=list)
    pushed: bool = False
    push_retries: int = 0
    findings: list[TamperFinding] = field(default_factory=list)
    remaining: int = 0  # finished results still queued after the pass

    @property
    def commit(self) -> str | None:
        return self.commits[-1] if self.commits else None

    def lines(self) -> list[str]:
        """A few human lines for the CLI."""
        where = f"branch {self.branch} of {self.remote}"
        out = []
        if self.local_fallback:
            out.append(f"the catalog repository is not a git repository: results go to the local bare repository {self.remote}")
        if self.commits and not self.pushed:
            out.append(f"committed {self.commit} locally (not pushed); {self.remaining} results stay queued")
        elif self.written:
            out.append(f"recorded {len(self.written)} results ({self.appended} new lines) on {where}, commit {self.commit or '-'}")
        else:
            out.append(f"nothing to write ({where})")
        if self.push_retries:
            out.append(f"the remote moved during the push: re-applied and retried {self.push_retries} times")
        return out


def resolve_target(store: Database, settings: Settings) -> Target:
    """The remote, branch and folder results go to, from CATALOG_REPO and catalog.yaml's `writeback`."""
    config = CatalogConfig.from_stored(store.state.get("catalog_config")).writeback
    repo = settings.repo
    if repo and ("://" in repo or repo.startswith("git@") or ":" in repo.split("/")[0]):
        return Target(repo, config.branch, config.path)
    if repo:
        local = Path(os.path.expanduser(repo))
        if not local.exists():
            raise WritebackError(f"catalog repository {repo} does not exist; finished results stay queued")
        if is_git_repository(local):
            return Target(str(local.resolve()), config.branch, config.path)
    fallback = (settings.home / "results.git").resolve()
    return Target(str(fallback), config.branch, config.path, local_fallback=True)


def writeback_pass(
    store: Database, settings: Settings, *, push: bool = True, clock: Clock | None = None, batch_size: int = BATCH_SIZE,
    progress: Callable[[str, int], Progress] | None = None,
) -> WritebackReport:
    """Commit every queued finished result (one commit per batch of `batch_size`) and push it.

    Each batch appends one line per result to `history/YYYY/MM/DD.jsonl` on top of the remote
    branch's head, refreshes the summaries it touched and the README, commits once (git
    fast-import, no working tree) and pushes; results are marked written only after the push.
    Lines already on the remote for the batch's days (pushed before a crash, or by a racing pass)
    are recognised and never written twice. History files changed on the remote since the last
    commit this store verified must only have grown by lines matching the store: anything else
    is reported as tampering and left as found, never overwritten.

    Raises WritebackError when the remote cannot be reached or keeps rejecting the push: the
    results stay queued for the next pass. With `push=False` one batch is committed to the local
    clone's branch only, and nothing is marked written. `progress(description, total)`, when given,
    is asked for a callback told how many results each batch wrote (the CLI draws a bar).
    """
    clock = clock or Clock()
    target = resolve_target(store, settings)
    author = Author(settings.bot_name, settings.bot_email, signer_for(settings.writeback_signing_key),
                    signer_for(settings.writeback_previous_signing_key))
    report = WritebackReport(target.shown, target.branch, target.path, target.local_fallback)
    settings.home.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(settings.home / "writeback.lock"):  # one pass at a time per state folder
        if target.local_fallback and not is_git_repository(Path(target.url)):
            git.Repo.init(target.url, bare=True)
        clone = Clone(settings.home / "writeback", target.url)
        # Checked on every pass, batch or not, so tampering shows up on the next pass after it.
        head = clone.remote_head(target.branch)
        findings = verify_since(store, clone, _baseline(store, target.branch), head, target.path)
        _remember(store, findings, head, target, clock)
        report.findings += findings
        advance = progress("writing results back", store.writeback.queue_size()) if progress else None
        while batch := store.writeback.batch(batch_size):
            _write_batch(store, clone, target, batch, report, push=push, clock=clock, author=author)
            if advance is not None:
                advance(len(batch))
            if not push:
                break
    report.remaining = store.writeback.queue_size()
    return report


@dataclass
class _Build:
    commit: str | None
    appended: list[int]
    present: list[int]  # batch results whose line was already on the branch


def _write_batch(store, clone, target, batch, report, *, push, clock, author) -> None:
    attempt = 0
    while True:
        head = clone.remote_head(target.branch)
        parent, on_remote = head, True
        baseline = _baseline(store, target.branch)
        if head is None and baseline:
            _refuse_another_repository(store, target, len(batch))
        findings = verify_since(store, clone, baseline, head, target.path)
        if head is None and baseline and clone.has_commit(baseline):
            # The branch vanished from the remote: rebuild on what we last saw rather than start over.
            findings.append(TamperFinding("", f"branch {target.branch} was deleted on the remote; restoring it from {baseline[:12]}"))
            parent, on_remote = baseline, False
        build = _build(store, clone, parent, batch, target, clock, author, findings)
        _remember(store, findings, head if on_remote else baseline, target, clock)
        report.findings += findings
        if build.commit is None and on_remote:
            store.writeback.record_writes({rid: head for rid in build.present}, now=clock.now())
            report.written += build.present
            return
        if build.commit is None:
            build.commit = parent  # every line is in the commit we restore: push that alone
        if not push:
            clone.set_branch(target.branch, build.commit)
            report.commits.append(build.commit)
            return
        outcome = clone.push(build.commit, target.branch)
        if outcome is None:
            commits = {rid: build.commit for rid in build.appended}
            commits.update({rid: head for rid in build.present if on_remote})
            commits.update({rid: build.commit for rid in build.present if not on_remote})
            store.writeback.record_writes(commits, now=clock.now(), state=_baseline_state(build.commit, target))
            report.written += sorted(commits)
            report.appended += len(build.appended)
            report.commits.append(build.commit)
            report.pushed = True
            return
        attempt += 1
        moved = clone.remote_head(target.branch) != head
        if not moved or attempt >= PUSH_ATTEMPTS:
            raise WritebackError(
                f"push to branch {target.branch} of {target.shown} failed: {outcome};"
                f" {len(batch)} results stay queued for the next pass"
            )
        report.push_retries += 1
        clock.sleep(min(0.1 * 2**attempt, 3.0) * (0.5 + random.random()))


def _refuse_another_repository(store: Database, target: Target, queued: int) -> None:
    """WritebackError when the branch this store wrote is missing because CATALOG_REPO now names another
    repository: the write-back reported a deletion that did not happen, and "restored" the branch by
    pushing the old repository's whole results history, messages included, into the new one."""
    recorded, now = store.state.get(BASELINE_REMOTE_KEY), target.shown
    if recorded is None or recorded == now:
        return
    raise WritebackError(
        f"branch {target.branch} was last written to {recorded}; the write-back repository is now {now}, which has"
        f" no such branch: the results history is not copied there, and {queued} results stay queued. If {now} is"
        f" the catalog's new home, push the branch there first (from a clone of the old repository:"
        f" git push NEW-URL {target.branch}); the next pass goes on from it"
    )


def _baseline(store: Database, branch: str) -> str | None:
    """The commit of `branch` this store last checked or pushed. None when it checked another branch
    (catalog.yaml's writeback.branch changed): the new branch starts, it was not deleted."""
    recorded = store.state.get(BASELINE_BRANCH_KEY)
    return store.state.get(BASELINE_KEY) if recorded in (None, branch) else None


def _baseline_state(commit: str, target: Target) -> dict:
    """The `catalog_state` keys saying which commit, of which branch and repository, this store last checked or pushed."""
    return {BASELINE_KEY: commit, BASELINE_BRANCH_KEY: target.branch, BASELINE_REMOTE_KEY: target.shown}


def _remember(store: Database, findings: list[TamperFinding], verified: str | None, target: Target, clock: Clock) -> None:
    """Persist findings with the commit they were checked up to, so each is reported once and kept."""
    state: dict = _baseline_state(verified, target) if verified else {}
    if findings:
        found_at = format_time(clock.now())
        new = [{**finding.as_dict(), "found_at": found_at} for finding in findings]
        # one entry per finding, with when it was last found: status listed one finding as often as found
        same = {_finding_key(f) for f in new}
        kept = [f for f in store.state.get(FINDINGS_KEY, []) if _finding_key(f) not in same]
        state[FINDINGS_KEY] = (kept + new)[-_KEPT_FINDINGS:]
    if state:
        store.writeback.record_writes({}, now=clock.now(), state=state, events=[
            Event("tamper-detected", f"write-back: {finding}"[:1000], result_id=finding.result_id,
                  data={**finding.as_dict(), "verified_up_to": verified})
            for finding in findings
        ])


def _finding_key(finding: dict) -> tuple:
    return finding["path"], finding["message"], finding.get("result_id")


def _build(store, clone, parent, batch, target, clock, author, findings) -> _Build:
    """Append the batch's lines not yet on `parent`, chained in id order to the ledger's head; refresh
    the touched summaries and ledger.json; commit (unpushed), signed when a key is set."""
    chain = chain_state(clone, parent, target.path)
    head, chained = chain.head, chain.lines
    texts: dict[str, str] = {}
    existing: dict[str, dict[int, str]] = {}
    new_lines: dict[str, list[str]] = defaultdict(list)
    appended, present = [], []
    for row in batch:
        path = files.history_path(target.path, row["finished_at"])
        if path not in texts:
            texts[path] = (clone.read(parent, path) or b"").decode("utf-8", errors="replace") if parent else ""
            existing[path] = {}
            for line in texts[path].split("\n"):
                result_id = files.line_id(line)
                if result_id is not None:
                    existing[path].setdefault(result_id, line)
        found = existing[path].get(row["id"])
        if found is None:
            line = files.history_line(row, prev=head)
            head, chained = files.line_hash(line), chained + 1
            new_lines[path].append(line)
            appended.append(row["id"])
            continue
        present.append(row["id"])
        if files.unchained(found) != files.history_line(row):
            findings.append(TamperFinding(path, f"the line of result {row['id']} differs from the store; left as found", row["id"]))
    if not appended:
        return _Build(None, [], present)
    changed: dict[str, bytes] = {}
    for path, lines in new_lines.items():
        text = texts[path]
        if text and not text.endswith("\n"):
            text += "\n"
        changed[path] = (text + "\n".join(lines) + "\n").encode("utf-8")
    changed.update(_summaries(store, batch, target.path, format_time(clock.now())))
    changed[target.path + files.LEDGER_FILE] = files.ledger_json(head, chained, max(appended)).encode()
    if author.signer is not None:
        signers_path = target.path + files.ALLOWED_SIGNERS_FILE
        listed = clone.read(parent, signers_path) if parent else None
        signers = with_allowed_signer(listed, author.signer, author.email)
        if signers is not None:
            changed[signers_path] = signers
            author = _vouched(author, listed)
    message = _message(appended, head)
    commit = clone.commit(parent, changed, message, author, int(clock.now().timestamp()))
    return _Build(commit, appended, present)


def _vouched(author: Author, listed: bytes | None) -> Author:
    """Who signs the commit that adds the signing key to an allowed_signers that lists other keys: a
    key may not vouch for itself (`catalog verify`), so the previous key does, when it is given
    (CATALOG_WRITEBACK_PREVIOUS_SIGNING_KEY) and listed."""
    text = (listed or b"").decode("utf-8", errors="replace")
    if not any(line.strip() and not line.lstrip().startswith("#") for line in text.split("\n")):
        return author  # the first key of the branch: its own first commit is the start of signing
    if author.previous is not None and author.previous.public_key in text:
        return Author(author.name, author.email, author.previous)
    log.warning("write-back: the signing key is new to allowed_signers, and no listed key vouches for it:"
                " `catalog verify` will report this commit (set CATALOG_WRITEBACK_PREVIOUS_SIGNING_KEY to the"
                " key that signed before, for the write-back that adds the new one)")
    return author


def _summaries(store: Database, batch: list[dict], root: str, as_of: str) -> dict[str, bytes]:
    """services/<slug>.yaml and checks/<slug>.yaml for what the batch touched, and the README."""
    latest = store.writeback.latest()
    for row in batch:
        key = (row["check_id"], row["service_id"] or 0)
        if key not in latest or latest[key]["id"] < row["id"]:
            latest[key] = row
    service_ids = sorted({row["service_id"] for row in batch if row["service_id"]})
    check_ids = sorted({row["check_id"] for row in batch})
    services, checks = store.writeback.entities(service_ids, check_ids)
    by_service: dict[int, list[dict]] = defaultdict(list)
    by_check: dict[int, list[dict]] = defaultdict(list)
    for (check_id, service_key), row in latest.items():
        if service_key in services:
            by_service[service_key].append(row)
        if check_id in checks:
            by_check[check_id].append(row)
    out: dict[str, bytes] = {}
    for service_id, service in services.items():
        rows = sorted(by_service[service_id], key=lambda row: row["check_slug"])
        out[f"{root}services/{service['slug']}.yaml"] = files.service_summary(service, rows, as_of).encode()
    for check_id, check in checks.items():
        rows = sorted(by_check[check_id], key=lambda row: row["service_slug"] or "")
        out[f"{root}checks/{check['slug']}.yaml"] = files.check_summary(check, rows, as_of).encode()
    all_services, all_checks = store.writeback.catalog()
    cards = [scorecard_views.scorecard(store, card["slug"], parse_time(as_of), page=None) for card in scorecard_views.scorecard_summaries(store)]
    for card in cards:
        out[f"{root}scorecards/{card['slug']}.yaml"] = files.scorecard_summary(card, as_of).encode()
    levels = scorecard_views.levels_by_service(store, [service["id"] for service in all_services])
    out[f"{root}README.md"] = files.readme(all_services, all_checks, latest, as_of, cards, levels).encode()
    return out


def _message(result_ids: list[int], head: str) -> str:
    """`Record N health check results`, then every id, so `git log --grep` finds any of them, then the
    `Ledger-Head:` trailer naming the chain's head after this commit."""
    ids = [str(result_id) for result_id in result_ids]
    lines = [" ".join(ids[start : start + 15]) for start in range(0, len(ids), 15)]
    noun = "result" if len(ids) == 1 else "results"
    return (f"Record {len(ids)} health check {noun}\n\nResult ids:\n" + "\n".join(lines)
            + f"\n\n{files.LEDGER_TRAILER}: {head}\n")


def verify_since(store: Database, clone: Clone, baseline: str | None, head: str | None, root: str) -> list[TamperFinding]:
    """Findings for history files changed between `baseline` and `head` other than by valid appends."""
    if not baseline or not head or baseline == head:
        return []
    if not clone.has_commit(baseline):
        return [TamperFinding("", f"commit {baseline[:12]} that was verified before is gone from the branch (history rewritten)")]
    findings = []
    if not clone.is_ancestor(baseline, head):
        findings.append(TamperFinding("", f"the branch history was rewritten: {baseline[:12]} is no longer an ancestor of {head[:12]}"))
    added: list[tuple[str, str]] = []
    for old_sha, new_sha, path in clone.changed_files(baseline, head, f"{root}history/"):
        old = clone.blob(old_sha).decode("utf-8", errors="replace")
        new = clone.blob(new_sha).decode("utf-8", errors="replace")
        if new.startswith(old):
            added += [(path, line) for line in new[len(old) :].split("\n") if line]
            continue
        kept = set(new.split("\n"))
        lost = [line for line in old.split("\n") if line and line not in kept]
        for line in lost:
            result_id = files.line_id(line)
            what = f"the line of result {result_id}" if result_id is not None else "a line"
            findings.append(TamperFinding(path, f"{what} was changed or removed after it was pushed", result_id))
        if not lost:
            findings.append(TamperFinding(path, "pushed lines were reordered or rewritten"))
        before, replaced = set(old.split("\n")), {files.line_id(line) for line in lost} - {None}
        added += [
            (path, line) for line in new.split("\n")
            if line and line not in before and files.line_id(line) not in replaced  # reported above
        ]
    findings += _check_added_lines(store, added, root)
    return findings


def _check_added_lines(store: Database, added: list[tuple[str, str]], root: str) -> list[TamperFinding]:
    """Lines added on the remote (by us or a racing pass) must be exactly the store's rendering."""
    ids = {files.line_id(line) for _, line in added} - {None}
    rows = store.writeback.results(sorted(ids)) if ids else {}
    findings, seen = [], set()
    for path, line in added:
        result_id = files.line_id(line)
        row = rows.get(result_id) if result_id is not None else None
        if row is None or row["finished_at"] is None:
            findings.append(TamperFinding(path, f"a line that is no finished result of this catalog: {line[:80]}", result_id))
        elif files.history_line(row) != files.unchained(line) or files.history_path(root, row["finished_at"]) != path:
            findings.append(TamperFinding(path, f"the line of result {result_id} does not match the store", result_id))
        elif result_id in seen:
            findings.append(TamperFinding(path, f"result {result_id} appears twice", result_id))
        seen.add(result_id)
    return findings
