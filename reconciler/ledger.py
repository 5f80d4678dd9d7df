"""The ledger on the results branch: where the chain of history lines stands, and who signs its commits.

Every history line carries `prev`, the sha256 of the line written before it; `results/ledger.json`
and each commit's `Ledger-Head:` trailer name the newest line's hash. A branch written before the
ledger continues cleanly: its first chained line links to the last unchained one (the one with the
highest result id), or to 64 zeros on an empty branch.
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
    """The chain at `commit` (a `writeback.Clone`): from its ledger.json, else (a branch written before
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
