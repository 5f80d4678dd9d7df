"""The ledger on the results branch: `catalog verify` passes an honest branch and names each tampering
done in a real clone and force-pushed; signed commits; `catalog as-of` at known times."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import PROJECT, sync_directory
from reconciler.clock import FakeClock
from reconciler.settings import Settings
from reconciler.store import open_database
from reconciler.writeback import writeback_pass
from store_support import answer, new_result
from terminal_support import run_on_terminal

GIT = ["git", "-c", "user.name=Mallory", "-c", "user.email=mallory@example.com"]
DAY_ONE = "results/history/2026/01/05.jsonl"
DAY_TWO = "results/history/2026/01/06.jsonl"


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def catalog(*args: str, home: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real CLI of this worktree."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("CATALOG_")}
    environ.update(PYTHONPATH=str(PROJECT), CATALOG_HOME=str(home), **(env or {}))
    return subprocess.run([sys.executable, "-m", "api.cli", *args], capture_output=True, text=True, env=environ, timeout=120)


class Branch:
    """A store whose results were written back in three commits over two days, to a bare remote."""

    def __init__(self, tmp_path: Path, example_dir: Path, store=None, signing_key: Path | None = None):
        self.tmp = tmp_path
        self.example = example_dir
        self.remote = tmp_path / "remote.git"
        git("init", "-q", "--bare", str(self.remote))
        self.store = store or open_database(tmp_path / "state" / "catalog.db")
        if store is None:
            sync_directory(self.store, example_dir)
        self.clock = FakeClock()
        self.settings = Settings(home=tmp_path / "home", repo=str(self.remote),
                                 writeback_signing_key=str(signing_key) if signing_key else None)
        self.ids: list[int] = []
        self.finished: dict[int, str] = {}

    def finish(self, check: str, service: str | None, result: str) -> int:
        row = new_result(self.store, check, service, now=self.clock.now())
        done = answer(self.store, row["id"], result, now=self.clock.now())
        self.ids.append(done["id"])
        self.finished[done["id"]] = done["finished_at"]
        return done["id"]

    def write(self) -> None:
        report = writeback_pass(self.store, self.settings, clock=self.clock)
        assert report.pushed and not report.findings, report.findings

    def honest(self) -> "Branch":
        self.finish("has-owner", "payments-api", "pass")
        self.finish("has-owner", "users-api", "fail")
        self.write()
        self.clock.advance(timedelta(hours=1))
        self.finish("has-owner", "payments-api", "warning")
        self.finish("github-org-audit", None, "pass")
        self.write()
        self.clock.advance(timedelta(days=1))
        self.finish("has-owner", "payments-api", "fail")
        self.finish("has-owner", "users-api", "pass")
        self.write()
        return self

    def clone(self) -> Path:
        work = self.tmp / "mallory"
        if not work.exists():
            git("clone", "-q", "--branch", "catalog-results", str(self.remote), str(work))
        return work

    def tamper(self, path: str, change, *, amend: bool = False, sign_with: Path | None = None) -> str:
        """Change a file in a clone, commit (or amend the last commit), force-push; the new commit."""
        work = self.clone()
        lines = (work / path).read_text().splitlines()
        (work / path).write_text("".join(line + "\n" for line in change(lines)))
        return self.push(amend=amend, sign_with=sign_with)

    def push(self, *, amend: bool = False, sign_with: Path | None = None, message: str = "Tidy") -> str:
        """Commit everything changed in the clone (added and deleted files too), force-push; the new commit."""
        work = self.clone()
        signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={sign_with}"] if sign_with else []
        git("add", "-A", cwd=work)
        git(*signing, "commit", "-q", *(["--amend", "--no-edit"] if amend else ["-m", message]),
            *(["-S"] if sign_with else []), cwd=work)
        git("push", "-q", "--force", "origin", "catalog-results", cwd=work)
        return git("rev-parse", "HEAD", cwd=work).strip()

    def as_of(self, moment: str, *extra: str) -> subprocess.CompletedProcess:
        return catalog("as-of", moment, "--repo", str(self.remote), "--format", "json", *extra, home=self.tmp / "auditor")

    def move_writeback_to(self, path: str) -> None:
        """catalog.yaml's writeback.path changed, as an operator would, and synced."""
        config = self.example / "catalog.yaml"
        config.write_text(config.read_text().replace("path: results/", f"path: {path}"))
        report = sync_directory(self.store, self.example)
        assert report.outcome == "applied" and not report.errors, report.errors

    def verify(self, *extra: str) -> subprocess.CompletedProcess:
        backend = self.store.backend
        env = {"CATALOG_DATABASE_URL": backend.url if hasattr(backend, "url") else f"sqlite://{backend.path}"}
        return catalog("verify", "--repo", str(self.remote), *extra, home=self.tmp / "auditor", env=env)


@pytest.fixture
def branch(tmp_path, example_dir) -> Branch:
    return Branch(tmp_path, example_dir).honest()


def findings(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stdout.splitlines()[1:]


def test_an_honest_branch_verifies(branch):
    result = branch.verify()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("verified: 6 history lines (6 chained) in 3 commits of branch catalog-results")


def test_every_commit_names_the_chain_head_in_its_trailer_and_in_ledger_json(branch):
    heads = git("--git-dir", str(branch.remote), "log", "--format=%(trailers:key=Ledger-Head,valueonly)",
                "catalog-results").split()
    ledger = json.loads(git("--git-dir", str(branch.remote), "show", "catalog-results:results/ledger.json"))
    last = git("--git-dir", str(branch.remote), "show", f"catalog-results:{DAY_TWO}").splitlines()[-1]
    assert heads[0] == ledger["head"] == hashlib.sha256(last.encode()).hexdigest()
    assert len(set(heads)) == 3 and ledger["lines"] == 6 and ledger["last_id"] == branch.ids[-1]


def test_a_changed_line_is_named_with_its_file_line_and_commit(branch):
    commit = branch.tamper(DAY_ONE, lambda lines: [lines[1].replace('"fail"', '"pass"') if i == 1 else line
                                                   for i, line in enumerate(lines)])
    assert findings(branch.verify()) == [
        f"{DAY_ONE}:2: changed-line: the line of result {branch.ids[1]} was changed in commit {commit[:12]}:"
        f" the next line ({DAY_ONE}:3) links to its hash as it was"
    ]


def test_a_line_whose_prev_was_edited_too_is_one_changed_line(branch):
    def forge(lines):
        record = json.loads(lines[2])
        record["prev"], record["result"] = "f" * 64, "skipped"  # was "warning": the same length
        return [*lines[:2], json.dumps(record, sort_keys=True, separators=(",", ":")), *lines[3:]]

    commit = branch.tamper(DAY_ONE, forge)
    assert findings(branch.verify()) == [
        f"{DAY_ONE}:3: changed-line: the line of result {branch.ids[2]} was changed in commit {commit[:12]}:"
        f" the next line ({DAY_ONE}:4) links to its hash as it was"
    ]


def test_a_line_changed_by_amending_the_last_commit_and_force_pushing_is_found(branch):
    commit = branch.tamper(DAY_TWO, lambda lines: [lines[0].replace('"fail"', '"pass"'), *lines[1:]], amend=True)
    found = findings(branch.verify())
    assert any(line.startswith(f"{DAY_TWO}:1: changed-line: the line of result {branch.ids[4]} was changed in commit {commit[:12]}")
               for line in found), found


def test_the_newest_line_changed_is_found_through_the_ledger_head(branch):
    branch.tamper(DAY_TWO, lambda lines: [*lines[:-1], lines[-1].replace('"pass"', '"fail"')])
    found = findings(branch.verify())
    assert any(f"{DAY_TWO}:2: changed-line" in line and "ledger.json names its hash as it was" in line for line in found), found


def test_a_removed_line_is_found(branch):
    branch.tamper(DAY_ONE, lambda lines: [lines[0], *lines[2:]])
    found = findings(branch.verify())
    assert f"{DAY_ONE}:2: removed-line: the line before result {branch.ids[2]} is gone" in "\n".join(found), found
    assert any("shrunk-file: commit" in line for line in found), found


def test_the_newest_line_removed_is_found(branch):
    branch.tamper(DAY_TWO, lambda lines: lines[:-1], amend=True)
    found = findings(branch.verify())
    assert any("removed-line: ledger.json's head" in line for line in found), found


def test_reordered_lines_are_found(branch):
    branch.tamper(DAY_ONE, lambda lines: [lines[1], lines[0], *lines[2:]])
    found = findings(branch.verify())
    assert any(f"{DAY_ONE}:2: reordered: the line of result {branch.ids[0]}" in line for line in found), found


def test_a_duplicated_line_is_found(branch):
    branch.tamper(DAY_ONE, lambda lines: [*lines, lines[1]], amend=True)
    found = findings(branch.verify())
    assert f"{DAY_ONE}:5: id-twice: result {branch.ids[1]} appears twice: here and at {DAY_ONE}:2" in found, found


def test_a_rechained_rewrite_is_found_by_the_older_commits_trailers(branch):
    """A forger who rewrites a line and re-makes every later link and ledger.json still leaves the
    Ledger-Head trailers of the commits that wrote the lines after it."""
    from reconciler import writeback_files as files

    work = branch.clone()
    order = []  # the chain's order is the write order: day one's four lines, then day two's two
    for path in (DAY_ONE, DAY_TWO):
        order += [(path, json.loads(line)) for line in (work / path).read_text().splitlines()]
    order[1][1]["result"] = "pass"
    head, out = files.ZERO_HASH, {DAY_ONE: [], DAY_TWO: []}
    for path, record in order:
        record["prev"] = head
        line = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        head = hashlib.sha256(line.encode()).hexdigest()
        out[path].append(line)
    for path, lines in out.items():
        (work / path).write_text("".join(line + "\n" for line in lines))
    ledger = json.loads((work / "results/ledger.json").read_text())
    (work / "results/ledger.json").write_text(files.ledger_json(head, ledger["lines"], ledger["last_id"]))
    git("commit", "-q", "-a", "-m", "Rewrite", cwd=work)
    git("push", "-q", "--force", "origin", "catalog-results", cwd=work)
    found = findings(branch.verify())
    assert sum("rewritten-commit" in line for line in found) == 3, found  # every commit's head is gone


def test_verify_against_the_store_finds_a_finished_result_missing_from_git(synced_store, tmp_path, example_dir):
    branch = Branch(tmp_path, example_dir, store=synced_store).honest()
    extra = branch.finish("has-owner", "users-api", "warning")  # finished, not written back yet
    result = branch.verify("--against-store")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 finished results are queued for write-back" in result.stdout
    branch.tamper(DAY_ONE, lambda lines: lines[:1] + lines[2:])
    found = findings(branch.verify("--against-store"))
    assert f"missing-result: finished result {branch.ids[1]} was written back but is not on the branch" in found, found
    assert not any(f"result {extra} " in line for line in found)  # queued, not missing


def test_verify_shows_progress_on_a_terminal_unless_quiet_and_nothing_extra_off_one(synced_store, tmp_path, example_dir):
    branch = Branch(tmp_path, example_dir, store=synced_store).honest()
    plain = branch.verify("--against-store")
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr  # a pipe: no bar, no escape codes
    backend = synced_store.backend
    env = {key: value for key, value in os.environ.items() if not key.startswith("CATALOG_")}
    env.update(PYTHONPATH=str(PROJECT), CATALOG_HOME=str(tmp_path / "auditor"),
               CATALOG_DATABASE_URL=backend.url if hasattr(backend, "url") else f"sqlite://{backend.path}")
    for quiet, expect_bar in (((), True), (("--quiet",), False)):
        done, seen = run_on_terminal(lambda terminal: subprocess.run(
            [sys.executable, "-m", "api.cli", "verify", "--repo", str(branch.remote), "--against-store", *quiet],
            stdout=subprocess.PIPE, stderr=terminal, env=env, timeout=120))
        assert done.returncode == 0 and done.stdout.startswith(b"verified: 6 history lines")
        assert (b"reading history files" in seen) is expect_bar, seen
        assert (b"comparing with the store" in seen) is expect_bar, seen


@pytest.fixture
def keys(tmp_path) -> dict[str, Path]:
    made = {}
    for name in ("bot", "mallory"):
        made[name] = tmp_path / f"{name}_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(made[name])], check=True)
    return made


def test_signed_write_back_verifies_and_an_unsigned_or_wrongly_signed_commit_is_found(tmp_path, example_dir, keys):
    branch = Branch(tmp_path, example_dir, signing_key=keys["bot"]).honest()
    signers = git("--git-dir", str(branch.remote), "show", "catalog-results:results/allowed_signers")
    public = (keys["bot"].parent / "bot_key.pub").read_text().split()[:2]
    assert signers == f'{Settings.bot_email} namespaces="git" {" ".join(public)}\n'
    result = branch.verify()
    assert result.returncode == 0 and "commits signed since" in result.stdout, result.stdout + result.stderr

    unsigned = branch.tamper("results/README.md", lambda lines: lines + ["A note"])
    assert findings(branch.verify()) == [f"unsigned-commit: commit {unsigned[:12]} is not signed, but every commit"
                                         f" since {result.stdout.split('signed since ')[1][:12]} added results/allowed_signers must be"]
    forged = branch.tamper("results/README.md", lambda lines: lines + ["Another"], amend=True, sign_with=keys["mallory"])
    found = findings(branch.verify())
    assert found == [f"wrongly-signed-commit: commit {forged[:12]} is signed with a key not in allowed_signers"
                     " (results/allowed_signers lists the allowed keys)"], found


def test_a_signing_key_rotated_with_the_previous_key_given_verifies(tmp_path, example_dir, keys, caplog):
    """The first commit of a new key added it to allowed_signers signed by itself: `catalog verify` then
    failed forever. With the previous key given for that write-back, the previous key vouches for it."""
    import dataclasses

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "next", "-f", str(tmp_path / "next_key")], check=True)
    branch = Branch(tmp_path, example_dir, signing_key=keys["bot"]).honest()
    branch.settings = dataclasses.replace(branch.settings, writeback_signing_key=str(tmp_path / "next_key"),
                                          writeback_previous_signing_key=str(keys["bot"]))
    branch.finish("has-owner", "users-api", "warning")
    branch.write()
    branch.settings = dataclasses.replace(branch.settings, writeback_previous_signing_key=None)  # rotated
    branch.finish("has-owner", "payments-api", "pass")
    branch.write()
    result = branch.verify()
    assert result.returncode == 0, result.stdout + result.stderr
    signers = git("--git-dir", str(branch.remote), "show", "catalog-results:results/allowed_signers")
    assert len(signers.splitlines()) == 2
    # without the previous key, the write-back says what verify will report
    mallory = dataclasses.replace(branch.settings, writeback_signing_key=str(keys["mallory"]))
    branch.settings = mallory
    branch.finish("has-owner", "users-api", "fail")
    with caplog.at_level("WARNING", "catalog.writeback"):
        branch.write()
    assert "no listed key vouches for it" in caplog.text
    assert any("wrongly-signed-commit" in line for line in findings(branch.verify()))


def test_a_branch_written_before_the_ledger_continues_from_its_last_unchained_line(tmp_path, example_dir):
    branch = Branch(tmp_path, example_dir)
    first, second = branch.finish("has-owner", "payments-api", "pass"), branch.finish("has-owner", "users-api", "fail")
    branch.write()
    work = branch.clone()  # made as the previous release wrote it: no prev, no ledger.json
    unchained = [json.dumps({k: v for k, v in json.loads(line).items() if k != "prev"}, sort_keys=True,
                            separators=(",", ":"), ensure_ascii=False)
                 for line in (work / DAY_ONE).read_text().splitlines()]
    (work / DAY_ONE).write_text("".join(line + "\n" for line in unchained))
    git("rm", "-q", "results/ledger.json", cwd=work)
    git("commit", "-q", "-a", "--amend", "-m", f"Record 2 health check results\n\nResult ids:\n{first} {second}\n", cwd=work)
    git("push", "-q", "--force", "origin", "catalog-results", cwd=work)
    branch.store.state.set({"writeback_verified_commit": git("rev-parse", "HEAD", cwd=work).strip()})

    third = branch.finish("has-owner", "payments-api", "warning")
    branch.write()
    lines = git("--git-dir", str(branch.remote), "show", f"catalog-results:{DAY_ONE}").splitlines()
    assert lines[:2] == unchained  # written before: never rewritten
    assert json.loads(lines[2])["id"] == third
    assert json.loads(lines[2])["prev"] == hashlib.sha256(unchained[1].encode()).hexdigest()
    result = branch.verify()
    assert result.returncode == 0 and "3 history lines (1 chained)" in result.stdout, result.stdout + result.stderr


def test_as_of_gives_each_pairs_latest_result_at_known_times(branch):
    def as_of(moment: str, *extra: str) -> dict:
        result = catalog("as-of", moment, "--repo", str(branch.remote), "--format", "json", *extra, home=branch.tmp / "auditor")
        assert result.returncode == 0, result.stderr
        return {(row["service"], row["check"]): (row["id"], row["result"]) for row in json.loads(result.stdout)["results"]}

    ids = branch.ids  # finished 12:00 (two), 13:00 (two) on 01-05, 13:00 on 01-06 (two)
    assert as_of("2026-01-05T11:59:59Z") == {}
    assert as_of("2026-01-05T12:30:00Z") == {("payments-api", "has-owner"): (ids[0], "pass"), ("users-api", "has-owner"): (ids[1], "fail")}
    assert as_of("2026-01-05") == {
        ("payments-api", "has-owner"): (ids[2], "warning"), ("users-api", "has-owner"): (ids[1], "fail"),
        (None, "github-org-audit"): (ids[3], "pass"),
    }
    assert as_of("2026-01-06T13:00:00Z", "--service", "users-api") == {("users-api", "has-owner"): (ids[5], "pass")}
    table = catalog("as-of", "2026-01-05T13:00:00+00:00", "--repo", str(branch.remote), home=branch.tmp / "auditor")
    assert table.stdout.splitlines()[1].split() == ["SERVICE", "CHECK", "OUTCOME", "FINISHED", "ID", "ATTESTED", "BY"]
    assert table.stdout.splitlines()[2].split()[:3] == ["-", "github-org-audit", "pass"]


def test_as_of_refuses_a_time_it_cannot_read_in_one_line(branch):
    result = catalog("as-of", "yesterday", "--repo", str(branch.remote), home=branch.tmp / "auditor")
    assert result.returncode == 1 and result.stderr.startswith("catalog: TIME must be an ISO 8601 date or time")


def test_a_commit_that_adds_its_own_key_to_allowed_signers_does_not_vouch_for_itself(tmp_path, example_dir, keys):
    branch = Branch(tmp_path, example_dir, signing_key=keys["bot"]).honest()
    mallory = " ".join((keys["mallory"].parent / "mallory_key.pub").read_text().split()[:2])
    forged = branch.tamper("results/allowed_signers", lambda lines: lines + [f'mallory@example.com namespaces="git" {mallory}'],
                           sign_with=keys["mallory"])
    assert findings(branch.verify()) == [f"wrongly-signed-commit: commit {forged[:12]} is signed with a key not in"
                                         " allowed_signers (results/allowed_signers lists the allowed keys)"]



def test_a_remote_branch_is_fetched_and_verified_and_a_missing_repository_is_one_line(branch):
    remote = catalog("verify", "--repo", f"file://{branch.remote}", home=branch.tmp / "auditor")
    assert remote.returncode == 0 and remote.stdout.startswith("verified: 6 history lines"), remote.stdout + remote.stderr
    missing = catalog("verify", "--repo", str(branch.tmp / "nowhere"), home=branch.tmp / "auditor")
    assert missing.returncode == 1 and missing.stderr.strip().splitlines() == [
        f"catalog: {branch.tmp / 'nowhere'} does not exist: give --repo a repository URL or a local git repository"]


def pairs(result: subprocess.CompletedProcess) -> dict:
    """`catalog as-of --format json`'s answer as {(service, check): (id, result)}."""
    assert result.returncode == 0, result.stdout + result.stderr
    return {(row["service"], row["check"]): (row["id"], row["result"]) for row in json.loads(result.stdout)["results"]}


def test_a_decoy_history_folder_does_not_hide_the_real_one(branch):
    work = branch.clone()
    (work / "history").mkdir()
    (work / "history/a.jsonl").write_text("")
    (work / "results/ledger.json").unlink()
    text = (work / DAY_ONE).read_text()
    (work / DAY_ONE).write_text(text.replace('"result":"fail"', '"result":"pass"', 1))
    commit = branch.push()
    found = findings(branch.verify())
    assert f"{DAY_ONE}:2: changed-line: the line of result {branch.ids[1]} was changed in commit {commit[:12]}:" \
           f" the next line ({DAY_ONE}:3) links to its hash as it was" in found, found
    assert "results/ledger.json: ledger: history lines are chained but ledger.json is missing" in found, found
    assert len(pairs(branch.as_of("2026-01-06"))) == 3


def test_deleting_the_whole_writeback_folder_beside_a_decoy_is_found(branch):
    work = branch.clone()
    git("rm", "-q", "-r", "results", cwd=work)
    (work / "history").mkdir()
    (work / "history/a.jsonl").write_text("")
    commit = branch.push()
    found = findings(branch.verify())
    assert f"{DAY_ONE}: shrunk-file: commit {commit[:12]} deleted the file: written lines were removed" in found, found
    assert f"{DAY_TWO}: shrunk-file: commit {commit[:12]} deleted the file: written lines were removed" in found, found


def test_a_changed_writeback_path_is_verified_and_read_in_both_folders(branch):
    branch.move_writeback_to("zz/audit/")
    branch.clock.advance(timedelta(days=1))
    moved = branch.finish("has-owner", "users-api", "warning")
    branch.write()
    assert git("--git-dir", str(branch.remote), "show", "catalog-results:zz/audit/history/2026/01/07.jsonl")
    result = branch.verify("--against-store")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("verified: 7 history lines (7 chained) in 4 commits"), result.stdout
    assert pairs(branch.as_of("2026-01-07"))[("users-api", "has-owner")] == (moved, "warning")

    branch.tamper("zz/audit/history/2026/01/07.jsonl", lambda lines: [lines[0].replace('"warning"', '"pass"')])
    found = findings(branch.verify())
    assert any(line.startswith("zz/audit/history/2026/01/07.jsonl:1: changed-line:") for line in found), found


def test_a_signed_branch_whose_writeback_path_changed_verifies_with_the_keys_of_either_folder(tmp_path, example_dir, keys):
    branch = Branch(tmp_path, example_dir, signing_key=keys["bot"]).honest()
    branch.move_writeback_to("zz/audit/")
    branch.finish("has-owner", "users-api", "warning")
    branch.write()
    result = branch.verify()
    assert result.returncode == 0 and "; folders results/, zz/audit/" in result.stdout, result.stdout + result.stderr
    git("rm", "-q", "-r", "results", cwd=branch.clone())
    deleted = branch.push(sign_with=keys["bot"])
    found = findings(branch.verify())
    assert f"results/allowed_signers: signers-removed: commit {deleted[:12]} deleted the file: keys are only ever added" \
           in found, found
    assert not any("signed" in line for line in found), found  # every commit is signed by the bot's key


def test_a_branch_without_any_history_line_is_a_finding(branch):
    work = branch.clone()
    git("checkout", "-q", "--orphan", "main", cwd=work)
    git("rm", "-q", "-r", "--cached", ".", cwd=work)
    git("commit", "-q", "--allow-empty", "-m", "Start", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    assert findings(branch.verify("--branch", "main")) == [
        "no-history: branch main has no history line: it may not be the results branch"
        " (catalog.yaml's writeback.branch; try --branch)"]


def test_deleting_allowed_signers_does_not_turn_off_signing(tmp_path, example_dir, keys):
    branch = Branch(tmp_path, example_dir, signing_key=keys["bot"]).honest()
    git("rm", "-q", "results/allowed_signers", cwd=branch.clone())
    deleted = branch.push(sign_with=keys["bot"])  # the deleted file's keys still vouch for later commits
    assert findings(branch.verify()) == [
        f"results/allowed_signers: signers-removed: commit {deleted[:12]} deleted the file: keys are only ever added"]
    unsigned = branch.tamper(DAY_TWO, lambda lines: lines[:1] + [lines[1].replace('"pass"', '"fail"')])
    found = findings(branch.verify())
    assert any(line.startswith(f"unsigned-commit: commit {unsigned[:12]} is not signed") for line in found), found


def test_replacing_the_key_in_allowed_signers_is_found(tmp_path, example_dir, keys):
    branch = Branch(tmp_path, example_dir, signing_key=keys["bot"]).honest()
    mallory = " ".join((keys["mallory"].parent / "mallory_key.pub").read_text().split()[:2])
    forged = branch.tamper("results/allowed_signers", lambda lines: [f'mallory@example.com namespaces="git" {mallory}'],
                           sign_with=keys["mallory"])
    later = branch.tamper("results/README.md", lambda lines: lines + ["A note"], sign_with=keys["mallory"])
    found = findings(branch.verify())
    assert f"results/allowed_signers: signers-removed: commit {forged[:12]} removed keys from the file:" \
           " keys are only ever added" in found, found
    assert f"wrongly-signed-commit: commit {forged[:12]} is signed with a key not in allowed_signers" \
           " (results/allowed_signers lists the allowed keys)" in found, found
    assert not any(later[:12] in line for line in found), found  # mallory's key was added by then


def test_an_unchained_line_appended_after_the_ledger_began_is_outside_the_chain(branch):
    def forge(lines):
        record = json.loads(lines[-1])
        del record["prev"]
        record["id"], record["result"] = 29, "pass"
        return [*lines, json.dumps(record, sort_keys=True, separators=(",", ":"))]

    commit = branch.tamper(DAY_TWO, forge)
    found = findings(branch.verify())
    assert found == [f"{DAY_TWO}:3: outside-chain: the line of result 29 has no prev and is not as it was when the"
                     f" ledger began: added or changed in commit {commit[:12]} (only lines written before the ledger"
                     " may be unchained)"], found


def test_a_line_appended_with_a_made_up_prev_is_outside_the_chain(branch):
    def forge(lines):
        record = json.loads(lines[-1])
        record.update(id=9002, result="pass", message="forged", prev="ab" * 32)
        return [*lines, json.dumps(record, sort_keys=True, separators=(",", ":"))]

    branch.tamper(DAY_TWO, forge)
    found = findings(branch.verify())
    assert found == [f"{DAY_TWO}:3: outside-chain: the line of result 9002 is linked to by no line: added outside the chain"], found


def test_a_rewritten_line_hidden_behind_a_merge_is_found(branch):
    """No force-push: the tampered commit merges the honest tip (`-s ours`), so a plain push takes it. git's
    history simplification followed the tampered side only and never showed the tip's Ledger-Head."""
    work = branch.clone()
    tip = git("rev-parse", "HEAD", cwd=work).strip()
    git("checkout", "-q", "-b", "forged", "HEAD~1", cwd=work)
    git("checkout", "-q", tip, "--", ".", cwd=work)
    lines = (work / DAY_TWO).read_text().splitlines()
    record = json.loads(lines[-1])
    record["result"] = "fail" if record["result"] != "fail" else "pass"
    lines[-1] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    (work / DAY_TWO).write_text("".join(line + "\n" for line in lines))
    ledger = json.loads((work / "results/ledger.json").read_text())
    ledger["head"] = hashlib.sha256(lines[-1].encode()).hexdigest()
    (work / "results/ledger.json").write_text(json.dumps(ledger))
    git("commit", "-qam", f"Record results\n\nLedger-Head: {ledger['head']}", cwd=work)
    git("merge", "-q", "-s", "ours", tip, "-m", "Merge", cwd=work)
    git("push", "-q", "origin", "forged:catalog-results", cwd=work)  # a fast-forward: no --force
    found = findings(branch.verify())
    assert any(f"commit {tip[:12]} names Ledger-Head" in line and "rewritten-commit" in line for line in found), found


def test_escape_sequences_in_the_branch_never_reach_the_terminal(branch):
    """A history line or file name is text anyone who can push wrote: `\\x1b]0;...` retitled the window."""
    escape = "\x1b[2J\x1b]0;PWNED\x07"
    work = branch.clone()
    first = (work / DAY_ONE).read_text().splitlines()[0]
    (work / f"results/history/2026/01/x{escape}.jsonl").write_text(first + "\n")
    lines = (work / DAY_TWO).read_text().splitlines()
    record = json.loads(lines[-1])
    record.update(id=9003, service=f"pay{escape}ments")
    (work / DAY_TWO).write_text("".join(line + "\n" for line in [*lines, json.dumps(record)]))
    branch.push()
    verified = branch.verify()
    state = catalog("as-of", "2027-01-01", "--repo", str(branch.remote), home=branch.tmp / "auditor")
    for output in (verified.stdout + verified.stderr, state.stdout + state.stderr):
        assert "\x1b" not in output and "\x07" not in output
    assert "\\x1b]0;PWNED" in verified.stdout + verified.stderr and "pay\\x1b[2J" in state.stdout


def test_an_unchained_folder_added_after_the_ledger_began_is_outside_the_chain(branch):
    work = branch.clone()
    line = json.loads((work / DAY_TWO).read_text().splitlines()[-1])
    del line["prev"]
    line["id"], line["finished"] = 30, "2026-01-07T09:00:00.000000Z"
    (work / "decoy/history/2026/01").mkdir(parents=True)
    (work / "decoy/history/2026/01/07.jsonl").write_text(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")
    branch.push()
    found = findings(branch.verify())
    assert len(found) == 1 and found[0].startswith("decoy/history/2026/01/07.jsonl:1: outside-chain: the line of result 30"), found


def test_as_of_accepts_only_a_date_or_an_rfc_3339_time(branch):
    ids = branch.ids
    for moment in ("2026-01-05T12:30:00Z", "2026-01-05 12:30", "2026-01-05t12:30:00.5z", "2026-01-05T13:30:00+01:00"):
        assert pairs(branch.as_of(moment)) == {("payments-api", "has-owner"): (ids[0], "pass"),
                                               ("users-api", "has-owner"): (ids[1], "fail")}, moment
    for moment in ("20260105", "2026-W02", "2026-005", "2026-01-05T12", "2026-01-05T12:30:00+0100", "2026-01"):
        result = branch.as_of(moment)
        assert result.returncode == 1 and result.stderr.startswith("catalog: TIME must be"), (moment, result.stdout)
    # before year 1000 (C's %Y wrote `999-...`, after 2026: the state "at" 999 was today's), and past 9999 in UTC
    assert pairs(branch.as_of("0999-12-31")) == {}
    for moment in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"):
        result = branch.as_of(moment)
        assert result.returncode == 1 and result.stderr.startswith("catalog: TIME is out of range"), (moment, result.stderr)


def test_as_of_for_a_service_no_line_names_is_an_error(branch):
    result = branch.as_of("2026-01-06", "--service", "nope")
    assert result.returncode == 1 and result.stderr == "catalog: no history line names service 'nope'\n", result.stderr
    assert pairs(branch.as_of("2026-01-05T11:00:00Z", "--service", "users-api")) == {}  # named, not finished yet
