"""Git and directory sources against real repositories on disk."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.errors import ConfigError, SourceError
from reconciler.gitsource import DirectorySource, GitSource, source_from_settings
from reconciler.logs import redact_credentials
from reconciler.settings import Settings


def test_clone_checks_out_the_default_branch(git_catalog, tmp_path):
    head = git_catalog.git("rev-parse", "HEAD")
    source = GitSource(git_catalog.url, tmp_path / "checkout")
    assert source.fetch() == head
    assert (tmp_path / "checkout" / "services" / "payments-api.yaml").is_file()


def test_default_branch_is_the_remotes_not_main(git_catalog, tmp_path):
    git_catalog.git("checkout", "--quiet", "-b", "trunk")
    (git_catalog.work / "services" / "new.yaml").write_text("name: New\npriority: 5\n")
    trunk = git_catalog.commit("On trunk", branch="trunk")
    git_catalog._run("symbolic-ref", "HEAD", "refs/heads/trunk", cwd=git_catalog.remote)
    assert GitSource(git_catalog.url, tmp_path / "checkout").fetch() == trunk


def test_fetch_brings_new_commits_and_reports_changed_paths(git_catalog, tmp_path):
    source = GitSource(git_catalog.url, tmp_path / "checkout")
    first = source.fetch()
    (git_catalog.work / "services" / "users-db.yaml").unlink()
    (git_catalog.work / "services" / "new.yaml").write_text("name: New\npriority: 5\n")
    second = git_catalog.commit()
    assert source.fetch() == second
    assert source.changed_paths(first, second) == {"services/users-db.yaml", "services/new.yaml"}
    assert not (tmp_path / "checkout" / "services" / "users-db.yaml").exists()
    assert source.fetch() == second  # nothing new: same revision


def test_a_small_fetch_stores_its_objects_uncompressed(git_catalog, tmp_path):
    """A one-file change's objects arrive loose; the fetch writes them at zlib level 0 (stored
    blocks: block type 00 after the 2-byte header; git's default, level 1, compresses), and git
    still reads them: the checkout moves to the new content."""
    import zlib

    source = GitSource(git_catalog.url, tmp_path / "checkout")
    source.fetch()
    (git_catalog.work / "services" / "new.yaml").write_text("name: New\npriority: 5\n")
    second = git_catalog.commit()
    assert source.fetch() == second
    objects = tmp_path / "checkout" / ".git" / "objects"
    tree = git_catalog.git("rev-parse", f"{second}^{{tree}}")
    loose = (objects / tree[:2] / tree[2:]).read_bytes()
    assert loose[:2] == b"\x78\x01" and loose[2] & 0b110 == 0
    assert zlib.decompress(loose).startswith(b"tree ")
    assert (tmp_path / "checkout" / "services" / "new.yaml").read_text() == "name: New\npriority: 5\n"


def test_loose_objects_from_fetches_are_packed_early(git_catalog, tmp_path):
    """Every small fetch leaves its objects loose (a 4.5 MB tree per one-file commit in a folder of
    100,000 files), and git packs them only once it estimates about 6,700 of them: gigabytes. The
    fetch lowers that (`gc.auto`), and git's own automatic gc packs them. git estimates from the
    folder `objects/17/` alone, so the commit here brings three blobs whose ids start with 17."""
    import hashlib
    import time

    source = GitSource(git_catalog.url, tmp_path / "checkout")
    source.fetch()
    notes = git_catalog.work / "notes"
    notes.mkdir()
    found, n = 0, 0
    while found < 3:  # contents whose blob id starts with 17: one in 256
        n += 1
        content = f"padding {n}\n".encode()
        if hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest().startswith("17"):
            (notes / f"pad-{n}.txt").write_bytes(content)
            found += 1
    head = git_catalog.commit("Three blobs in objects/17")
    assert source.fetch() == head
    seventeen = tmp_path / "checkout" / ".git" / "objects" / "17"
    deadline = time.monotonic() + 30
    while seventeen.exists() and any(seventeen.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)  # git's gc runs in the background, after the fetch has returned
    assert not seventeen.exists() or not any(seventeen.iterdir())
    assert source.fetch() == head  # packed objects read as before
    assert (tmp_path / "checkout" / "notes" / f"pad-{n}.txt").read_bytes() == content


def test_explicit_branch(git_catalog, tmp_path):
    git_catalog.git("checkout", "--quiet", "-b", "staging")
    (git_catalog.work / "services" / "staging-only.yaml").write_text("name: Staging only\npriority: 5\n")
    staging = git_catalog.commit("Staging", branch="staging")
    source = GitSource(git_catalog.url, tmp_path / "checkout", branch="staging")
    assert source.fetch() == staging
    assert (tmp_path / "checkout" / "services" / "staging-only.yaml").exists()


def test_later_fetches_bring_only_the_catalog_branch(git_catalog, tmp_path):
    """Once the branch is known, a fetch leaves other branches (the write-back branch's stream of
    results commits) on the remote."""
    source = GitSource(git_catalog.url, tmp_path / "checkout")
    source.fetch()
    git_catalog.git("checkout", "--quiet", "-b", "catalog-results")
    (git_catalog.work / "results.txt").write_text("a result\n")
    git_catalog.commit("Results", branch="catalog-results")
    git_catalog.git("checkout", "--quiet", "main")
    (git_catalog.work / "services" / "new.yaml").write_text("name: New\npriority: 5\n")
    head = git_catalog.commit("On main", branch="main")
    assert source.fetch() == head
    tracking = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/remotes/origin/"],
                              cwd=tmp_path / "checkout", capture_output=True, text=True, check=True).stdout.split()
    assert "refs/remotes/origin/main" in tracking and "refs/remotes/origin/catalog-results" not in tracking


def test_missing_branch_is_a_source_error(git_catalog, tmp_path):
    with pytest.raises(SourceError, match="branch 'nope' does not exist"):
        GitSource(git_catalog.url, tmp_path / "checkout", branch="nope").fetch()


def test_unreachable_url_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="cannot clone"):
        GitSource(str(tmp_path / "no-such-repo.git"), tmp_path / "checkout").fetch()
    with pytest.raises(SourceError, match="cannot clone"):
        GitSource("http://127.0.0.1:9/acme/catalog.git", tmp_path / "checkout2").fetch()


def test_remote_gone_after_clone_is_a_source_error(git_catalog, tmp_path):
    import shutil

    source = GitSource(git_catalog.url, tmp_path / "checkout")
    source.fetch()
    shutil.rmtree(git_catalog.remote)
    with pytest.raises(SourceError, match="cannot fetch"):
        GitSource(git_catalog.url, tmp_path / "checkout").fetch()


def test_credentials_never_appear_in_messages(tmp_path):
    url = "http://x-access-token:s3cr3t@127.0.0.1:9/acme/catalog.git"
    with pytest.raises(SourceError) as caught:
        GitSource(url, tmp_path / "checkout").fetch()
    assert "s3cr3t" not in str(caught.value) and "***@127.0.0.1" in str(caught.value)
    assert redact_credentials("https://ghp_abc@github.com/acme/c.git") == "https://***@github.com/acme/c.git"
    assert "s3cr3t" not in GitSource(url, tmp_path / "c").description


def test_unknown_old_revision_gives_no_changed_paths(git_catalog, tmp_path):
    source = GitSource(git_catalog.url, tmp_path / "checkout")
    head = source.fetch()
    assert source.changed_paths("0" * 40, head) is None


def test_checkout_directory_that_is_not_a_clone_is_refused(git_catalog, tmp_path):
    (tmp_path / "checkout").mkdir()
    (tmp_path / "checkout" / "precious.txt").write_text("mine")
    with pytest.raises(SourceError, match="is not a git checkout"):
        GitSource(git_catalog.url, tmp_path / "checkout").fetch()
    assert (tmp_path / "checkout" / "precious.txt").read_text() == "mine"


def test_plain_directory_revision_is_a_content_hash(example_dir):
    source = DirectorySource(example_dir)
    first = source.fetch()
    assert first.startswith("dir-") and source.fetch() == first
    (example_dir / "services" / "users-db.yaml").write_text("name: Users DB\npriority: 2\n")
    assert source.fetch() != first
    assert source.changed_paths(first, source.fetch()) is None


def test_missing_directory_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        DirectorySource(tmp_path / "nowhere").fetch()


def test_source_from_settings_picks_directory_or_git(example_dir, git_catalog, tmp_path):
    home = tmp_path / "home"
    assert isinstance(source_from_settings(Settings(home=home, repo=str(example_dir))), DirectorySource)
    assert isinstance(source_from_settings(Settings(home=home, repo=git_catalog.url)), GitSource)
    assert isinstance(source_from_settings(Settings(home=home, repo=str(git_catalog.work))), GitSource)
    with pytest.raises(ConfigError, match="set CATALOG_REPO"):
        source_from_settings(Settings(home=home))
    with pytest.raises(ConfigError, match="does not exist"):
        source_from_settings(Settings(home=home, repo=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="plain directory"):
        source_from_settings(Settings(home=home, repo=str(example_dir), branch="main"))
    assert Path(source_from_settings(Settings(home=home, repo=git_catalog.url)).root) == home / "checkout"


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))  # a runaway read fails at 2 GB


def _make_fifo(path: Path) -> str:
    import os

    os.mkfifo(path)
    return "is not a regular file"


def _link_dev_zero(path: Path) -> str:
    path.symlink_to("/dev/zero")
    return "is a symlink pointing outside the repository; refusing to read it"


def _make_sparse_4_gb(path: Path) -> str:
    with open(path, "wb") as handle:
        handle.truncate(4 * 1024**3)  # 4 GB to a reader, nothing on disk
    return f"file is {4 * 1024**3:,} bytes; the limit is 262,144 bytes"


@pytest.mark.parametrize("make", [_make_fifo, _link_dev_zero, _make_sparse_4_gb], ids=lambda make: make.__name__)
def test_directory_sync_reads_only_regular_files_within_the_limit(example_dir, tmp_path, make):
    import os
    import shutil
    import subprocess

    message = make(example_dir / "services" / "p.yaml")
    env = {key: value for key, value in os.environ.items() if not key.startswith("CATALOG_")}
    env.update(CATALOG_HOME=str(tmp_path / "home"), CATALOG_REPO=str(example_dir))
    result = subprocess.run(  # a subprocess with a timeout: a regression fails the test, not the suite
        [shutil.which("catalog"), "sync"], capture_output=True, text=True, env=env, timeout=30,
        preexec_fn=_limit_memory,
    )
    assert result.returncode == 3, result.stderr  # applied, with a file that has no good state
    assert "20 created" in result.stdout
    assert result.stderr.splitlines()[0] == f"services/p.yaml:1:1: {message}"
