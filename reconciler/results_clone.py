"""The write-back's own bare clone of the catalog repository: fetch, read, commit and push the results
branch, with git's plumbing (no working tree, no index of the user's)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import git

from .errors import WritebackError
from .gitsource import GIT_ENV
from .ledger import Signer
from .logs import redact_credentials

_PENDING_REF = "refs/writeback/pending"


@dataclass(frozen=True)
class Author:
    """Who writes the commits: the bot's name and email, and the key that signs them (None: unsigned)."""

    name: str
    email: str
    signer: Signer | None = None
    previous: Signer | None = None  # after a key rotation: vouches for the new key (writeback._vouched)



class Clone:
    """The write-back's own bare clone (no working tree): fetch, read, commit and push one branch."""

    def __init__(self, path: Path, url: str):
        path = Path(path)
        if not (path / "HEAD").is_file():
            path.mkdir(parents=True, exist_ok=True)
            git.Repo.init(path, bare=True)
        self.repo = git.Repo(path)
        self.repo.git.update_environment(**GIT_ENV)
        self.url = url
        urls = self._run("config", "--get", "remote.origin.url", check=False)
        if not urls:
            self._run("remote", "add", "origin", url)
        elif urls.strip() != url:
            self._run("remote", "set-url", "origin", url)

    def _run(self, *args: str, check: bool = True, stdin: bytes | None = None) -> str:
        command = ["git", *args]
        if stdin is not None:
            process = self.repo.git.execute(command, istream=subprocess.PIPE, as_process=True)
            out, err = process.proc.communicate(stdin)
            status = process.proc.returncode
            out, err = out.decode(errors="replace"), err.decode(errors="replace")
        else:
            status, out, err = self.repo.git.execute(command, with_extended_output=True, with_exceptions=False)
        if check and status != 0:
            raise WritebackError(f"git {args[0]} failed: {_reason(err or out)}")
        return out if status == 0 else ""

    def remote_head(self, branch: str) -> str | None:
        """The remote branch's head, fetched; None when the branch does not exist yet."""
        status, out, err = self.repo.git.execute(
            ["git", "ls-remote", "origin", f"refs/heads/{branch}"], with_extended_output=True, with_exceptions=False
        )
        if status != 0:
            raise WritebackError(
                f"cannot reach {redact_credentials(self.url)}: {_reason(err)}; finished results stay queued for the next pass"
            )
        if not out.strip():
            return None
        head = out.split()[0]
        if not self.has_commit(head):
            status, _, err = self.repo.git.execute(
                ["git", "fetch", "--no-tags", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}"],
                with_extended_output=True, with_exceptions=False,
            )
            if status != 0:
                raise WritebackError(f"cannot fetch from {redact_credentials(self.url)}: {_reason(err)}; results stay queued")
            head = self._run("rev-parse", f"refs/remotes/origin/{branch}").strip()
        return head

    def has_commit(self, sha: str) -> bool:
        status, _, _ = self.repo.git.execute(
            ["git", "cat-file", "-e", f"{sha}^{{commit}}"], with_extended_output=True, with_exceptions=False
        )
        return status == 0

    def is_ancestor(self, older: str, newer: str) -> bool:
        status, _, _ = self.repo.git.execute(
            ["git", "merge-base", "--is-ancestor", older, newer], with_extended_output=True, with_exceptions=False
        )
        return status == 0

    def read(self, commit: str, path: str) -> bytes | None:
        """A file's bytes at a commit, or None when it does not exist there."""
        try:
            return self.repo.commit(commit).tree[path].data_stream.read()
        except KeyError:
            return None

    def blob(self, sha: str) -> bytes:
        if set(sha) == {"0"}:
            return b""
        return self.repo.odb.stream(bytes.fromhex(sha)).read()

    def changed_files(self, old: str, new: str, prefix: str) -> list[tuple[str, str, str]]:
        """(old blob, new blob, path) of files under prefix that differ; zeros for a missing side."""
        out = self._run("diff", "--raw", "--no-renames", "--no-abbrev", "-z", old, new, "--", prefix)
        fields = out.split("\0")
        changes = []
        for meta, path in zip(fields[0::2], fields[1::2]):
            parts = meta.split()
            if len(parts) >= 4:
                changes.append((parts[2], parts[3], path))
        return changes

    def list_files(self, commit: str, prefix: str) -> list[str]:
        """The paths of the files under `prefix` at `commit`."""
        out = self._run("ls-tree", "-r", "-z", "--name-only", commit, "--", prefix)
        return [path for path in out.split("\0") if path]

    def commit(self, parent: str | None, changed: dict[str, bytes], message: str, author: Author, when: int) -> str:
        """A commit of `changed` on top of `parent` (a root commit when None), without a working tree;
        signed with the author's SSH key when it has one."""
        who = f"{author.name} <{author.email}> {when} +0000".encode()
        body = message.encode()
        chunks = [
            f"reset {_PENDING_REF}\ncommit {_PENDING_REF}\n".encode(),
            b"author " + who + b"\ncommitter " + who + b"\n",
            b"data %d\n" % len(body), body, b"\n",
        ]
        if parent:
            chunks.append(f"from {parent}\n".encode())
        for path, content in sorted(changed.items()):
            chunks += [f"M 100644 inline {path}\n".encode(), b"data %d\n" % len(content), content, b"\n"]
        chunks.append(b"done\n")
        self._run("fast-import", "--quiet", "--force", "--done", stdin=b"".join(chunks))
        commit = self._run("rev-parse", _PENDING_REF).strip()
        if author.signer is not None:
            commit = self._signed(commit, parent, body, author, when)
        return commit

    def _signed(self, commit: str, parent: str | None, message: bytes, author: Author, when: int) -> str:
        """The same tree, parent, author and message as `commit`, signed (fast-import cannot sign)."""
        tree = self._run("rev-parse", f"{commit}^{{tree}}").strip()
        date = f"{when} +0000"
        env = {**os.environ, **GIT_ENV, "GIT_AUTHOR_NAME": author.name, "GIT_AUTHOR_EMAIL": author.email,
               "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_NAME": author.name, "GIT_COMMITTER_EMAIL": author.email,
               "GIT_COMMITTER_DATE": date}
        command = ["git", "--git-dir", self.repo.git_dir, *author.signer.git_config(), "commit-tree", tree, "-S", "-F", "-"]
        if parent:
            command[-3:-3] = ["-p", parent]
        process = subprocess.run(command, input=message, capture_output=True, env=env)
        if process.returncode != 0:
            raise WritebackError(f"signing the write-back commit failed: {_reason(process.stderr.decode(errors='replace'))}")
        return process.stdout.decode().strip()

    def set_branch(self, branch: str, sha: str) -> None:
        self._run("update-ref", f"refs/heads/{branch}", sha)

    def push(self, sha: str, branch: str) -> str | None:
        """None when pushed; else why the remote refused (it moved, or a rule of its own)."""
        status, out, err = self.repo.git.execute(
            ["git", "push", "--porcelain", "origin", f"{sha}:refs/heads/{branch}"],
            with_extended_output=True, with_exceptions=False,
        )
        if status == 0:
            return None
        for line in out.split("\n"):
            if line.startswith("!"):
                return line.split("\t")[-1]
        raise WritebackError(f"cannot push to {redact_credentials(self.url)}: {_reason(err)}; results stay queued for the next pass")


def _reason(stderr: str) -> str:
    """git's most telling line, without command lines that may hold a token."""
    lines = [line.strip() for line in (stderr or "").split("\n") if line.strip()]
    for line in lines:
        if line.lower().startswith(("fatal:", "error:")):
            return redact_credentials(line.split(":", 1)[1].strip())
    return redact_credentials(lines[-1]) if lines else "unknown git error"
