"""`catalog verify`: prove from the results branch alone that its history is complete and unaltered.

Every write-back folder ("root") is checked: each holding history files or a ledger.json at the tip, and
each that ever held a ledger.json (catalog.yaml's writeback.path may change; each folder has a chain and
a ledger.json of its own). The branch must hold history lines at all (else it may not be the results
branch). From the tip, per folder: every history line parses; every `prev` names a line (a link to
nothing means the line before was changed or removed); every chained line is linked to by the next, up
to the head that the folder's ledger.json names; each file holds its lines in chain order; a line
without `prev` is one the folder had before its ledger began. Across folders: no result id appears
twice. From the commits, per folder: each `Ledger-Head:` trailer is still a line of the chain (else
lines written by then were rewritten) and no history file ever shrank; from the first commit that added
an allowed_signers file, every commit is signed by a key listed before it (signatures.py). With a
store: every finished result written back is there, exactly as the store has it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Callable

import msgspec

from . import writeback_files as files
from .ledger import ResultsBranch, history_files, history_root, no_blob
from .logs import escape_control
from .progress import Progress
from .signatures import check_signatures
from .verify_report import DETAILED, Finding, VerifyReport


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

    def __init__(self, root: str, keep_text: bool):
        self.root = root
        self.paths: list[str] = []
        self.file: list[int] = []  # index into paths
        self.number: list[int] = []  # 1-based line number in its file
        self.digest: list[str] = []
        self.id: list[int] = []
        self.prev: list[str | None] = []
        self.text: list[bytes] | None = [] if keep_text else None

    def __len__(self) -> int:
        return len(self.id)

    @property
    def chained(self) -> int:
        return len(self.id) - self.prev.count(None)

    def at(self, index: int) -> _Line:
        return _Line(index, self.paths[self.file[index]], self.number[index], self.id[index], self.digest[index],
                     self.prev[index])


def verify(branch: ResultsBranch, *, store=None, progress: Callable[[str, int], Progress] | None = None) -> VerifyReport:
    """Every check of `catalog verify` on `branch`; with `store` (a Database), the store comparison too.
    `progress(description, total)` gives an `advance(count)` for the long parts: reading the history
    files (per file) and comparing with the store (per result)."""
    roots = branch.roots()
    report = VerifyReport(branch.branch, branch.where, branch.tip, roots)
    every = _read_roots(branch, roots, report, keep_text=store is not None, progress=progress)
    if not report.lines:
        report.findings.append(Finding("no-history", f"branch {branch.branch} has no history line: it may not be the"
                                       " results branch (catalog.yaml's writeback.branch; try --branch)"))
    _check_ids(every, report)
    commits: set[str] = set()
    for lines in every:
        commits |= _check_root(branch, lines, report)
    report.commits = len(commits)
    check_signatures(branch, report)
    if store is not None:
        _check_store(branch, store, every, report, progress)
    return report


def _check_root(branch: ResultsBranch, lines: _Lines, report: VerifyReport) -> set[str]:
    """The checks of one write-back folder, which has a chain and a ledger.json of its own; the commits
    that wrote to it."""
    # digest -> the index of the first line with it (dict() keeps the last of equal keys: built backwards)
    by_hash = dict(zip(reversed(lines.digest), range(len(lines) - 1, -1, -1)))
    ledger = _read_ledger(branch, lines.root, report)
    positions = _check_chain(branch, lines, by_hash, ledger, report)
    _check_order(lines, positions, report)
    _check_unchained(branch, lines, report)
    return _check_commits(branch, lines, by_hash, report)


def _read_roots(branch: ResultsBranch, roots: list[str], report: VerifyReport, *, keep_text: bool,
                progress: Callable[[str, int], Progress] | None = None) -> list[_Lines]:
    """The history lines of each write-back folder at the tip."""
    by_root = history_files(branch.tree())
    advance = progress("reading history files", sum(len(by_root.get(root, [])) for root in roots)) if progress else None
    every = [_read_lines(branch, root, by_root.get(root, []), report, keep_text, advance) for root in roots]
    report.lines = sum(len(lines) for lines in every)
    report.chained = sum(lines.chained for lines in every)
    return every


def _read_lines(branch: ResultsBranch, root: str, entries: list[tuple[str, str]], report: VerifyReport,
                keep_text: bool, advance: Callable[[int], None] | None) -> _Lines:
    lines = _Lines(root, keep_text)
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
    return lines


def _check_ids(every: list[_Lines], report: VerifyReport) -> None:
    """No result id on two lines, in one folder or across folders."""
    if len(set(itertools.chain.from_iterable(lines.id for lines in every))) == report.lines:
        return
    first: dict[int, tuple[_Lines, int]] = {}
    for lines in every:
        for index, result_id in enumerate(lines.id):
            seen, at = first.setdefault(result_id, (lines, index))
            if seen is not lines or at != index:
                line, other = lines.at(index), seen.at(at)
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
    chained = lines.chained
    if head is None and chained:
        report.findings.append(Finding("ledger", "history lines are chained but ledger.json is missing", lines.root + files.LEDGER_FILE))
    # Lines nobody links to: the head, else each is a changed line (its successor names its old hash) or one
    # inserted outside the chain.
    ends = [lines.at(i) for i, (digest, prev) in enumerate(zip(digests, prevs))
            if prev is not None and digest not in linked and digest != head]
    head_missing = head is not None and head != zero and head not in by_hash
    # Fewer chained lines than ledger.json counts: a link to nothing is a removal, not a change.
    removed = max(0, ledger["lines"] - chained) if ledger else 0
    _classify(branch, lines.root, broken, ends, head_missing, head, removed, report)
    walk = not all(_directly_linked(lines))
    positions = _walk(lines, by_hash, head, ends) if walk or broken or ends else None
    if ledger and not head_missing and head != zero and not broken:
        length = chained if positions is None else sum(1 for segment, _ in positions.values() if segment == 0)
        if length != ledger["lines"]:
            report.findings.append(Finding(
                "removed-line", f"ledger.json counts {ledger['lines']} chained lines but {length} lead to its head:"
                " lines at the start of the chain were removed", lines.root + files.LEDGER_FILE))
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


def _classify(branch, root, broken, ends, head_missing, head, removed, report) -> None:
    """Pair each link to nothing with the line it should have named: a changed line; unpaired, or while
    lines are missing from ledger.json's count, a removed one (the line before it then links to nothing)."""
    ends = list(ends)

    def take_end_before(line: _Line | None) -> _Line | None:
        if line is not None:
            for end in ends:
                if end.path == line.path and end.number == line.number - 1:
                    ends.remove(end)
                    return end
        others = [end for end in ends if line is None or end.index != line.index]  # never the line itself
        if len(others) == 1 and (line is None or len(broken) == 1):
            ends.remove(others[0])
            return others[0]
        return None

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
                root + files.LEDGER_FILE))
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
                if reported <= DETAILED:
                    line = lines.at(index)
                    report.findings.append(Finding(
                        "reordered", f"the line of result {line.result_id} was written before the line above it"
                        f" (result {lines.id[previous]}): lines were reordered", line.path, line.number,
                        result_id=line.result_id))
        if place is not None:
            previous = index


def _check_commits(branch: ResultsBranch, lines: _Lines, by_hash: dict, report: VerifyReport) -> set[str]:
    """Each commit's Ledger-Head is still a line of the folder's chain; no commit shrank a history file.
    Returns the commits that wrote to the folder."""
    root = lines.root
    history, ledger = root + "history/", root + files.LEDGER_FILE
    # every commit, merges too, each against each parent: history simplification follows one TREESAME
    # parent of a merge and hid the commits (and Ledger-Head trailers) of the other side
    log = branch.git("log", "--full-history", "-m", "--no-renames", "--raw", "--no-abbrev", "-z",
                     f"--format=%x01%H%x00%(trailers:key={files.LEDGER_TRAILER},valueonly,separator=%x20)",
                     branch.tip, "--", f":(literal){history}", f":(literal){ledger}").decode("utf-8", "replace")
    named = set(lines.prev)  # a head still named by its successor: a changed line, reported above
    commits: set[str] = set()
    changes: list[tuple[str, str, str, str]] = []  # commit, old blob, new blob, path
    for chunk in log.split("\x01")[1:]:
        fields = chunk.split("\x00")
        commit, trailer = fields[0], fields[1].strip() if len(fields) > 1 else ""
        rest = fields[2:]
        mine = [(meta.strip().split(), path) for meta, path in zip(rest[0::2], rest[1::2])
                if path == ledger or (path.startswith(history) and history_root(path) == root)]
        if not mine:
            continue  # it wrote only to a write-back folder inside this one's history/
        first_time = commit not in commits  # a merge comes once per parent
        commits.add(commit)
        if first_time and trailer and trailer != files.ZERO_HASH and trailer not in by_hash and trailer not in named:
            report.findings.append(Finding(
                "rewritten-commit", f"commit {commit[:12]} names Ledger-Head {trailer[:12]}, which no line of {history}"
                " has any more: lines written up to that commit were changed or removed since", commit=commit))
        changes += [(commit, parts[2], parts[3], path) for parts, path in mine if len(parts) >= 4 and path != ledger]
    blobs = sorted({sha for _, old, new, _ in changes for sha in (old, new) if not no_blob(sha)})
    sizes = _sizes(branch, blobs)
    for commit, old, new, path in changes:
        if not no_blob(old) and (no_blob(new) or sizes.get(new, 0) < sizes.get(old, 0)):
            report.findings.append(Finding(
                "shrunk-file", f"commit {commit[:12]} {'deleted' if no_blob(new) else 'shortened'} the file:"
                " written lines were removed", path, commit=commit))
    return commits


def _check_unchained(branch: ResultsBranch, lines: _Lines, report: VerifyReport) -> None:
    """Lines without `prev` are history written before the ledger: each must be, byte for byte and in its
    file, a line the folder had just before the commit that added its ledger.json (for a folder that never
    had one: before the branch's first ledger.json). Nothing to do on a branch whose lines are all chained."""
    if lines.chained == len(lines):
        return
    added = branch.ledgers_added()
    began = added.get(lines.root) or next(iter(added.values()), None)
    if began is None:
        return  # no ledger.json was ever written: the whole branch predates the ledger
    before = _lines_at(branch, lines.root, branch.parent(began))
    strays = [index for index, prev in enumerate(lines.prev)
              if prev is None and (lines.paths[lines.file[index]], lines.digest[index]) not in before]
    for index in strays[:DETAILED]:
        line = lines.at(index)
        commit = _blame(branch, line)
        report.findings.append(Finding(
            "outside-chain", f"the line of result {line.result_id} has no prev and is not as it was when the ledger"
            f" began: added or changed in commit {(commit or '?')[:12]} (only lines written before the ledger may be"
            " unchained)", line.path, line.number, commit, line.result_id))
    if len(strays) > DETAILED:
        report.findings.append(Finding("outside-chain", f"and {len(strays) - DETAILED} more lines without prev"
                                       f" added or changed since the ledger began in {lines.root}history/"))


def _lines_at(branch: ResultsBranch, root: str, commit: str | None) -> set[tuple[str, str]]:
    """(path, sha256) of every history line of the folder at `commit` (none before the first commit)."""
    if commit is None:
        return set()
    entries = history_files(branch.tree(commit)).get(root, [])
    found = set()
    for (_, path), data in zip(entries, branch.blobs([sha for sha, _ in entries])):
        found.update((path, hashlib.sha256(text).hexdigest()) for text in data.split(b"\n") if text)
    return found


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


def _check_store(branch: ResultsBranch, store, every: list[_Lines], report: VerifyReport,
                 progress: Callable[[str, int], Progress] | None = None) -> None:
    """Every finished result written back is on the branch, as the store has it; no line of another result."""
    in_git: dict[int, tuple[_Lines, int]] = {}  # id -> its first line (earlier folders win: updated last)
    for lines in reversed(every):
        in_git.update(zip(reversed(lines.id), ((lines, index) for index in range(len(lines) - 1, -1, -1))))
    finished = store.writeback.finished()
    missing = [rid for rid, written in finished.items() if written and rid not in in_git]
    report.queued = sum(1 for rid, written in finished.items() if not written and rid not in in_git)
    for rid in missing[:DETAILED]:
        report.findings.append(Finding("missing-result", f"finished result {rid} was written back but is not on the"
                                       " branch", result_id=rid))
    if len(missing) > DETAILED:
        report.findings.append(Finding("missing-result", f"and {len(missing) - DETAILED} more finished results"))
    strangers = [place for rid, place in in_git.items() if rid not in finished]
    for lines, index in strangers[:DETAILED]:
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
            lines, index = in_git[rid]
            line = lines.at(index)
            text = lines.text[index].decode("utf-8", "replace")
            if files.history_line(row) != files.unchained(text) or files.history_path(lines.root, row["finished_at"]) != line.path:
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
    if report.roots:
        what += "; folders " + ", ".join(root or "(top level)" for root in report.roots)
    if report.signed_from:
        what += f"; commits signed since {report.signed_from[:12]}"
    if report.queued:
        what += f"; {report.queued} finished results are queued for write-back"
    if report.ok:
        return [f"verified: {escape_control(what)}"]
    # paths and messages quote the branch's own text: no escape sequence of it reaches the terminal
    return [escape_control(f"{len(report.findings)} findings in {what}:")] + [escape_control(str(f)) for f in report.findings]
