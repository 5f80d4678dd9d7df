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

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from typing import Callable

import msgspec

from . import writeback_files as files
from .ledger import ResultsBranch
from .progress import Progress

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


class _Parsed(msgspec.Struct):
    """What verify needs of a line: msgspec checks the whole line is JSON and decodes these two fields
    (json.loads costs ~7x as much; bench/bench_trust.py ledger: 1,000,000 lines within 10 s needs it)."""

    id: int
    prev: str | None = None


_decode = msgspec.json.Decoder(_Parsed).decode


@dataclass(frozen=True)
class _Line:
    """One history line, made only for the lines a finding names."""

    index: int
    path: str
    number: int
    result_id: int
    digest: str
    prev: str | None


class _Lines:
    """The branch's history lines as columns, one entry per line in file order: a million objects cost
    more than every check together (bench/bench_trust.py ledger)."""

    def __init__(self, keep_text: bool):
        self.paths: list[str] = []
        self.file: list[int] = []  # index into paths
        self.number: list[int] = []  # 1-based line number in its file
        self.digest: list[str] = []
        self.id: list[int] = []
        self.prev: list[str | None] = []
        self.text: list[bytes] | None = [] if keep_text else None

    def __len__(self) -> int:
        return len(self.id)

    def at(self, index: int) -> _Line:
        return _Line(index, self.paths[self.file[index]], self.number[index], self.id[index], self.digest[index],
                     self.prev[index])


def verify(branch: ResultsBranch, *, store=None, progress: Callable[[str, int], Progress] | None = None) -> VerifyReport:
    """Every check of `catalog verify` on `branch`; with `store` (a Database), the store comparison too.
    `progress(description, total)` gives an `advance(count)` for the long parts: reading the history
    files (per file) and comparing with the store (per result)."""
    root = branch.root()
    report = VerifyReport(branch.branch, branch.where, branch.tip, root)
    lines = _read_lines(branch, root, report, keep_text=store is not None, progress=progress)
    _check_ids(lines, report)
    # digest -> the index of the first line with it (dict() keeps the last of equal keys: built backwards)
    by_hash = dict(zip(reversed(lines.digest), range(len(lines) - 1, -1, -1)))
    ledger = _read_ledger(branch, root, report)
    positions = _check_chain(branch, lines, by_hash, ledger, report)
    _check_order(lines, positions, report)
    _check_commits(branch, root, lines, by_hash, report)
    _check_signatures(branch, root, report)
    if store is not None:
        _check_store(branch, store, lines, report, progress)
    return report


def _read_lines(branch: ResultsBranch, root: str, report: VerifyReport, *, keep_text: bool,
                progress: Callable[[str, int], Progress] | None = None) -> _Lines:
    entries = [(sha, path) for sha, path in branch.files(root + "history/") if path.endswith(".jsonl")]
    advance = progress("reading history files", len(entries)) if progress else None
    lines = _Lines(keep_text)
    sha256, decode = hashlib.sha256, _decode
    for (_, path), data in zip(entries, branch.blobs([sha for sha, _ in entries])):
        file = len(lines.paths)
        lines.paths.append(path)
        parts = data.split(b"\n")
        if parts[-1]:
            report.findings.append(Finding("unparseable", "the file does not end with a newline (a line was cut)",
                                           path, len(parts)))
        else:
            parts.pop()
        try:  # the usual file: every line decodes, none is blank; its columns are made by comprehensions
            if not all(parts):
                raise msgspec.DecodeError("a blank line")
            parsed = [decode(text) for text in parts]
            numbers = range(1, len(parts) + 1)
        except msgspec.DecodeError:
            parsed, numbers, kept = [], [], []
            for number, text in enumerate(parts, 1):
                if not text:
                    continue
                try:
                    parsed.append(decode(text))
                except msgspec.DecodeError:
                    report.findings.append(Finding("unparseable", f"not a history line: {text[:80]!r}", path, number))
                    continue
                numbers.append(number)
                kept.append(text)
            parts = kept
        lines.file += [file] * len(parts)
        lines.number += numbers
        lines.digest += [sha256(text).hexdigest() for text in parts]
        lines.id += [line.id for line in parsed]
        lines.prev += [line.prev for line in parsed]
        if lines.text is not None:
            lines.text += parts
        if advance is not None:
            advance(1)
    report.lines = len(lines)
    report.chained = len(lines) - lines.prev.count(None)
    return lines


def _check_ids(lines: _Lines, report: VerifyReport) -> None:
    if len(set(lines.id)) == len(lines):
        return
    first: dict[int, int] = {}
    for index, result_id in enumerate(lines.id):
        seen = first.setdefault(result_id, index)
        if seen != index:
            line, other = lines.at(index), lines.at(seen)
            report.findings.append(Finding(
                "id-twice", f"result {result_id} appears twice: here and at {other.path}:{other.number}",
                line.path, line.number, result_id=result_id))


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


def _check_chain(branch, lines: _Lines, by_hash, ledger, report) -> dict[str, tuple[int, int]] | None:
    """Links, the head, and lines outside the chain. Returns each chained line's (segment, distance from
    its segment's end) when some file's neighbours are not direct links (see _check_order), else None."""
    zero, prevs, digests = files.ZERO_HASH, lines.prev, lines.digest
    linked = {prev for prev in prevs if prev is not None}
    broken = [lines.at(i) for i, prev in enumerate(prevs) if prev is not None and prev != zero and prev not in by_hash]
    head = ledger["head"] if ledger else None
    chained = report.chained
    if head is None and chained:
        report.findings.append(Finding("ledger", "history lines are chained but ledger.json is missing", report.root + files.LEDGER_FILE))
    # Lines nobody links to: the head, else each is a changed line (its successor names its old hash) or one
    # inserted outside the chain.
    ends = [lines.at(i) for i, (digest, prev) in enumerate(zip(digests, prevs))
            if prev is not None and digest not in linked and digest != head]
    head_missing = head is not None and head != zero and head not in by_hash
    # Fewer chained lines than ledger.json counts: a link to nothing is a removal, not a change.
    removed = max(0, ledger["lines"] - chained) if ledger else 0
    _classify(branch, broken, ends, head_missing, head, removed, report)
    walk = not all(_directly_linked(lines))
    positions = _walk(lines, by_hash, head, ends) if walk or broken or ends else None
    if ledger and not head_missing and head != zero and not broken:
        length = chained if positions is None else sum(1 for segment, _ in positions.values() if segment == 0)
        if length != ledger["lines"]:
            report.findings.append(Finding(
                "removed-line", f"ledger.json counts {ledger['lines']} chained lines but {length} lead to its head:"
                " lines at the start of the chain were removed", report.root + files.LEDGER_FILE))
    return positions if walk else None


def _directly_linked(lines: _Lines):
    """For each pair of chained neighbours in one file: does the second name the first as its prev?"""
    file, prev, digest = lines.file, lines.prev, lines.digest
    return (prev[i] == digest[i - 1] for i in range(1, len(lines))
            if file[i] == file[i - 1] and prev[i] is not None and prev[i - 1] is not None)


def _walk(lines: _Lines, by_hash, head, ends) -> dict[str, tuple[int, int]]:
    """(segment, distance) of each chained line, walking back from the head and from each line nobody links to."""
    positions: dict[str, tuple[int, int]] = {}
    starts = ([by_hash[head]] if head in by_hash else []) + [end.index for end in ends]
    for segment, index in enumerate(starts):
        distance = 0
        while index is not None and lines.prev[index] is not None and lines.digest[index] not in positions:
            positions[lines.digest[index]] = (segment, distance)
            distance += 1
            index = by_hash.get(lines.prev[index])
    return positions


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
        if removed == 0 and any(end.index == line.index for end in ends):
            # Nobody links to it and its own prev names nothing: its bytes changed, prev included (its
            # successor or the head names it below). The line above is unlinked because of that, not changed.
            take_end_before(line)
            continue
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


def _check_order(lines: _Lines, positions, report: VerifyReport) -> None:
    """In each file, chained lines sit in chain order (the walk from the head counts down along a file)."""
    if positions is None:
        return  # every neighbour in a file links to the line above it
    reported = 0
    previous = None
    for index in range(len(lines)):
        place = positions.get(lines.digest[index])
        if previous is not None and lines.file[previous] == lines.file[index] and place is not None:
            before = positions.get(lines.digest[previous])
            if before is not None and before[0] == place[0] and before[1] <= place[1]:
                reported += 1
                if reported <= _DETAILED:
                    line = lines.at(index)
                    report.findings.append(Finding(
                        "reordered", f"the line of result {line.result_id} was written before the line above it"
                        f" (result {lines.id[previous]}): lines were reordered", line.path, line.number,
                        result_id=line.result_id))
        if place is not None:
            previous = index


def _check_commits(branch: ResultsBranch, root: str, lines: _Lines, by_hash: dict, report: VerifyReport) -> None:
    """Each commit's Ledger-Head is still a line; no commit shrank a history file."""
    log = branch.git("log", "--no-renames", "--raw", "--no-abbrev", "-z",
                     f"--format=%x01%H%x00%(trailers:key={files.LEDGER_TRAILER},valueonly,separator=%x20)",
                     branch.tip, "--", root + "history/", root + files.LEDGER_FILE).decode("utf-8", "replace")
    named = set(lines.prev)  # a head still named by its successor: a changed line, reported above
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
    """With results/allowed_signers on the branch, every commit since it was added is signed by a key the
    file listed before that commit (the first one: by a key it adds), so a commit adding a key of its own
    does not vouch for itself."""
    signers_path = root + files.ALLOWED_SIGNERS_FILE
    if branch.read(signers_path) is None:
        return
    added = branch.git("log", "--format=%H", "--diff-filter=A", branch.tip, "--", signers_path).decode().split()
    if not added:
        return
    first = added[-1]
    report.signed_from = first
    parents = branch.git("rev-list", "--parents", "-n", "1", first).decode().split()[1:]
    span = [f"^{parent}" for parent in parents] + [branch.tip]
    commits = branch.git("rev-list", "--topo-order", "--reverse", *span).decode().split()
    changed = set(branch.git("rev-list", *span, "--", signers_path).decode().split())
    groups: dict[str, list[str]] = {}  # the commit whose allowed_signers applies -> the commits it vouches for
    version = first
    for commit in commits:
        groups.setdefault(version, []).append(commit)
        if commit in changed:
            version = commit  # applies from the next commit on
    states: dict[str, str] = {}
    for version, vouched in groups.items():
        with tempfile.NamedTemporaryFile("wb", suffix=".allowed_signers") as handle:
            handle.write(branch.read(signers_path, version) or b"")
            handle.flush()
            out = branch.git("-c", f"gpg.ssh.allowedSignersFile={handle.name}", "log", "--no-walk=unsorted",
                             "--stdin", "--format=%H %G?", stdin=("\n".join(vouched) + "\n").encode()).decode()
        states.update(row.split(" ", 1) for row in out.splitlines() if " " in row)
    for commit in reversed(commits):  # newest first, as git log lists them
        state = states.get(commit, "N")
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


def _check_store(branch: ResultsBranch, store, lines: _Lines, report: VerifyReport,
                 progress: Callable[[str, int], Progress] | None = None) -> None:
    """Every finished result written back is on the branch, as the store has it; no line of another result."""
    in_git = dict(zip(reversed(lines.id), range(len(lines) - 1, -1, -1)))  # id -> its first line
    finished = store.writeback.finished()
    missing = [rid for rid, written in finished.items() if written and rid not in in_git]
    report.queued = sum(1 for rid, written in finished.items() if not written and rid not in in_git)
    for rid in missing[:_DETAILED]:
        report.findings.append(Finding("missing-result", f"finished result {rid} was written back but is not on the"
                                       " branch", result_id=rid))
    if len(missing) > _DETAILED:
        report.findings.append(Finding("missing-result", f"and {len(missing) - _DETAILED} more finished results"))
    strangers = [index for rid, index in in_git.items() if rid not in finished]
    for index in strangers[:_DETAILED]:
        line = lines.at(index)
        report.findings.append(Finding("not-in-store", f"result {line.result_id} is no finished result of this store",
                                       line.path, line.number, result_id=line.result_id))
    ids = sorted(rid for rid in in_git if rid in finished)
    advance = progress("comparing with the store", len(ids)) if progress else None
    for start in range(0, len(ids), 10_000):
        rows = store.writeback.results(ids[start : start + 10_000])
        if advance is not None:
            advance(len(rows))
        for rid, row in rows.items():
            index = in_git[rid]
            line = lines.at(index)
            text = lines.text[index].decode("utf-8", "replace")
            if files.history_line(row) != files.unchained(text) or files.history_path(report.root, row["finished_at"]) != line.path:
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
