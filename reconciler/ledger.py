"""The ledger on the results branch: where the chain of history lines stands, and who signs its commits.

Every history line carries `prev`, the sha256 of the line written before it; the write-back folder's
`ledger.json` (`results/ledger.json`) and each commit's `Ledger-Head:` trailer name the newest line's
hash. A branch written before the ledger continues cleanly: its first chained line links to the last
unchained one (the one with the highest result id), or to 64 zeros on an empty branch. When
catalog.yaml's writeback.path changes, the new folder starts a chain of its own from 64 zeros: a branch
may hold several write-back folders ("roots"), and `ResultsBranch.roots()` names them all.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import writeback_files as files
from .errors import ConfigError


@dataclass(frozen=True)
class ChainState:
    """Where the chain stands at a commit: its head and how many chained lines lead to it."""

    head: str
    lines: int


def chain_state(clone, commit: str | None, root: str) -> ChainState:
    """The chain at `commit` (a `results_clone.Clone`): from its ledger.json, else (a branch written before
    the ledger) the hash of its last unchained line, else zeros."""
    if commit is None:
        return ChainState(files.ZERO_HASH, 0)
    text = clone.read(commit, root + files.LEDGER_FILE)
    if text is not None:
        try:
            ledger = json.loads(text)
            return ChainState(str(ledger["head"]), int(ledger["lines"]))
        except (ValueError, KeyError, TypeError):
            pass  # a broken ledger.json: `catalog verify` reports it; carry on from the lines themselves
    last = last_unchained_line(clone, commit, root)
    return ChainState(files.line_hash(last) if last is not None else files.ZERO_HASH, 0)


def last_unchained_line(clone, commit: str, root: str) -> str | None:
    """The history line with the highest result id among those without `prev`: where the chain begins."""
    best: tuple[int, str] | None = None
    for path in clone.list_files(commit, root + "history/"):
        for line in (clone.read(commit, path) or b"").decode("utf-8", errors="replace").split("\n"):
            result_id = files.line_id(line)
            if result_id is not None and '"prev":' not in line and (best is None or result_id > best[0]):
                best = (result_id, line)
    return best[1] if best else None


@dataclass(frozen=True)
class Signer:
    """An SSH key that signs write-back commits (git's gpg.format=ssh), and its allowed_signers line."""

    key_path: str
    public_key: str  # "ssh-ed25519 AAAA..." (no comment)

    def allowed_line(self, principal: str) -> str:
        return f'{principal} namespaces="git" {self.public_key}'

    def git_config(self) -> list[str]:
        return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.key_path}"]


def signer_for(key_path: str | None) -> Signer | None:
    """The Signer of CATALOG_WRITEBACK_SIGNING_KEY (a private key file), or None when unset."""
    if not key_path:
        return None
    path = Path(key_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"CATALOG_WRITEBACK_SIGNING_KEY: {key_path} is not a file (give the path of an SSH private key)")
    process = subprocess.run(["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
    if process.returncode != 0:
        raise ConfigError(f"CATALOG_WRITEBACK_SIGNING_KEY: {key_path} is not an SSH private key without a passphrase"
                          " (ssh-keygen -y could not read it)")
    public = " ".join(process.stdout.split()[:2])
    return Signer(str(path.resolve()), public)


def with_allowed_signer(current: bytes | None, signer: Signer, principal: str) -> bytes | None:
    """results/allowed_signers with the signer's key added, or None when it is there already. Keys are only
    ever added, so commits signed before a key rotation still verify."""
    text = (current or b"").decode("utf-8", errors="replace")
    if any(signer.public_key in line for line in text.split("\n")):
        return None
    if text and not text.endswith("\n"):
        text += "\n"
    return (text + signer.allowed_line(principal) + "\n").encode()


class ResultsBranch:
    """A results branch to read from git alone: a git directory (a local repository read in place, or a
    bare clone of a remote one) and the branch's tip."""

    def __init__(self, git_dir: str, tip: str, branch: str, where: str):
        self.git_dir = git_dir
        self.tip = tip
        self.branch = branch
        self.where = where  # for messages: the repository as given (credentials redacted)
        self._tip_tree: list[tuple[str, str]] | None = None
        self._ledgers_added: dict[str, str] | None = None

    @classmethod
    def open(cls, repo: str, branch: str, home: Path) -> "ResultsBranch":
        """The branch of `repo` (URL or path); a remote one is fetched into `home/audit` first."""
        from .logs import redact_credentials

        where = redact_credentials(repo)
        local = Path(repo).expanduser()
        if "://" not in repo and not repo.startswith("git@") and local.exists():
            git_dir = _git_dir(local)
            for ref in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
                tip = _git(git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False).strip()
                if tip:
                    return cls(git_dir, tip, branch, where)
            raise ConfigError(f"{where} has no branch {branch!r}: nothing has been written back there (try --branch)")
        from .errors import WritebackError
        from .results_clone import Clone  # GitPython: imported only for a remote repository

        if "://" not in repo and not repo.startswith("git@") and ":" not in repo.split("/")[0]:
            raise ConfigError(f"{where} does not exist: give --repo a repository URL or a local git repository")
        try:
            clone = Clone(home / "audit", repo)
            tip = clone.remote_head(branch)
        except WritebackError as error:  # its words are the write-back's; keep only what went wrong
            raise ConfigError(str(error).split("; ")[0]) from None
        if tip is None:
            raise ConfigError(f"{where} has no branch {branch!r}: nothing has been written back there (try --branch)")
        return cls(str(clone.repo.git_dir), tip, branch, where)

    def git(self, *args: str, check: bool = True, stdin: bytes | None = None) -> bytes:
        return _git(self.git_dir, *args, check=check, stdin=stdin, text=False)

    def roots(self) -> list[str]:
        """Every write-back folder of the branch, by path: each holding history files or a ledger.json at
        the tip, and each that ever held a ledger.json (catalog.yaml's writeback.path may have changed, and
        a folder deleted since is still checked). The top level is ""."""
        tip = self.tree()
        at_tip = {path[: -len(files.LEDGER_FILE)] for _, path in tip if is_file_named(path, files.LEDGER_FILE)}
        return sorted(set(history_files(tip)) | at_tip | set(self.ledgers_added()))

    def ledgers_added(self) -> dict[str, str]:
        """Each folder that ever held a ledger.json -> the commit that first added it, oldest first."""
        if self._ledgers_added is None:
            added = self._added_files(files.LEDGER_FILE)
            self._ledgers_added = {}
            for commit, path in added:
                self._ledgers_added.setdefault(path[: -len(files.LEDGER_FILE)], commit)
        return self._ledgers_added

    def _added_files(self, name: str) -> list[tuple[str, str]]:
        """(commit, path) of every addition of a file called `name`, in any folder, oldest first."""
        out = self.git("log", "--reverse", "--format=%x01%H", "-m", "--name-only", "--diff-filter=A", "-z",
                       self.tip, "--", f":(glob)**/{name}").decode("utf-8", "replace")
        added = []
        for chunk in out.split("\x01")[1:]:
            commit, _, paths = chunk.partition("\0")
            added += [(commit, path) for path in paths.lstrip("\n").split("\0") if is_file_named(path, name)]
        return added

    def tree(self, commit: str | None = None) -> list[tuple[str, str]]:
        """(blob sha, path) of every file at `commit` (the tip), by path."""
        if commit is None and self._tip_tree is not None:
            return self._tip_tree
        out = self.git("ls-tree", "-r", "-z", commit or self.tip).decode("utf-8", "replace")
        entries = []
        for entry in out.split("\0"):
            meta, _, path = entry.partition("\t")
            if path and meta.split()[1] == "blob":
                entries.append((meta.split()[2], path))
        entries.sort(key=lambda entry: entry[1])
        if commit is None:
            self._tip_tree = entries
        return entries

    def parent(self, commit: str) -> str | None:
        """The commit's first parent, or None for a first commit."""
        out = self.git("rev-parse", "--verify", "--quiet", f"{commit}^", check=False).decode().strip()
        return out or None

    def read(self, path: str, commit: str | None = None) -> bytes | None:
        out = self.git("cat-file", "blob", f"{commit or self.tip}:{path}", check=False)
        return out if out or self.exists(path, commit) else None

    def exists(self, path: str, commit: str | None = None) -> bool:
        return bool(self.git("ls-tree", "--name-only", commit or self.tip, "--", path, check=False).strip())

    def blobs(self, shas: list[str]):
        """Each blob's bytes, in order, from one `git cat-file --batch`."""
        if not shas:
            return
        process = subprocess.Popen(["git", "--git-dir", self.git_dir, "cat-file", "--batch"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        feeder = _Feeder(process.stdin, ("\n".join(shas) + "\n").encode())
        feeder.start()
        try:
            for _ in shas:
                header = process.stdout.readline().split()
                size = int(header[2])
                data = process.stdout.read(size)
                process.stdout.read(1)  # the newline after each object
                yield data
        finally:
            feeder.join()
            process.stdout.close()
            process.wait()


class _Feeder:
    """Writes a request to a process's stdin in a thread, so a large batch cannot deadlock on full pipes."""

    def __init__(self, pipe, data: bytes):
        import threading

        self.thread = threading.Thread(target=self._write, args=(pipe, data), daemon=True)

    @staticmethod
    def _write(pipe, data: bytes) -> None:
        try:
            pipe.write(data)
        finally:
            pipe.close()

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join()


def history_root(path: str) -> str | None:
    """The write-back folder a history file (`.jsonl` under a `history/` folder) belongs to: the path before
    its last `history/` folder (`results/history/2026/01/05.jsonl` -> `results/`), else None."""
    if not path.endswith(".jsonl"):
        return None
    parts = path.split("/")
    for at in range(len(parts) - 2, -1, -1):
        if parts[at] == "history":
            return "/".join(parts[:at]) + "/" if at else ""
    return None


def history_files(tree: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """A tree's history files by write-back folder: root -> [(blob sha, path)], in the tree's order."""
    by_root: dict[str, list[tuple[str, str]]] = {}
    for sha, path in tree:
        root = history_root(path) if "history/" in path else None
        if root is not None:
            by_root.setdefault(root, []).append((sha, path))
    return by_root


def no_blob(sha: str) -> bool:
    """git's name for no blob (all zeros): the old side of an added file, the new side of a deleted one."""
    return set(sha) == {"0"}


def is_file_named(path: str, name: str) -> bool:
    """Is `path` a file called `name` (at the top level or in a folder)?"""
    return path == name or path.endswith("/" + name)


def _git_dir(path: Path) -> str:
    out = _git(str(path), "rev-parse", "--absolute-git-dir", check=False, work_tree=True).strip()
    if not out:
        raise ConfigError(f"{path} is not a git repository")
    return out


def _git(git_dir: str, *args: str, check: bool = True, stdin: bytes | None = None, text: bool = True,
         work_tree: bool = False):
    command = ["git", "-C", git_dir, *args] if work_tree else ["git", "--git-dir", git_dir, *args]
    process = subprocess.run(command, input=stdin, capture_output=True)
    if check and process.returncode != 0:
        reason = process.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ConfigError(f"git {args[0]} failed: {reason[-1] if reason else 'unknown error'}")
    return process.stdout.decode("utf-8", "replace") if text else process.stdout
