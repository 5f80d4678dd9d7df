"""`catalog verify`: prove from the results branch alone that its history is complete and unaltered.

From the branch's tip: every history line parses; no result id appears twice; every `prev` names a
line (a link to nothing means the line before was changed or removed); every chained line is linked
to by the next, up to the head that results/ledger.json names; each file holds its lines in chain
order. From its commits: each `Ledger-Head:` trailer is still a line of the chain (else lines written
by then were rewritten), no history file ever shrank, and, when results/allowed_signers is on the
branch, every commit since it came is signed by one of its keys. With a store: every finished result
written back is there, exactly as the store has it.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field

from . import writeback_files as files
from .ledger import ResultsBranch

_DETAILED = 50  # findings of one kind named one by one; the rest are counted


@dataclass(frozen=True)
class Finding:
    """One thing wrong with the branch: what kind, where (file, line, commit) and a sentence."""

    kind: str  # changed-line, removed-line, broken-link, outside-chain, reordered, id-twice, unparseable,
    # ledger, rewritten-commit, shrunk-file, unsigned-commit, wrongly-signed-commit, missing-result, not-in-store
    message: str
    path: str | None = None
    line: int | None = None
    commit: str | None = None
    result_id: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: " if self.path and self.line else f"{self.path}: " if self.path else ""
        return f"{where}{self.kind}: {self.message}"

    def as_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "path": self.path, "line": self.line,
                "commit": self.commit, "result_id": self.result_id}


@dataclass
class VerifyReport:
    branch: str
    where: str
    tip: str
    root: str
    lines: int = 0
    chained: int = 0
    commits: int = 0
    signed_from: str | None = None  # the first commit that had to be signed
    queued: int = 0  # with a store: finished results not written back yet (not a finding)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass
class _Line:
    path: str
    number: int
    text: bytes
    digest: str
    result_id: int | None
    prev: str | None


def verify(branch: ResultsBranch, *, store=None) -> VerifyReport:
    """Every check of `catalog verify` on `branch`; with `store` (a Database), the store comparison too."""
    root = branch.root()
    report = VerifyReport(branch.branch, branch.where, branch.tip, root)
    lines = _read_lines(branch, root, report)
    _check_ids(lines, report)
    by_hash = {line.digest: line for line in reversed(lines)}  # the first of identical lines
    ledger = _read_ledger(branch, root, report)
    positions = _check_chain(branch, lines, by_hash, ledger, report)
    _check_order(lines, positions, report)
    _check_commits(branch, root, by_hash, report)
    _check_signatures(branch, root, report)
    if store is not None:
        _check_store(branch, store, lines, report)
    return report


def _read_lines(branch: ResultsBranch, root: str, report: VerifyReport) -> list[_Line]:
    entries = [(sha, path) for sha, path in branch.files(root + "history/") if path.endswith(".jsonl")]
    lines: list[_Line] = []
    loads, digest = json.loads, files.line_hash
    for (_, path), data in zip(entries, branch.blobs([sha for sha, _ in entries])):
        parts = data.split(b"\n")
        if parts and parts[-1]:
            report.findings.append(Finding("unparseable", "the file does not end with a newline (a line was cut)",
                                           path, len(parts)))
        for number, text in enumerate(parts, 1):
            if not text:
                continue
            try:
                record = loads(text)
                result_id, prev = record["id"], record.get("prev")
                if not isinstance(result_id, int) or not (prev is None or isinstance(prev, str)):
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                report.findings.append(Finding("unparseable", f"not a history line: {text[:80]!r}", path, number))
                continue
            lines.append(_Line(path, number, text, digest(text), result_id, prev))
    report.lines = len(lines)
    report.chained = sum(1 for line in lines if line.prev is not None)
    return lines


def _check_ids(lines: list[_Line], report: VerifyReport) -> None:
    first: dict[int, _Line] = {}
    for line in lines:
        seen = first.setdefault(line.result_id, line)
        if seen is not line:
            report.findings.append(Finding(
                "id-twice", f"result {line.result_id} appears twice: here and at {seen.path}:{seen.number}",
                line.path, line.number, result_id=line.result_id))


def _read_ledger(branch: ResultsBranch, root: str, report: VerifyReport) -> dict | None:
    text = branch.read(root + files.LEDGER_FILE)
    if text is None:
        return None
    try:
        ledger = json.loads(text)
        if not isinstance(ledger.get("head"), str) or not isinstance(ledger.get("lines"), int):
            raise ValueError
        return ledger
    except (ValueError, AttributeError):
        report.findings.append(Finding("ledger", "ledger.json is not {head, lines, last_id}", root + files.LEDGER_FILE))
        return None


def _check_chain(branch, lines, by_hash, ledger, report) -> dict[str, tuple[int, int]]:
    """Links, the head, and lines outside the chain; each chained line's (segment, distance from its end)."""
    linked: set[str] = set()
    broken: list[_Line] = []
    for line in lines:
        if line.prev is None or line.prev == files.ZERO_HASH:
            continue
        if line.prev in by_hash:
            linked.add(line.prev)
        else:
            broken.append(line)
    head = ledger["head"] if ledger else None
    chained = [line for line in lines if line.prev is not None]
    if head is None and chained:
        report.findings.append(Finding("ledger", "history lines are chained but ledger.json is missing", report.root + files.LEDGER_FILE))
    # Lines nobody links to: the head, else each is a changed line (its successor names its old hash) or one
    # inserted outside the chain.
    ends = [line for line in chained if line.digest not in linked and line.digest != head]
    head_missing = head is not None and head != files.ZERO_HASH and head not in by_hash
    # Fewer chained lines than ledger.json counts: a link to nothing is a removal, not a change.
    removed = max(0, ledger["lines"] - len(chained)) if ledger else 0
    _classify(branch, broken, ends, head_missing, head, removed, report)
    if ledger and not head_missing and head != files.ZERO_HASH and not broken:
        length = _length(head, by_hash)
        if length != ledger["lines"]:
            report.findings.append(Finding(
                "removed-line", f"ledger.json counts {ledger['lines']} chained lines but {length} lead to its head:"
                " lines at the start of the chain were removed", report.root + files.LEDGER_FILE))
    positions: dict[str, tuple[int, int]] = {}
    starts = ([by_hash[head]] if head in by_hash else []) + ends
    for segment, start in enumerate(starts):
        distance, line = 0, start
        while line is not None and line.digest not in positions and line.prev is not None:
            positions[line.digest] = (segment, distance)
            distance += 1
            line = by_hash.get(line.prev)
    return positions


def _length(head: str, by_hash: dict[str, _Line]) -> int:
    count, line, seen = 0, by_hash.get(head), set()
    while line is not None and line.prev is not None and line.digest not in seen:
        seen.add(line.digest)
        count += 1
        line = by_hash.get(line.prev)
    return count


def _classify(branch, broken, ends, head_missing, head, removed, report) -> None:
    """Pair each link to nothing with the line it should have named: a changed line; unpaired, or while
    lines are missing from ledger.json's count, a removed one (the line before it then links to nothing)."""
    ends = list(ends)

    def take_end_before(line: _Line | None) -> _Line | None:
        if line is not None:
            for end in ends:
                if end.path == line.path and end.number == line.number - 1:
                    ends.remove(end)
                    return end
        return ends.pop() if len(ends) == 1 and (line is None or len(broken) == 1) else None

    for line in broken:
        end = take_end_before(line)
        if removed > 0:
            removed -= 1
            end = None
        if end is not None:
            _changed(branch, end, f"the next line ({line.path}:{line.number}) links to its hash as it was", report)
        else:
            report.findings.append(Finding(
                "removed-line", f"the line before result {line.result_id} is gone: its prev {line.prev[:12]} names no line",
                line.path, line.number, result_id=line.result_id))
    if head_missing:
        end = take_end_before(None)
        if removed > 0:
            end = None
        if end is not None:
            _changed(branch, end, f"ledger.json names its hash as it was ({head[:12]})", report)
        else:
            report.findings.append(Finding(
                "removed-line", f"ledger.json's head {head[:12]} names no line: the newest line was removed",
                report.root + files.LEDGER_FILE))
    for end in ends:
        report.findings.append(Finding(
            "outside-chain", f"the line of result {end.result_id} is linked to by no line: added outside the chain",
            end.path, end.number, _blame(branch, end), end.result_id))


def _changed(branch, line: _Line, why: str, report: VerifyReport) -> None:
    commit = _blame(branch, line)
    report.findings.append(Finding(
        "changed-line", f"the line of result {line.result_id} was changed in commit {(commit or '?')[:12]}: {why}",
        line.path, line.number, commit, line.result_id))


def _blame(branch: ResultsBranch, line: _Line) -> str | None:
    """The commit that gave this line its present bytes."""
    out = branch.git("blame", "--porcelain", "-L", f"{line.number},{line.number}", branch.tip, "--", line.path, check=False)
    return out.split(b" ", 1)[0].decode() if out else None


def _check_order(lines: list[_Line], positions: dict, report: VerifyReport) -> None:
    """In each file, chained lines sit in chain order (the walk from the head counts down along a file)."""
    previous: _Line | None = None
    reported = 0
    for line in lines:
        place = positions.get(line.digest)
        if previous is not None and previous.path == line.path and place is not None:
            before = positions.get(previous.digest)
            if before is not None and before[0] == place[0] and before[1] <= place[1]:
                reported += 1
                if reported <= _DETAILED:
                    report.findings.append(Finding(
                        "reordered", f"the line of result {line.result_id} was written before the line above it"
                        f" (result {previous.result_id}): lines were reordered", line.path, line.number,
                        result_id=line.result_id))
        previous = line if place is not None else previous if previous and previous.path == line.path else None


def _check_commits(branch: ResultsBranch, root: str, by_hash: dict, report: VerifyReport) -> None:
    """Each commit's Ledger-Head is still a line; no commit shrank a history file."""
    log = branch.git("log", "--no-renames", "--raw", "--no-abbrev", "-z",
                     f"--format=%x01%H%x00%(trailers:key={files.LEDGER_TRAILER},valueonly,separator=%x20)",
                     branch.tip, "--", root + "history/", root + files.LEDGER_FILE).decode("utf-8", "replace")
    named = {line.prev for line in by_hash.values()}  # a head still named by its successor: a changed line, reported above
    changes: list[tuple[str, str, str, str]] = []  # commit, old blob, new blob, path
    for chunk in log.split("\x01")[1:]:
        fields = chunk.split("\x00")
        commit, trailer = fields[0], fields[1].strip() if len(fields) > 1 else ""
        report.commits += 1
        if trailer and trailer != files.ZERO_HASH and trailer not in by_hash and trailer not in named:
            report.findings.append(Finding(
                "rewritten-commit", f"commit {commit[:12]} names Ledger-Head {trailer[:12]}, which no line of the branch"
                " has any more: lines written up to that commit were changed or removed since", commit=commit))
        rest = fields[2:]
        for meta, path in zip(rest[0::2], rest[1::2]):
            parts = meta.strip().split()
            if len(parts) >= 4 and path.startswith(root + "history/"):
                changes.append((commit, parts[2], parts[3], path))
    blobs = sorted({sha for _, old, new, _ in changes for sha in (old, new) if set(sha) != {"0"}})
    sizes = _sizes(branch, blobs)
    for commit, old, new, path in changes:
        if set(old) != {"0"} and (set(new) == {"0"} or sizes.get(new, 0) < sizes.get(old, 0)):
            report.findings.append(Finding(
                "shrunk-file", f"commit {commit[:12]} {'deleted' if set(new) == {'0'} else 'shortened'} the file:"
                " written lines were removed", path, commit=commit))


def _sizes(branch: ResultsBranch, shas: list[str]) -> dict[str, int]:
    if not shas:
        return {}
    out = branch.git("cat-file", "--batch-check", stdin=("\n".join(shas) + "\n").encode()).decode()
    sizes = {}
    for row in out.splitlines():
        parts = row.split()
        if len(parts) == 3:
            sizes[parts[0]] = int(parts[2])
    return sizes


def _check_signatures(branch: ResultsBranch, root: str, report: VerifyReport) -> None:
    """With results/allowed_signers on the branch, every commit since it was added is signed by one of its keys."""
    signers_path = root + files.ALLOWED_SIGNERS_FILE
    signers = branch.read(signers_path)
    if signers is None:
        return
    added = branch.git("log", "--format=%H", "--diff-filter=A", branch.tip, "--", signers_path).decode().split()
    if not added:
        return
    first = added[-1]
    report.signed_from = first
    parents = branch.git("rev-list", "--parents", "-n", "1", first).decode().split()[1:]
    span = [f"^{parent}" for parent in parents] + [branch.tip]
    with tempfile.NamedTemporaryFile("wb", suffix=".allowed_signers") as handle:
        handle.write(signers)
        handle.flush()
        out = branch.git("-c", f"gpg.ssh.allowedSignersFile={handle.name}", "log", "--format=%H %G?", *span).decode()
    for row in out.splitlines():
        commit, _, state = row.partition(" ")
        if state == "G":
            continue
        if state == "N":
            report.findings.append(Finding("unsigned-commit", f"commit {commit[:12]} is not signed, but every commit"
                                           f" since {first[:12]} added {signers_path} must be", commit=commit))
        else:
            why = {"B": "a bad signature", "U": "a key not in allowed_signers", "E": "a signature git cannot check",
                   "X": "an expired signature", "Y": "an expired key", "R": "a revoked key"}.get(state, f"state {state}")
            report.findings.append(Finding("wrongly-signed-commit", f"commit {commit[:12]} is signed with {why}"
                                           f" ({signers_path} lists the allowed keys)", commit=commit))


def _check_store(branch: ResultsBranch, store, lines: list[_Line], report: VerifyReport) -> None:
    """Every finished result written back is on the branch, as the store has it; no line of another result."""
    in_git = {line.result_id: line for line in reversed(lines)}
    finished = store.writeback.finished()
    missing = [rid for rid, written in finished.items() if written and rid not in in_git]
    report.queued = sum(1 for rid, written in finished.items() if not written and rid not in in_git)
    for rid in missing[:_DETAILED]:
        report.findings.append(Finding("missing-result", f"finished result {rid} was written back but is not on the"
                                       " branch", result_id=rid))
    if len(missing) > _DETAILED:
        report.findings.append(Finding("missing-result", f"and {len(missing) - _DETAILED} more finished results"))
    strangers = [line for rid, line in in_git.items() if rid not in finished]
    for line in strangers[:_DETAILED]:
        report.findings.append(Finding("not-in-store", f"result {line.result_id} is no finished result of this store",
                                       line.path, line.number, result_id=line.result_id))
    ids = sorted(rid for rid in in_git if rid in finished)
    for start in range(0, len(ids), 10_000):
        rows = store.writeback.results(ids[start : start + 10_000])
        for rid, row in rows.items():
            line = in_git[rid]
            expected_path = files.history_path(report.root, row["finished_at"])
            if files.history_line(row) != files.unchained(line.text.decode("utf-8", "replace")) or expected_path != line.path:
                report.findings.append(Finding("changed-line", f"the line of result {rid} differs from the store",
                                               line.path, line.number, _blame(branch, line), rid))


def default_branch(store) -> str:
    """The results branch catalog.yaml names (its writeback.branch), from a synced store."""
    from .schema import CatalogConfig

    return CatalogConfig.from_stored(store.state.get("catalog_config")).writeback.branch


def lines_of(report: VerifyReport) -> list[str]:
    """What `catalog verify` prints: a summary line, then one line per finding."""
    what = (f"{report.lines} history lines ({report.chained} chained) in {report.commits} commits of branch"
            f" {report.branch} of {report.where} (tip {report.tip[:12]})")
    if report.signed_from:
        what += f"; commits signed since {report.signed_from[:12]}"
    if report.queued:
        what += f"; {report.queued} finished results are queued for write-back"
    if report.ok:
        return [f"verified: {what}"]
    return [f"{len(report.findings)} findings in {what}:"] + [str(finding) for finding in report.findings]
