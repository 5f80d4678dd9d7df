"""Backstage descriptors read as services (DESIGN.md section 13): sync, errors, rules across formats, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import PROJECT, GitCatalog, sync_directory
from reconciler.gitsource import DirectorySource, GitSource
from reconciler.reconcile import sync
from reconciler.schema import json_schema
from reconciler.validation import validate_directory
from store_support import raw_rows

FIXTURE = Path(__file__).parent / "fixtures" / "backstage"
SHARED_EXAMPLES = PROJECT.parent / "shared" / "backstage-examples"  # Backstage's own, copied unchanged


@pytest.fixture
def backstage_dir(tmp_path: Path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(FIXTURE, target)
    return target


def _services(store) -> dict[str, dict]:
    return {row["slug"]: row for row in raw_rows(store, "SELECT * FROM services WHERE removed_at IS NULL")}


def _errors(root: Path) -> list[str]:
    return [str(error) for error in validate_directory(root)[1]]


def test_components_become_services_mapped_field_by_field(store, backstage_dir):
    report = sync_directory(store, backstage_dir)
    assert report.outcome == "applied" and not report.errors, report.errors
    services = _services(store)
    assert sorted(services) == ["audit-log", "checkout", "fraud-scoring", "ledger", "payments-api", "users-api"]
    payments = services["payments-api"]
    assert (payments["name"], payments["description"], payments["type"], payments["owner"]) == (
        "Payments API", "Takes money. Card payments and refunds.", "service", "team-payments")
    assert (payments["repository"], payments["priority"], payments["path"]) == (
        "acme/payments-api", 2, "payments/catalog-info.yaml#1")
    assert json.loads(payments["tags"]) == ["pci", "java"]
    assert json.loads(payments["meta"]) == {"lifecycle": "production"}
    # component refs in every spelling; the Resource is not a service
    assert json.loads(payments["dependencies"]) == ["ledger", "fraud-scoring", "users-api"]
    fraud, checkout, ledger = services["fraud-scoring"], services["checkout"], services["ledger"]
    assert (fraud["name"], fraud["owner"], fraud["priority"], fraud["path"]) == (
        "fraud-scoring", "team-risk", 3, "payments/catalog-info.yaml#4")
    assert (checkout["owner"], checkout["priority"], checkout["repository"]) == ("user:default/jane.doe", 5, None)
    assert (ledger["path"], ledger["repository"]) == ("ledger/catalog-info.yml#1", "acme/ledger")
    # dependencies across formats, both ways
    assert json.loads(services["users-api"]["dependencies"]) == ["ledger"]
    assert json.loads(services["audit-log"]["dependencies"]) == ["payments-api", "checkout"]


def test_other_kinds_are_skipped_with_a_note_and_other_yaml_is_not_read(store, backstage_dir):
    report = sync_directory(store, backstage_dir)
    assert report.plan.notes == [
        "catalog-info.yaml: skipped 2 documents (Location, System): only Backstage Components become services",
        "ledger/catalog-info.yml: skipped 1 document (API): only Backstage Components become services",
        "payments/catalog-info.yaml: skipped 2 documents (API, Resource): only Backstage Components become services",
        "teams/groups.yaml: skipped 3 documents (2 x Group, User): only Backstage Components become services",
    ]
    paths = {row["path"] for row in raw_rows(store, "SELECT path FROM catalog_files")}
    assert "docs/mkdocs.yml" not in paths and "teams/groups.yaml" not in paths


def test_a_catalog_info_file_with_nothing_yet_is_no_error(store, backstage_dir):
    """A team adds catalog-info.yaml with a comment, to fill in later: not a failing pull request."""
    (backstage_dir / "new-app").mkdir()
    (backstage_dir / "new-app" / "catalog-info.yaml").write_text("# our Component comes here\n\n")
    (backstage_dir / "empty-app").mkdir()
    (backstage_dir / "empty-app" / "catalog-info.yaml").write_text("")
    assert _errors(backstage_dir) == []
    report = sync_directory(store, backstage_dir)
    assert report.outcome == "applied" and not report.errors
    assert "new-app/catalog-info.yaml: holds no Backstage Component; nothing read from it" in report.plan.notes
    assert "empty-app/catalog-info.yaml: holds no Backstage Component; nothing read from it" in report.plan.notes


@pytest.mark.skipif(not SHARED_EXAMPLES.is_dir(), reason="shared/backstage-examples is beside the project only")
def test_backstage_own_examples_become_services_unchanged(store, tmp_path):
    root = tmp_path / "catalog"
    shutil.copytree(SHARED_EXAMPLES, root / "components")
    report = sync_directory(store, root)
    assert not report.errors, report.errors
    services = _services(store)
    assert sorted(services) == ["artist-lookup", "playback-order", "wayback-service", "www-artist"]
    assert services["wayback-service"]["repository"] == "internetarchive/wayback"
    assert services["artist-lookup"]["dependencies"] == "[]"  # resource:artists-db is not a service
    assert any("team-a-group.yaml: skipped 6 documents" in note for note in report.plan.notes)


def test_an_error_names_the_line_inside_the_right_document(backstage_dir):
    path = backstage_dir / "payments" / "catalog-info.yaml"
    text = path.read_text()
    path.write_text(text.replace('service-catalog/priority: "3"', 'service-catalog/priority: "12"')
                    .replace("  title: Checkout\n", "  title: 5\n"))
    assert _errors(backstage_dir) == [
        "payments/catalog-info.yaml:71:31: metadata.annotations.service-catalog/priority: must be <= 10",
        "payments/catalog-info.yaml:83:10: metadata.title: must be text",
    ]
    lines = text.splitlines()  # documents 4 and 5 of the file, not its first
    assert (lines[70].strip(), lines[82].strip()) == ('service-catalog/priority: "3"', "title: Checkout")


def test_a_bad_document_keeps_its_last_good_state_and_blocks_none_of_its_file(store, backstage_dir):
    sync_directory(store, backstage_dir)
    path = backstage_dir / "payments" / "catalog-info.yaml"
    path.write_text(path.read_text().replace("lifecycle: experimental", "lifecycle: [experimental]")
                    .replace("Takes money.", "Takes money, now."))
    report = sync_directory(store, backstage_dir)
    assert [str(e) for e in report.errors] == ["payments/catalog-info.yaml:74:14: spec.lifecycle: must be text"]
    services = _services(store)
    assert services["payments-api"]["description"].startswith("Takes money, now.")
    assert services["fraud-scoring"]["error"].startswith("payments/catalog-info.yaml:74:14")
    assert json.loads(services["fraud-scoring"]["meta"]) == {"lifecycle": "experimental"}


def test_a_slug_in_both_formats_is_an_error_naming_both_files(backstage_dir):
    (backstage_dir / "services" / "ledger.yaml").write_text("name: Ledger\npriority: 3\n")
    assert _errors(backstage_dir) == [
        "ledger/catalog-info.yml:4:9: slug 'ledger' is also defined in services/ledger.yaml; a sync keeps the file"
        " that already has it and refuses the others",
        "services/ledger.yaml:1:1: slug 'ledger' is already defined in ledger/catalog-info.yml (document 1)",
    ]


def test_an_unknown_component_dependency_is_an_error_at_its_entry(backstage_dir):
    path = backstage_dir / "ledger" / "catalog-info.yml"
    path.write_text(path.read_text().replace("  owner: team-payments\n  providesApis",
                                             "  owner: team-payments\n  dependsOn: [resource:x, component:nope]\n  providesApis", 1))
    assert _errors(backstage_dir) == [
        "ledger/catalog-info.yml:12:27: spec.dependsOn: unknown service 'nope' (no service file or Backstage Component defines it)"
    ]


def test_a_dependency_cycle_across_formats_names_both_files(backstage_dir):
    (backstage_dir / "services" / "users-api.yaml").write_text("name: Users API\npriority: 2\ndependencies: [payments-api]\n")
    errors = _errors(backstage_dir)
    assert errors and all("dependency cycle: payments-api -> users-api -> payments-api" in e for e in errors)
    assert {e.split(":")[0] for e in errors} == {"payments/catalog-info.yaml", "services/users-api.yaml"}
    assert "(payments/catalog-info.yaml (document 1), services/users-api.yaml)" in errors[0]


def test_after_a_git_diff_a_document_taken_out_is_removed_and_a_broken_file_keeps_all(store, tmp_path):
    repo = GitCatalog(tmp_path / "git")
    shutil.copytree(FIXTURE, repo.work, dirs_exist_ok=True)
    repo.commit("Our Backstage descriptors")
    source = GitSource(repo.url, tmp_path / "checkout")
    sync(store, source)
    path = repo.work / "payments" / "catalog-info.yaml"
    documents = path.read_text().split("\n---\n")
    (repo.work / "services" / "audit-log.yaml").write_text("name: Audit log\npriority: 4\n")
    path.write_text("\n---\n".join(documents[:4]))  # checkout goes
    repo.commit("Checkout moves out")
    report = sync(store, source)
    assert not report.errors, report.errors
    assert ("checkout", "remove") in {(c.slug, c.action) for c in report.plan.changes}
    assert "checkout" not in _services(store) and "fraud-scoring" in _services(store)
    path.write_text(path.read_text() + "\n  oops: [unclosed\n")
    repo.commit("A typo")
    report = sync(store, source)
    assert [str(e).split(": ")[0] for e in report.errors] == ["payments/catalog-info.yaml:79:1"]
    services = _services(store)
    assert services["payments-api"]["error"] and services["fraud-scoring"]["error"]
    path.write_text(documents[0].replace("    - component:default/fraud-scoring\n", ""))  # fixed: payments-api alone
    repo.commit("Fixed, and fraud scoring moves out")
    report = sync(store, source)
    assert not report.errors and "fraud-scoring" not in _services(store)
    assert _services(store)["payments-api"]["path"] == "payments/catalog-info.yaml"  # one document: the file


def test_validate_format_github_annotates_descriptor_lines(backstage_dir):
    path = backstage_dir / "ledger" / "catalog-info.yml"
    path.write_text(path.read_text().replace("  name: ledger\n", "  name: ledger\n  title: [Ledger]\n", 1))
    run = subprocess.run([sys.executable, "-m", "api.cli", "validate", "--format", "github", str(backstage_dir)],
                         capture_output=True, text=True, cwd=PROJECT)
    assert run.returncode == 1
    assert f"::error file={backstage_dir}/ledger/catalog-info.yml,line=5,col=10::metadata.title: must be text" in run.stdout
    assert "note: teams/groups.yaml: skipped 3 documents" in run.stderr


def test_json_schema_accepts_the_descriptors_and_names_the_mapped_fields(backstage_dir):
    schema = json_schema("backstage")
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(backstage_dir.rglob("*.y*ml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and str(document.get("apiVersion", "")).startswith("backstage.io/"):
                assert not list(validator.iter_errors(document)), path
    bad = {"apiVersion": "backstage.io/v1alpha1", "kind": "Component", "metadata": {
        "name": "x", "annotations": {"service-catalog/priority": "11"}}}
    assert list(validator.iter_errors(bad))
    assert "BackstageComponent" in json_schema()["$defs"]
    shipped = json.loads((PROJECT / "catalog-repo-example" / "schemas" / "backstage.schema.json").read_text())
    assert shipped == schema


def test_other_yaml_that_mentions_backstage_is_neither_read_nor_reported(backstage_dir):
    chart = backstage_dir / "deploy" / "chart" / "templates"
    chart.mkdir(parents=True)
    (chart / "deployment.yaml").write_text(  # a Helm template: not even valid YAML
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  annotations:\n"
        "    backstage.io/kubernetes-id: {{ .Values.name }}\n  name: {{ .Values.name\n")
    (backstage_dir / "openapi.yaml").write_bytes(b"openapi: 3.0.0\n" + b"# padding\n" * 40_000)  # over 256 KiB
    count, errors = validate_directory(backstage_dir)
    assert errors == [] and count == 6
    (backstage_dir / "components").mkdir()
    (backstage_dir / "components" / "broken.yaml").write_text(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: [broken\n")
    assert [e.split(": ")[0] for e in _errors(backstage_dir)] == ["components/broken.yaml:5:1"]


def test_a_file_that_grows_a_second_document_keeps_no_stale_row(store, tmp_path):
    root = tmp_path / "catalog"
    (root / "ledger").mkdir(parents=True)
    path = root / "ledger" / "catalog-info.yml"
    ledger_only = (FIXTURE / "ledger" / "catalog-info.yml").read_text().split("\n---\n")[0]
    path.write_text(ledger_only)  # no file of the catalog holds several documents
    sync_directory(store, root)
    rows = lambda: sorted(r["path"] for r in raw_rows(store, "SELECT path FROM catalog_files"))  # noqa: E731
    assert rows() == ["ledger/catalog-info.yml"] and _services(store)["ledger"]["path"] == "ledger/catalog-info.yml"
    path.write_text(ledger_only + "\n---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: ledger-ui\n")
    sync_directory(store, root)
    assert rows() == ["ledger/catalog-info.yml#1", "ledger/catalog-info.yml#2"]
    assert _services(store)["ledger"]["path"] == "ledger/catalog-info.yml#1" and "ledger-ui" in _services(store)


def _component(name: str, owner: str, metadata: str = "") -> str:
    return (f"apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}{metadata}}}\n"
            f"spec: {{type: service, lifecycle: production, owner: {owner}}}\n")


ALPHA_THEN_BETA = _component("alpha", "team-a") + "---\n" + _component("beta", "team-b")
PREPENDED = {  # a document put before the others: every document after it moves one place down
    "a Component": _component("zeta", "team-z") + "---\n",
    "a Group": "apiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata: {name: team-z}\nspec: {type: team, children: []}\n---\n",
}


class _Catalog:
    """A catalog of one file of several documents, synced from a plain directory (every file read) or
    from git (only the changed files read, against the rows of the store they name)."""

    def __init__(self, store, tmp_path: Path, how: str):
        self.store = store
        if how == "git":
            self.repo = GitCatalog(tmp_path / "git")
            self.root, self.source = self.repo.work, GitSource(self.repo.url, tmp_path / "checkout")
        else:
            self.repo, self.root = None, tmp_path / "catalog"
            self.root.mkdir()
            self.source = DirectorySource(self.root)

    def write(self, text: str) -> None:
        (self.root / "multi.yaml").write_text(text)

    def sync(self):
        if self.repo is not None:
            self.repo.commit()
        return sync(self.store, self.source)

    def services(self) -> dict[str, dict]:
        """Every service row, removed or not."""
        return {row["slug"]: row for row in raw_rows(self.store, "SELECT * FROM services")}

    def file_rows(self) -> dict[str, tuple]:
        return {row["path"]: (row["slug"], json.loads(row["error"])["message"] if row["error"] else None)
                for row in raw_rows(self.store, "SELECT path, slug, error FROM catalog_files")}


@pytest.fixture(params=["directory", "git"])
def multi_catalog(request, store, tmp_path) -> _Catalog:
    return _Catalog(store, tmp_path, request.param)


@pytest.mark.parametrize("prepended", sorted(PREPENDED))
def test_a_broken_component_that_moves_in_its_file_keeps_its_own_last_good_state(multi_catalog, prepended):
    multi_catalog.write(ALPHA_THEN_BETA)
    assert not multi_catalog.sync().errors
    broken = ALPHA_THEN_BETA.replace("{name: alpha}", "{name: alpha, title: [x]}")
    multi_catalog.write(broken)
    assert [str(e) for e in multi_catalog.sync().errors] == ["multi.yaml:3:32: metadata.title: must be text"]
    multi_catalog.write(PREPENDED[prepended] + broken)
    report = multi_catalog.sync()
    assert [str(e) for e in report.errors] == ["multi.yaml:8:32: metadata.title: must be text"]
    assert not [c for c in report.plan.changes if c.action == "remove"], report.plan.changes
    services = multi_catalog.services()
    alpha, beta = services["alpha"], services["beta"]
    # alpha: its last good state, moved with its document, marked with its own error
    assert (alpha["removed_at"], alpha["path"], alpha["owner"]) == (None, "multi.yaml#2", "team-a")
    assert alpha["error"] == "multi.yaml:8:32: metadata.title: must be text"
    assert (beta["removed_at"], beta["path"], beta["error"]) == (None, "multi.yaml#3", None)
    rows = multi_catalog.file_rows()
    assert rows["multi.yaml#2"] == ("alpha", "metadata.title: must be text")
    assert rows["multi.yaml#3"] == ("beta", None)
    if prepended == "a Component":
        assert (services["zeta"]["path"], services["zeta"]["error"]) == ("multi.yaml#1", None)
        assert rows["multi.yaml#1"] == ("zeta", None)
    else:
        assert "zeta" not in services and "multi.yaml#1" not in rows
    (multi_catalog.root / "notes.yaml").write_text("not: a catalog file\n")  # a later sync re-reads the broken file
    again = multi_catalog.sync()
    assert [str(e) for e in again.errors] == [str(e) for e in report.errors] and not again.plan.changes
    multi_catalog.write(PREPENDED[prepended] + ALPHA_THEN_BETA)  # fixed
    assert not multi_catalog.sync().errors
    services = multi_catalog.services()
    assert [(services[s]["path"], services[s]["error"], services[s]["removed_at"]) for s in ("alpha", "beta")] == [
        ("multi.yaml#2", None, None), ("multi.yaml#3", None, None)]


def test_a_component_whose_name_cannot_be_read_keeps_one_its_file_had(multi_catalog):
    """A document without a name to go by keeps the Component of its place; when that one is named by
    another document now, a Component of its file that no document names any more: never a named one."""
    multi_catalog.write(ALPHA_THEN_BETA)
    multi_catalog.sync()
    unnamed = ALPHA_THEN_BETA.replace("{name: alpha}", "{title: Alpha}")
    multi_catalog.write(unnamed)
    assert [str(e) for e in multi_catalog.sync().errors] == ["multi.yaml:3:11: metadata.name: is required"]
    assert multi_catalog.services()["alpha"]["error"] == "multi.yaml:3:11: metadata.name: is required"
    multi_catalog.write(PREPENDED["a Component"] + unnamed)  # its place (document 2) was beta's
    report = multi_catalog.sync()
    assert [str(e) for e in report.errors] == ["multi.yaml:8:11: metadata.name: is required"]
    assert not [c for c in report.plan.changes if c.action == "remove"], report.plan.changes
    services = multi_catalog.services()
    assert [(services[s]["path"], services[s]["error"], services[s]["removed_at"]) for s in ("zeta", "alpha", "beta")] == [
        ("multi.yaml#1", None, None),
        ("multi.yaml#2", "multi.yaml:8:11: metadata.name: is required", None),
        ("multi.yaml#3", None, None),
    ]


def _cli(*args: str, home: Path, database_url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli", *args, "--home", str(home), "--database-url", database_url],
                          capture_output=True, text=True, cwd=PROJECT, timeout=120)


def test_a_file_of_several_broken_documents_is_one_file_with_errors_each_error_once(store, database_url, tmp_path):
    root, home = tmp_path / "catalog", tmp_path / "home"
    root.mkdir()
    path = root / "multi.yaml"
    path.write_text(ALPHA_THEN_BETA + "---\n" + _component("gamma", "team-c"))
    assert _cli("sync", "--repo", str(root), home=home, database_url=database_url).returncode == 0
    path.write_text(path.read_text().replace("{name: alpha}", "{name: alpha, title: [x]}")
                    .replace("{name: beta}", "{name: beta, tags: 5}"))
    synced = _cli("sync", "--repo", str(root), home=home, database_url=database_url)
    assert synced.returncode == 3
    assert synced.stderr.splitlines() == [
        "multi.yaml:3:32: metadata.title: must be text",
        "multi.yaml:8:30: metadata.tags: must be a list",
        "1 file with errors kept their last good state",
    ]
    assert store.metrics.file_error_count() == 1  # catalog_sync_file_errors: files, not documents
    assert [row["path"] for row in store.catalog.file_errors()] == ["multi.yaml"]
    path.write_text(path.read_text() + "  oops: [unclosed\n")  # a YAML syntax error: every document shares it
    synced = _cli("sync", "--repo", str(root), home=home, database_url=database_url)
    lines = synced.stderr.splitlines()
    assert synced.returncode == 3 and len(lines) == 2, lines
    assert lines[0].startswith("multi.yaml:15:3: YAML syntax error") and lines[1] == "1 file with errors kept their last good state"
    assert store.metrics.file_error_count() == 1
    status = _cli("status", home=home, database_url=database_url)
    assert [line for line in status.stdout.splitlines() if line.startswith("error: ")] == [f"error: {lines[0]}"]
    # sync-failed: once per broken Component (each its team's), and the syntax error once, not per document
    failed = sorted(event["summary"].split(": ", 1)[1] for event in store.events.list(type="sync-failed"))
    assert failed == sorted(["metadata.tags: must be a list", "metadata.title: must be text", lines[0].split(": ", 1)[1]])
