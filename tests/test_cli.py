"""The real `catalog` console script, run as a subprocess with CATALOG_HOME in a temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

CATALOG = shutil.which("catalog")
pytestmark = pytest.mark.skipif(CATALOG is None, reason="the project is not installed (pip install -e .)")


def run(*args, home, cwd=None, repo=None, env=None):
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("CATALOG_")}, **(env or {})}
    env["CATALOG_HOME"] = str(home)
    if repo is not None:
        env["CATALOG_REPO"] = str(repo)
    return subprocess.run([CATALOG, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def assert_one_line_error(result):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("catalog: ") and "Traceback" not in result.stderr, result.stderr


def test_validate_the_example_exits_0(example_dir, tmp_path):
    result = run("validate", str(example_dir), home=tmp_path / "home")
    assert result.returncode == 0 and result.stdout == ""
    assert "21 files valid" in result.stderr


def test_validate_a_bad_catalog_prints_file_line_col_and_exits_1(example_dir, tmp_path):
    (example_dir / "services" / "legacy-reports.yaml").write_text("name: Legacy reports\npriority: 11\n")
    result = run("validate", home=tmp_path / "home", cwd=example_dir)
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["services/legacy-reports.yaml:2:11: priority: must be <= 10"]
    assert "1 error in 21 files" in result.stderr


def test_validate_github_format_escapes_properties_and_message(example_dir, tmp_path):
    (example_dir / "services" / "legacy-reports.yaml").write_text("name: Legacy reports\npriority: 1\nonwer: x\n")
    (example_dir / "checks" / "c,d.yaml").write_text("name: C\nservices: [ghost]\n")
    result = run("validate", "--format", "github", ".", home=tmp_path / "home", cwd=example_dir)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "::error file=checks/c%2Cd.yaml,line=2,col=12::services: unknown service 'ghost'"
        " (no service file or Backstage Component defines it)",
        "::error file=services/legacy-reports.yaml,line=3,col=1::unknown key 'onwer' (did you mean 'owner'?)",
    ]


def test_github_escaping_rules():
    from reconciler.commands import _github_annotation
    from reconciler.errors import CatalogFileError, Location

    error = CatalogFileError(Location("a:b,c%.yaml", 1, 2), "50% bad\nsecond line\r")
    assert _github_annotation("repo", error) == (
        "::error file=repo/a%3Ab%2Cc%25.yaml,line=1,col=2::50%25 bad%0Asecond line%0D"
    )


def test_validate_a_path_that_is_not_a_directory(tmp_path):
    result = run("validate", str(tmp_path / "nowhere"), home=tmp_path / "home")
    assert_one_line_error(result)
    assert "is not a directory" in result.stderr


def test_schema_prints_valid_json_schema(tmp_path):
    result = run("schema", "service", home=tmp_path / "home")
    schema = json.loads(result.stdout)
    assert result.returncode == 0 and schema["additionalProperties"] is False and "priority" in schema["required"]
    assert "$defs" in json.loads(run("schema", home=tmp_path / "home").stdout)


def test_plan_detailed_exitcode_2_then_0_then_1(example_dir, tmp_path):
    home = tmp_path / "home"
    planned = run("plan", "--detailed-exitcode", home=home, repo=example_dir)
    assert planned.returncode == 2, planned.stderr
    assert "+ service payments-api  [services/payments-api.yaml]" in planned.stdout
    assert "20 to create, 0 to update, 0 to remove, 0 unchanged" in planned.stdout
    assert run("plan", home=home, repo=example_dir).returncode == 0  # changes, but no detailed exit code
    assert run("sync", home=home, repo=example_dir).returncode == 0
    unchanged = run("plan", "--detailed-exitcode", home=home, repo=example_dir)
    assert unchanged.returncode == 0 and "no changes" in unchanged.stdout
    (example_dir / "services" / "users-db.yaml").write_text("name: Users DB\npriority: 0\n")
    broken = run("plan", "--detailed-exitcode", home=home, repo=example_dir)
    assert broken.returncode == 1
    assert "services/users-db.yaml:2:11: priority: must be >= 1" in broken.stderr
    # synced: the revision is applied, but a file of it still has its error (the exit said 0)
    assert run("sync", home=home, repo=example_dir).returncode == 3
    applied = run("plan", "--detailed-exitcode", home=home, repo=example_dir)
    assert applied.returncode == 1 and "no changes" in applied.stdout
    assert "services/users-db.yaml:2:11: priority: must be >= 1" in applied.stderr


def test_plan_without_a_repository_is_one_line(tmp_path):
    result = run("plan", home=tmp_path / "home")
    assert_one_line_error(result)
    assert "CATALOG_REPO" in result.stderr


def test_sync_then_status_from_a_git_repository(git_catalog, tmp_path):
    home = tmp_path / "home"
    synced = run("sync", home=home, repo=git_catalog.url)
    assert synced.returncode == 0, synced.stderr
    head = git_catalog.git("rev-parse", "HEAD")
    assert f"applied {head}" in synced.stdout and "20 created, 0 updated, 0 removed, 0 unchanged" in synced.stdout
    again = run("sync", home=home, repo=git_catalog.url)
    assert again.returncode == 0 and "no changes" in again.stdout
    status = run("status", home=home)
    assert status.returncode == 0
    assert f"applied revision:   {head}" in status.stdout and "services: 11 (0 removed), checks: 6" in status.stdout
    data = json.loads(run("status", "--json", home=home).stdout)
    assert data["applied_revision"] == head and data["counts"]["pending_results"] == 0
    assert data["last_run"]["outcome"] == "applied" and data["file_errors"] == []


def test_a_sync_waits_while_another_process_fetches_into_the_same_checkout(git_catalog, tmp_path):
    """A cron `catalog sync` beside `serve`'s webhook sync: both fetched into one checkout at once (`cannot
    lock ref ...`, recorded as a failed sync, and a checkout moving under the other's reads). The second
    waits for the first; here this test is the first, holding the checkout."""
    from reconciler.gitsource import GitSource
    from reconciler.settings import Settings

    home = tmp_path / "home"
    assert run("sync", home=home, repo=git_catalog.url).returncode == 0
    (git_catalog.work / "services" / "zeta.yaml").write_text("name: Zeta\npriority: 3\n")
    head = git_catalog.commit("Add zeta", branch="main")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CATALOG_")},
           "CATALOG_HOME": str(home), "CATALOG_REPO": git_catalog.url}
    with GitSource(git_catalog.url, Settings(home=home).checkout_path).exclusive():
        second = subprocess.Popen([CATALOG, "sync"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        assert second.poll() is None  # waiting for the checkout, not fetching into it
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0 and f"applied {head}" in out, err


def test_sync_with_file_errors_exits_3_and_keeps_the_rest(example_dir, tmp_path):
    home = tmp_path / "home"
    (example_dir / "services" / "legacy-reports.yaml").write_text("name: Legacy reports\npriority: [1\n")
    result = run("sync", home=home, repo=example_dir)
    assert result.returncode == 3
    assert "services/legacy-reports.yaml:3:1: YAML syntax error" in result.stderr
    assert "19 created" in result.stdout
    status = run("status", home=home)
    assert "error: services/legacy-reports.yaml:3:1" in status.stdout


def test_sync_and_plan_warn_about_what_points_at_a_broken_file(example_dir, tmp_path):
    home = tmp_path / "home"
    (example_dir / "services" / "new-core.yaml").write_text("name: New core\npriority: 0\n")
    (example_dir / "services" / "new-edge.yaml").write_text("name: New edge\npriority: 2\ndependencies: [new-core]\n")
    warning = ("services/new-edge.yaml:3:16: warning: dependencies: service 'new-core' is declared by"
               " services/new-core.yaml, which has errors; it exists once that file is fixed")
    planned = run("plan", home=home, repo=example_dir)
    assert planned.returncode == 1 and "+ service new-edge" in planned.stdout and warning in planned.stderr.splitlines()
    result = run("sync", home=home, repo=example_dir)
    assert result.returncode == 3 and "21 created" in result.stdout
    assert result.stderr.splitlines()[0] == warning


def test_sync_refused_mass_removal_exits_1_then_allowed(example_dir, tmp_path):
    home = tmp_path / "home"
    assert run("sync", home=home, repo=example_dir).returncode == 0
    shutil.rmtree(example_dir / "services")
    refused = run("sync", home=home, repo=example_dir)
    assert_one_line_error(refused)
    assert "refusing to remove 11 of 11 services" in refused.stderr
    status = run("status", home=home).stdout
    assert "last sync: refused" in status
    assert "  0 created, 0 updated, 0 removed," in status  # it said "11 removed" of a catalog it left whole
    assert json.loads(run("status", "--json", home=home).stdout)["last_run"]["removed"] == 0
    allowed = run("sync", "--allow-mass-removal", home=home, repo=example_dir)
    assert allowed.returncode == 3 or allowed.returncode == 0, allowed.stderr  # checks now target nothing


def test_sync_unreachable_repository_is_one_line(tmp_path):
    result = run("sync", home=tmp_path / "home", repo="http://user:pw@127.0.0.1:9/catalog.git")
    assert_one_line_error(result)
    assert "cannot clone" in result.stderr and "pw" not in result.stderr


def test_status_before_any_sync(tmp_path):
    assert run("token", "create", "ci", "--scope", "read", home=tmp_path / "home").returncode == 0  # makes the store
    result = run("status", home=tmp_path / "home")
    assert result.returncode == 0 and "last sync: never" in result.stdout


def test_commands_that_only_read_refuse_a_store_that_does_not_exist_and_make_none(tmp_path, database_url):
    """A mistyped CATALOG_HOME (or an empty database): status, export, token list and revoke, scorecard
    and verify --against-store said "nothing" with exit 0, and made an empty store where they looked."""
    typo = tmp_path / "hoem"
    if database_url.startswith("sqlite"):
        env, where = {}, f"no catalog store at {typo / 'catalog.db'}"
    else:  # a PostgreSQL database nobody has synced into
        env, where = {"CATALOG_DATABASE_URL": database_url}, "holds no catalog yet"
    for command in (["status"], ["status", "--json"], ["export", "results"], ["token", "list"],
                    ["token", "revoke", "ci"], ["scorecard"],
                    ["verify", "--against-store", "--repo", str(tmp_path / "nothing.git")]):
        result = run(*command, home=typo, env=env)
        assert_one_line_error(result)
        assert where in result.stderr, (command, result.stderr)
    assert not typo.exists()


def test_status_shows_writeback_tampering_found_earlier(tmp_path):
    from reconciler.store import Database, open_database

    home = tmp_path / "home"
    store = open_database(home / "catalog.db")
    store.state.set({"writeback_findings": [
        {"path": "results/history/2026/01/05.jsonl", "message": "line 3 was changed after it was pushed", "result_id": 7},
        {"path": "", "message": "branch catalog-results was rewritten", "result_id": None, "found_at": "2026-01-06T10:00:00.000000Z"},
    ]})
    store.close()
    result = run("status", home=home)
    assert result.returncode == 0
    assert "tampering: results/history/2026/01/05.jsonl: line 3 was changed after it was pushed" in result.stdout
    assert "tampering (found 2026-01-06T10:00:00.000000Z): branch catalog-results was rewritten" in result.stdout
    assert json.loads(run("status", "--json", home=home).stdout)["writeback_tampering"][0]["result_id"] == 7


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_password_in_catalog_repo_is_never_printed_by_any_command(tmp_path):
    import signal
    import sys
    import time

    home = tmp_path / "home"
    repo = f"http://bot:SECRET-PASSWORD@127.0.0.1:{_closed_port()}/acme/catalog.git"  # nothing listens there
    outputs = {}
    for command in (["sync"], ["plan"], ["status"], ["status", "--json"], ["writeback"], ["writeback", "--no-push"],
                    ["dispatch", "--dispatcher", "log"], ["dispatch", "--dry-run"], ["run-check", "has-owner", "--dispatcher", "log"],
                    ["token", "list"]):
        done = run(*command, home=home, repo=repo)
        outputs[" ".join(command)] = done.stdout + done.stderr
    env = {key: value for key, value in os.environ.items() if not key.startswith("CATALOG_")}
    env.update(CATALOG_HOME=str(home), CATALOG_REPO=repo, CATALOG_DISPATCHER="log", CATALOG_WRITEBACK_INTERVAL="0.5")
    log = tmp_path / "up.log"
    with log.open("w") as sink:
        up = subprocess.Popen([sys.executable, "-m", "api.cli", "up", "--port", str(_closed_port())],
                              env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not ("job sync failed" in log.read_text() and "job writeback failed" in log.read_text()):
                assert time.monotonic() < deadline and up.poll() is None, log.read_text()
                time.sleep(0.2)
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(timeout=30)
    outputs["up"] = log.read_text()
    for command, output in outputs.items():
        assert "SECRET-PASSWORD" not in output and "bot:" not in output, (command, output)
    assert "write-back   http://***@127.0.0.1" in outputs["up"]
    assert "cannot clone http://***@127.0.0.1" in outputs["sync"] and "cannot clone http://***@" in outputs["status"]


def test_migrate_applies_what_is_pending_then_says_the_store_is_up_to_date(tmp_path, database_url):
    home = tmp_path / "home"
    first = run("migrate", "--database-url", database_url, home=home)
    assert first.returncode == 0, first.stderr
    assert "migrated from version 0 to " in first.stdout and "applied" in first.stdout
    again = run("migrate", "--database-url", database_url, home=home)
    assert again.returncode == 0 and "up to date at version " in again.stdout
    assert "PostgreSQL: " in again.stdout or "SQLite: " in again.stdout


def test_a_database_url_with_a_password_that_cannot_be_reached_is_one_line_without_it(tmp_path):
    from postgres_server import free_port

    result = run("status", "--database-url", f"postgresql://catalog:s3cret@127.0.0.1:{free_port()}/catalog",
                 home=tmp_path / "home")
    assert_one_line_error(result)
    assert "cannot connect" in result.stderr and "s3cret" not in result.stdout + result.stderr


def _outputs_of_catalog_up(database_url: str, home, log) -> str:
    """What `catalog up` prints on a database until its banner is out."""
    import signal
    import sys
    import time

    env = {key: value for key, value in os.environ.items() if not key.startswith("CATALOG_")}
    env.update(CATALOG_HOME=str(home), CATALOG_DATABASE_URL=database_url, CATALOG_DISPATCHER="log")
    with log.open("w") as sink:
        up = subprocess.Popen([sys.executable, "-m", "api.cli", "up", "--port", str(_closed_port())],
                              env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while "  state  " not in log.read_text():
                assert time.monotonic() < deadline and up.poll() is None, log.read_text()
                time.sleep(0.2)
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(timeout=30)
    return log.read_text()


def test_a_database_password_is_never_printed_whichever_way_the_url_gives_it(tmp_path, postgres_server):
    """As a query option (`?password=`), next to `?user=`, and with an unescaped @ (libpq then reads part
    of it as the host, and psycopg's error quoted that part)."""
    from postgres_server import free_port

    home, port, database = tmp_path / "home", postgres_server.port, postgres_server.new_database().rsplit("/", 1)[1]
    given = f"postgresql://postgres@127.0.0.1:{port}/{database}?password=QueryPW99"
    as_options = f"postgresql://127.0.0.1:{port}/{database}?user=postgres&password=QueryPW99"
    misspelt = f"postgresql://127.0.0.1:{port}/{database}?user=postgres&PassWord=QueryPW99"  # libpq refuses it
    refused = f"postgresql://127.0.0.1:{free_port()}/{database}?password=QueryPW99"
    unescaped = f"postgresql://postgres:p@ssW0rdX@127.0.0.1:{free_port()}/{database}"
    runs = {"migrate": run("migrate", "--database-url", as_options, home=home),  # first: status reads a store made
            "status": run("status", "--database-url", given, home=home),
            "status --json": run("status", "--json", "--database-url", given, home=home),
            "refused": run("status", "--database-url", refused, home=home),
            "misspelt": run("status", "--database-url", misspelt, home=home),
            "unescaped @": run("status", "--database-url", unescaped, home=home)}
    outputs = {name: done.stdout + done.stderr for name, done in runs.items()}
    outputs["up"] = _outputs_of_catalog_up(given, home, tmp_path / "up.log")
    for name, output in outputs.items():
        for secret in ("QueryPW99", "p@ssW0rdX", "ssW0rdX"):
            assert secret not in output, (name, output)
    assert f"postgresql://***@127.0.0.1:{port}/{database}?password=*** (schema version " in outputs["status"]
    assert "password=***: migrated from version 0 to " in outputs["migrate"]
    assert "state  " in outputs["up"] and "?password=***)" in outputs["up"]
    for name in ("refused", "misspelt", "unescaped @"):
        assert_one_line_error(runs[name])
    assert "?password=***: connection failed: " in outputs["refused"] and "PassWord=***: " in outputs["misspelt"]
    assert "(write an @ in the password as %40)" in outputs["unescaped @"]


def test_a_database_url_in_libpq_key_value_form_is_refused_without_the_password(tmp_path):
    home, folder = tmp_path / "home", tmp_path / "here"
    folder.mkdir()
    for environment in (False, True):
        settings = "host=127.0.0.1 port=5432 password=KVpw77 dbname=cat1"
        if environment:
            done = subprocess.run([CATALOG, "status"], capture_output=True, text=True, cwd=folder, timeout=60,
                                  env={**os.environ, "CATALOG_HOME": str(home), "CATALOG_DATABASE_URL": settings})
        else:
            done = run("status", "--database-url", settings, home=home, cwd=folder)
        assert_one_line_error(done)
        assert "the database URL is not a URL: use sqlite:///" in done.stderr and "KVpw77" not in done.stdout + done.stderr
    assert list(folder.iterdir()) == [] and not (home / "catalog.db").exists()


def test_scorecard_prints_every_summary_then_services_by_level(example_dir, tmp_path):
    home = tmp_path / "home"
    assert run("sync", home=home, repo=example_dir).returncode == 0
    summary = run("scorecard", home=home)
    assert summary.returncode == 0
    assert summary.stdout == "production-readiness: Production readiness (8 services): 8 none, 0 Bronze, 0 Silver, 0 Gold\n"
    one = run("scorecard", "production-readiness", home=home)
    assert one.stdout.startswith("Production readiness (production-readiness): Bronze < Silver < Gold\n")
    assert "  none         search-index  (has-owner missing, log4j-vulnerability waived)\n" in one.stdout
    assert json.loads(run("scorecard", "production-readiness", "--json", home=home).stdout)["services"] == 8
    assert_one_line_error(run("scorecard", "nope", home=home))


def test_status_shows_notifications_that_failed_after_the_last_retry(example_dir, tmp_path):
    import yaml

    from reconciler.notify import RetryPolicy, notify_pass
    from reconciler.store import open_database
    from store_support import finished_result

    home = tmp_path / "home"
    config = yaml.safe_load((example_dir / "catalog.yaml").read_text())
    config["notifications"] = [{"name": "audit-hook", "webhook_env": "AUDIT_HOOK_URL", "secret_env": "AUDIT_HOOK_SECRET"}]
    (example_dir / "catalog.yaml").write_text(yaml.safe_dump(config))
    synced = run("sync", home=home, repo=example_dir)
    assert "warning: route audit-hook: environment variable AUDIT_HOOK_URL is not set" in synced.stderr
    store = open_database(home / "catalog.db")
    finished_result(store, "has-owner", "payments-api", "fail")
    notify_pass(store, environ={"AUDIT_HOOK_URL": "http://127.0.0.1:9/hook-tok3n", "AUDIT_HOOK_SECRET": "s3cret"},
                policy=RetryPolicy(attempts=1))
    store.close()
    status = run("status", home=home)
    assert "notifications: 0 waiting, 1 failed after the last retry" in status.stdout
    assert "failed notification: route audit-hook, event 1 (failing): the webhook could not be reached" in status.stdout
    assert "tok3n" not in status.stdout + status.stderr and "s3cret" not in status.stdout + status.stderr
    data = json.loads(run("status", "--json", home=home).stdout)
    assert data["notifications"]["failed"] == 1


def test_a_reader_that_takes_the_first_line_and_closes_the_pipe_is_no_failure(example_dir, tmp_path):
    """docs/writing-checks.md: `catalog run-check ... --dispatcher log | head -1 > event.json`. The pipe
    closed after one line made the command exit 1 without a word, failing a `set -o pipefail` script."""
    home = tmp_path / "home"
    assert run("sync", home=home, repo=example_dir).returncode == 0
    # `true` has closed the pipe before the first line is written: the broken pipe every time
    for check, reader in (("has-owner", "head -1"), ("readme-present", "true")):
        pipeline = subprocess.run(
            ["bash", "-o", "pipefail", "-c", f"{CATALOG} run-check {check} --home {home} --dispatcher log | {reader}"],
            capture_output=True, text=True, timeout=120)
        assert pipeline.returncode == 0, pipeline.stderr
        assert pipeline.stderr == ""
    assert run("status", home=home).returncode == 0
