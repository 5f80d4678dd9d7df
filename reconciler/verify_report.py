"""What `catalog verify` found: each Finding (kind, file:line, commit, a sentence) and the report of one run."""

from __future__ import annotations

from dataclasses import dataclass, field

DETAILED = 50  # findings of one kind named one by one; the rest are counted


@dataclass(frozen=True)
class Finding:
    """One thing wrong with the branch: what kind, where (file, line, commit) and a sentence."""

    kind: str  # changed-line, removed-line, broken-link, outside-chain, reordered, id-twice, unparseable,
    # ledger, rewritten-commit, shrunk-file, unsigned-commit, wrongly-signed-commit, signers-removed,
    # no-history, missing-result, not-in-store
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
    roots: list[str]  # the write-back folders checked ("" is the top level)
    lines: int = 0
    chained: int = 0
    commits: int = 0
    signed_from: str | None = None  # the first commit that had to be signed
    queued: int = 0  # with a store: finished results not written back yet (not a finding)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings
