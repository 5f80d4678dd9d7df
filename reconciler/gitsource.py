"""Where the catalog files come from: a git repository (cloned and fetched) or a plain directory."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Iterator, Protocol

import git

from .errors import ConfigError, SourceError
from .loader import list_catalog_files
from .safe_read import read_bytes
from .logs import redact_credentials
from .settings import Settings

# git's gc.auto for the catalog's clone: git estimates loose objects from objects/17/ alone, as 256
# times the files there, and packs when that passes gc.auto rounded up to 256: from 2 files, ~500 objects.
PACK_LOOSE_FROM = 256
# Never let git wait for a password or a host-key answer on a terminal nobody watches.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes", "GIT_ASKPASS": "/bin/false"}


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Held by one process at a time (an exclusive `flock` on `path`, made if missing): a git folder
    of CATALOG_HOME that two writers would break (the sync's checkout, the write-back's clone)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Source(Protocol):
    """A catalog source: `fetch` brings `root` to the newest revision and returns that revision."""

    root: Path
    description: str

    def fetch(self) -> str: ...

    def changed_paths(self, old: str, new: str) -> set[str] | None:
        """Paths changed between two revisions, or None when unknown (then everything is re-read)."""

    def exclusive(self) -> contextlib.AbstractContextManager:
        """Held while a sync fetches `root` and reads it: no other process moves it meanwhile."""


class DirectorySource:
    """A plain directory that is not a git repository; its revision is a hash of its catalog files."""

    def __init__(self, path: str | Path):
        self.root = Path(path).resolve()
        self.description = str(self.root)

    def exclusive(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # somebody else's folder: nothing here moves it

    def fetch(self) -> str:
        if not self.root.is_dir():
            raise SourceError(f"catalog directory {self.root} does not exist")
        digest = hashlib.sha256()
        for relative, data in read_bytes(self.root, list_catalog_files(self.root)):
            digest.update(relative.encode() + b"\0")
            # an unreadable file (a FIFO, a device, too big) counts by its error: the reader reports it
            digest.update(hashlib.sha256(data if isinstance(data, bytes) else str(data).encode()).digest())
        return "dir-" + digest.hexdigest()[:40]

    def changed_paths(self, old: str, new: str) -> set[str] | None:
        return None  # no history to diff: the reconciler compares file digests instead


class GitSource:
    """A git repository (URL or local path) cloned into `checkout`, checked out at the branch's head."""

    def __init__(self, url: str, checkout: str | Path, branch: str | None = None):
        self.url = url
        self.root = Path(checkout)
        self.branch = branch
        self.description = f"{redact_credentials(url)} ({branch or 'default branch'})"
        self._repo: git.Repo | None = None
        self._default: str | None = None  # the remote's default branch, asked once per process
        self._last_diff: tuple[str, str, frozenset[str]] | None = None  # (old, new, paths) of the last fetch

    def exclusive(self) -> contextlib.AbstractContextManager:
        """The checkout to this process, from its fetch to the last file read: a cron `catalog sync`
        beside `serve`'s webhook sync fetched into one checkout at once (`cannot lock ref`, recorded as
        a failed sync), and one could move the files the other was reading."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        return exclusive_lock(self.root.with_name(self.root.name + ".lock"))

    def fetch(self) -> str:
        repo = self._open_or_clone()
        try:
            with repo.git.custom_environment(**GIT_ENV):
                if repo.remotes.origin.url != self.url:
                    repo.git.remote("set-url", "origin", self.url)
                self._fetch(repo, self.branch or self._default)
                if self.branch is None and self._default is None:
                    self._default = self._default_branch(repo)
                branch = self.branch or self._default
                sha = self._branch_head(repo, f"refs/remotes/origin/{branch}")
                if sha is None:
                    raise SourceError(f"branch {branch!r} does not exist in {redact_credentials(self.url)}")
                # our own detached checkout at that commit already: the no-op sync stays cheap
                if repo.head.is_detached:
                    current = repo.head.commit.hexsha
                    if current == sha:
                        return sha
                    if self._update_changed_files(repo, current, sha):
                        return sha
                    repo.git.read_tree(current)  # the index may lag behind the files: make it match them
                repo.git.checkout("--force", "--detach", sha)
                return sha
        except git.GitCommandError as error:
            raise SourceError(f"cannot fetch {redact_credentials(self.url)}: {_git_reason(error)}") from None

    def _fetch(self, repo: git.Repo, branch: str | None) -> None:
        """`git fetch` of the branch the sync reads, once it is known (the first fetch of a process
        without CATALOG_BRANCH fetches every branch, to learn the default): not the write-back
        branch's stream of results commits. No submodules: looking for them made every fetch read
        the checkout's index (100,000 entries in bench/bench_sync.py --services 100000, ~30 ms).

        The objects a small fetch brings are stored loose and uncompressed (`core.looseCompression
        0`, this command only; git's default is level 1): a one-file commit in a folder of 100,000
        files brings a 4 MB tree, and compressing it was 60 of the fetch's 260 ms there. `git gc`
        packs them, compressed, as before; a large fetch arrives as a pack and is not affected.

        git's automatic gc (run in the background after a fetch) packs loose objects once it estimates
        more than `gc.auto` of them: its default, 6,700, let about 1,700 such one-file commits pile up,
        7 GB of trees. PACK_LOOSE_FROM makes it pack at about 500 objects, ~0.5 GB there."""
        args = ["origin", "--prune", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head"]
        if branch is not None:
            args.append(f"+refs/heads/{branch}:refs/remotes/origin/{branch}")
        try:
            repo.git(c=["core.looseCompression=0", f"gc.auto={PACK_LOOSE_FROM}"]).fetch(*args)
        except git.GitCommandError as error:
            if branch is not None and "couldn't find remote ref" in str(error.stderr):
                raise SourceError(f"branch {branch!r} does not exist in {redact_credentials(self.url)}") from None
            raise

    def changed_paths(self, old: str, new: str) -> set[str] | None:
        if self._last_diff is not None and self._last_diff[:2] == (old, new):
            return set(self._last_diff[2])  # fetch diffed these two already
        repo = self._open_or_clone()
        try:
            output = repo.git.diff("--name-only", "--no-renames", "-z", old, new)
        except git.GitCommandError:
            return None  # the old revision is unknown here (force-push, new clone): read everything
        return {path for path in output.split("\0") if path}

    def _update_changed_files(self, repo: git.Repo, old: str, new: str) -> bool:
        """Move the checkout from `old` to `new` by rewriting only the files that differ.

        `checkout --force` of a 10,000-file tree reads, checks and rewrites the whole index (most of
        a one-file sync's git time); this writes the changed blobs straight into the work tree and
        leaves the index alone (the checkout is ours alone and nothing reads its index; the fallback
        resets the index first). False, with nothing changed, for anything but plain files under
        plain directories: `checkout --force` handles those.
        """
        try:
            # an index file that does not exist: diff-tree reads the index, which nothing here needs,
            # and the checkout's has 100,000 entries in bench/bench_sync.py --services 100000 (~20 ms)
            raw = repo.git.diff_tree("-r", "-z", "--no-renames", "--no-commit-id", old, new,
                                     env={"GIT_INDEX_FILE": os.path.join(repo.git_dir, "no-index")})
        except git.GitCommandError:
            return False
        fields = raw.split("\0")
        changes = []  # (path, new blob or None for a removal, executable)
        for meta, path in zip(fields[0::2], fields[1::2]):
            if not meta.startswith(":"):
                return False
            old_mode, new_mode, _, new_blob, status = meta[1:].split(" ")
            if not _is_plain_path(path) or status not in ("A", "M", "D", "T"):
                return False
            if status == "D":
                if old_mode not in ("100644", "100755"):
                    return False
                changes.append((path, None, False))
            elif new_mode in ("100644", "100755") and old_mode in ("000000", "100644", "100755"):
                changes.append((path, new_blob, new_mode == "100755"))
            else:
                return False  # symlinks, submodules, type changes
        root = os.path.realpath(self.root)
        for path, _, _ in changes:  # never write through a symlinked directory
            parent = os.path.normpath(os.path.join(root, os.path.dirname(path)))
            if os.path.realpath(parent) != parent:
                return False
            target = os.path.join(root, path)
            if os.path.islink(target) or os.path.isdir(target):
                return False
        blobs = _read_blobs(repo, [blob for _, blob, _ in changes if blob])
        for path, blob, _ in changes:
            if blob is None:
                target = os.path.join(root, path)
                if os.path.lexists(target):
                    os.unlink(target)
                _remove_empty_parents(root, os.path.dirname(path))
        for path, blob, executable in changes:
            if blob is not None:
                target = os.path.join(root, path)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                temporary = target + ".catalog-tmp"
                with open(temporary, "wb") as handle:
                    handle.write(blobs[blob])
                os.chmod(temporary, 0o755 if executable else 0o644)
                os.replace(temporary, target)
        repo.head.set_reference(git.Commit(repo, bytes.fromhex(new)))  # detached, no reflog: as checkout
        self._last_diff = (old, new, frozenset(path for path, _, _ in changes))
        return True

    def _open_or_clone(self) -> git.Repo:
        if self._repo is not None:
            return self._repo
        if (self.root / ".git").is_dir():
            self._repo = git.Repo(self.root)
            return self._repo
        if self.root.exists() and any(self.root.iterdir()):
            raise SourceError(f"{self.root} exists and is not a git checkout; move it away or set another CATALOG_HOME")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._repo = git.Repo.clone_from(self.url, self.root, no_checkout=True, env=GIT_ENV)
        except git.GitCommandError as error:
            raise SourceError(f"cannot clone {redact_credentials(self.url)}: {_git_reason(error)}") from None
        return self._repo

    @staticmethod
    def _branch_head(repo: git.Repo, ref: str) -> str | None:
        """The commit a remote-tracking ref points at; read from the ref files (no git process)."""
        try:
            sha = git.SymbolicReference.dereference_recursive(repo, ref)
        except (ValueError, OSError):
            return None
        try:
            return repo.git.rev_parse("--verify", "--quiet", sha + "^{commit}") if len(sha) != 40 else sha
        except git.GitCommandError:
            return None

    @staticmethod
    def _default_branch(repo: git.Repo) -> str:
        try:
            repo.git.remote("set-head", "origin", "--auto")
            head = repo.git.symbolic_ref("refs/remotes/origin/HEAD")
        except git.GitCommandError:
            raise SourceError("the repository has no default branch (is it empty?); set CATALOG_BRANCH") from None
        return head.removeprefix("refs/remotes/origin/")


def _is_plain_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and all(part not in ("", ".", "..", ".git") for part in parts)


def _read_blobs(repo: git.Repo, blobs: list[str]) -> dict[str, bytes]:
    """Blob contents by sha, from one `git cat-file --batch` process."""
    if not blobs:
        return {}
    unique = sorted(set(blobs))
    process = repo.git.cat_file("--batch", as_process=True, istream=subprocess.PIPE)
    output, _ = process.proc.communicate(("\n".join(unique) + "\n").encode())
    found, offset = {}, 0
    for blob in unique:
        newline = output.index(b"\n", offset)
        header = output[offset:newline].split()
        if len(header) != 3 or header[1] != b"blob":
            raise git.GitCommandError(["git", "cat-file", "--batch"], 128, f"fatal: cannot read blob {blob}")
        size = int(header[2])
        found[blob] = output[newline + 1:newline + 1 + size]
        offset = newline + 1 + size + 1  # the content, then a newline
    return found


def _remove_empty_parents(root: str, directory: str) -> None:
    """Remove `directory` and its parents while they are empty, as checkout does."""
    while directory:
        try:
            os.rmdir(os.path.join(root, directory))
        except OSError:
            return
        directory = os.path.dirname(directory)


def _git_reason(error: git.GitCommandError) -> str:
    """The most telling line of git's stderr, without the command line (which may hold a token)."""
    lines = [line.strip() for line in str(error.stderr or "").splitlines() if line.strip()]
    lines = [line.removeprefix("stderr: ").strip("'").strip() for line in lines]
    for line in lines:
        if line.lower().startswith("fatal:") or "error" in line.lower():
            return line.removeprefix("fatal: ")
    return lines[-1] if lines else f"git exited with status {error.status}"


def is_git_repository(path: Path) -> bool:
    return (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())


def source_from_settings(settings: Settings) -> Source:
    """CATALOG_REPO as a source: a local plain directory, or anything git can clone."""
    if not settings.repo:
        raise ConfigError("no catalog repository: set CATALOG_REPO or pass --repo (a git URL or a local path)")
    local = Path(os.path.expanduser(settings.repo))
    if "://" not in settings.repo and not settings.repo.startswith("git@"):
        if not local.exists():
            raise ConfigError(f"catalog repository {settings.repo} does not exist")
        if not is_git_repository(local):
            if settings.branch:
                raise ConfigError(f"{settings.repo} is a plain directory, not a git repository: it has no branches")
            return DirectorySource(local)
        return GitSource(str(local.resolve()), settings.checkout_path, settings.branch)
    return GitSource(settings.repo, settings.checkout_path, settings.branch)
