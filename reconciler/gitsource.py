"""Where the catalog files come from: a git repository (cloned and fetched) or a plain directory."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Protocol

import git

from .errors import ConfigError, SourceError
from .loader import list_catalog_files
from .settings import Settings

# Never let git wait for a password or a host-key answer on a terminal nobody watches.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes", "GIT_ASKPASS": "/bin/false"}


class Source(Protocol):
    """A catalog source: `fetch` brings `root` to the newest revision and returns that revision."""

    root: Path
    description: str

    def fetch(self) -> str: ...

    def changed_paths(self, old: str, new: str) -> set[str] | None:
        """Paths changed between two revisions, or None when unknown (then everything is re-read)."""


class DirectorySource:
    """A plain directory that is not a git repository; its revision is a hash of its catalog files."""

    def __init__(self, path: str | Path):
        self.root = Path(path).resolve()
        self.description = str(self.root)

    def fetch(self) -> str:
        if not self.root.is_dir():
            raise SourceError(f"catalog directory {self.root} does not exist")
        digest = hashlib.sha256()
        for relative in list_catalog_files(self.root):
            digest.update(relative.encode() + b"\0")
            try:
                digest.update(hashlib.sha256((self.root / relative).read_bytes()).digest())
            except OSError:
                digest.update(b"unreadable")
        return "dir-" + digest.hexdigest()[:40]

    def changed_paths(self, old: str, new: str) -> set[str] | None:
        return None  # no history to diff: the reconciler compares file digests instead


class GitSource:
    """A git repository (URL or local path) cloned into `checkout`, checked out at the branch's head."""

    def __init__(self, url: str, checkout: str | Path, branch: str | None = None):
        self.url = url
        self.root = Path(checkout)
        self.branch = branch
        self.description = f"{redact(url)} ({branch or 'default branch'})"
        self._repo: git.Repo | None = None
        self._default: str | None = None  # the remote's default branch, asked once per process

    def fetch(self) -> str:
        repo = self._open_or_clone()
        try:
            with repo.git.custom_environment(**GIT_ENV):
                if repo.remotes.origin.url != self.url:
                    repo.git.remote("set-url", "origin", self.url)
                repo.git.fetch("origin", "--prune", "--no-tags")
                if self.branch is None and self._default is None:
                    self._default = self._default_branch(repo)
                branch = self.branch or self._default
                sha = self._branch_head(repo, f"refs/remotes/origin/{branch}")
                if sha is None:
                    raise SourceError(f"branch {branch!r} does not exist in {redact(self.url)}")
                # our own detached checkout at that commit already: the no-op sync stays cheap
                if repo.head.is_detached and repo.head.commit.hexsha == sha:
                    return sha
                repo.git.checkout("--force", "--detach", sha)
                return sha
        except git.GitCommandError as error:
            raise SourceError(f"cannot fetch {redact(self.url)}: {_git_reason(error)}") from None

    def changed_paths(self, old: str, new: str) -> set[str] | None:
        repo = self._open_or_clone()
        try:
            output = repo.git.diff("--name-only", "--no-renames", "-z", old, new)
        except git.GitCommandError:
            return None  # the old revision is unknown here (force-push, new clone): read everything
        return {path for path in output.split("\0") if path}

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
            raise SourceError(f"cannot clone {redact(self.url)}: {_git_reason(error)}") from None
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


def _git_reason(error: git.GitCommandError) -> str:
    """The most telling line of git's stderr, without the command line (which may hold a token)."""
    lines = [line.strip() for line in str(error.stderr or "").splitlines() if line.strip()]
    lines = [line.removeprefix("stderr: ").strip("'").strip() for line in lines]
    for line in lines:
        if line.lower().startswith("fatal:") or "error" in line.lower():
            return line.removeprefix("fatal: ")
    return lines[-1] if lines else f"git exited with status {error.status}"


def redact(url: str) -> str:
    """A URL without the credentials people put in it (https://TOKEN@github.com/...)."""
    return re.sub(r"(://)[^/@]+@", r"\1***@", url)


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
