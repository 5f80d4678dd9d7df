"""Who may sign the results branch's commits: its allowed_signers files across history, and each commit's
SSH signature checked against the keys that applied to it (`catalog verify`)."""

from __future__ import annotations

import tempfile

from . import writeback_files as files
from .ledger import ResultsBranch, is_file_named, no_blob
from .verify_report import Finding, VerifyReport


def check_signatures(branch: ResultsBranch, report: VerifyReport) -> None:
    """From the first commit that added an allowed_signers file (in any folder, found in the history, not
    at the tip) to the tip, every commit is signed by a key some allowed_signers file listed before that
    commit (the first commit: by a key it adds, so a commit adding a key of its own does not vouch for
    itself). Keys are only ever added: a key deleted since still applies, and the deleting commit is a finding."""
    changes = _signers_changes(branch)
    if not changes:
        return
    first, _, _, signers_path = changes[0]
    report.signed_from = first
    parents = branch.git("rev-list", "--parents", "-n", "1", first).decode().split()[1:]
    span = [f"^{parent}" for parent in parents] + [branch.tip]
    commits = branch.git("rev-list", "--topo-order", "--reverse", *span).decode().split()
    texts = _blob_lines(branch, changes)
    _check_signers_kept(changes, texts, report)
    states: dict[str, str] = {}
    for keys, vouched in _keys_per_commit(commits, first, changes, texts).items():
        states.update(_signature_states(branch, keys, vouched))
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


def _signers_changes(branch: ResultsBranch) -> list[tuple[str, str, str, str]]:
    """(commit, old blob, new blob, path) of every change to an allowed_signers file in any folder, oldest
    first, starting at the first that added one."""
    log = branch.git("log", "--reverse", "--topo-order", "-m", "--no-renames", "--raw", "--no-abbrev", "-z",
                     "--format=%x01%H", branch.tip, "--", f":(glob)**/{files.ALLOWED_SIGNERS_FILE}").decode("utf-8", "replace")
    changes = []
    for chunk in log.split("\x01")[1:]:
        commit, _, raw = chunk.partition("\x00")
        fields = raw.lstrip("\n").split("\x00")
        for meta, path in zip(fields[0::2], fields[1::2]):
            parts = meta.split()
            if len(parts) >= 4 and is_file_named(path, files.ALLOWED_SIGNERS_FILE):
                changes.append((commit, parts[2], parts[3], path))
    while changes and not no_blob(changes[0][1]):
        changes.pop(0)  # a change before any addition: only a merge shows one
    return changes


def _blob_lines(branch: ResultsBranch, changes) -> dict[str, list[str]]:
    """Each allowed_signers version's key lines (no blanks, no comments), by blob."""
    shas = sorted({sha for _, old, new, _ in changes for sha in (old, new) if not no_blob(sha)})
    texts = {}
    for sha, data in zip(shas, branch.blobs(shas)):
        rows = (row.strip() for row in data.decode("utf-8", "replace").split("\n"))
        texts[sha] = [row for row in rows if row and not row.startswith("#")]
    return texts


def _check_signers_kept(changes, texts: dict[str, list[str]], report: VerifyReport) -> None:
    """Keys are only ever added: a commit deleting an allowed_signers file or a key line of it is a finding."""
    for commit, old, new, path in changes:
        if no_blob(old):
            continue
        if no_blob(new):
            what = "deleted the file"
        elif not set(texts[old]) <= set(texts[new]):
            what = "removed keys from the file"
        else:
            continue
        report.findings.append(Finding("signers-removed", f"commit {commit[:12]} {what}: keys are only ever added",
                                       path, commit=commit))


def _keys_per_commit(commits: list[str], first: str, changes, texts) -> dict[str, list[str]]:
    """The allowed_signers text that applies -> the commits it vouches for: every key line any allowed_signers
    file held before the commit; for the first commit, the lines it adds."""
    added: dict[str, list[str]] = {}
    for commit, _, new, _ in changes:
        if not no_blob(new):
            added.setdefault(commit, []).extend(texts[new])
    held: dict[str, None] = {}  # the key lines so far, in order
    groups: dict[str, list[str]] = {}
    for commit in commits:
        if commit == first:
            held.update(dict.fromkeys(added.get(commit, [])))
        groups.setdefault("".join(line + "\n" for line in held), []).append(commit)
        held.update(dict.fromkeys(added.get(commit, [])))
    return groups


def _signature_states(branch: ResultsBranch, keys: str, commits: list[str]) -> dict[str, str]:
    """git's %G? of each commit, checked against `keys` as allowed_signers."""
    with tempfile.NamedTemporaryFile("wb", suffix=".allowed_signers") as handle:
        handle.write(keys.encode())
        handle.flush()
        out = branch.git("-c", f"gpg.ssh.allowedSignersFile={handle.name}", "log", "--no-walk=unsorted",
                         "--stdin", "--format=%H %G?", stdin=("\n".join(commits) + "\n").encode()).decode()
    return dict(row.split(" ", 1) for row in out.splitlines() if " " in row)
