"""Every bad input the issue lists: a clear file:line:col error, and through sync nothing is lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import sync_directory, write_catalog
from reconciler.loader import _read_in_two_processes, list_catalog_files, read_file, read_files
from reconciler.safe_read import MAX_FILE_BYTES
from reconciler.validation import validate_directory

GOOD = b"name: Payments API\nslug: payments-api\npriority: 1\nowner: team-payments\n"
BOMB = b"".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 10 if previous else ['x'] * 10)}]\n".encode()
    for previous, name in zip([None, "a", "b", "c", "d"], ["a", "b", "c", "d", "e"])
)

# (file content, the exact error) for one service file at services/payments-api.yaml
BAD_FILES = {
    "syntax error": (
        b"name: A\npriority: [1\n",
        "services/payments-api.yaml:3:1: YAML syntax error: did not find expected ',' or ']'"
        " (while parsing a flow sequence)",
    ),
    "wrong type": (b"name: A\npriority: high\n", "services/payments-api.yaml:2:11: priority: must be a whole number"),
    "priority out of range": (b"name: A\npriority: 11\n", "services/payments-api.yaml:2:11: priority: must be <= 10"),
    "unknown key": (
        b"name: A\npriority: 1\nonwer: team-x\n",
        "services/payments-api.yaml:3:1: unknown key 'onwer' (did you mean 'owner'?)",
    ),
    "duplicate key": (
        b"name: A\npriority: 1\nname: B\n",
        "services/payments-api.yaml:3:1: duplicate key 'name' (first defined on line 1)",
    ),
    "empty file": (b"", "services/payments-api.yaml:1:1: file is empty; it should hold a mapping of fields"),
    "only a comment": (b"# nothing yet\n", "services/payments-api.yaml:1:1: file is empty; it should hold a mapping of fields"),
    "a list instead of a mapping": (
        b"- name: A\n  priority: 1\n",
        "services/payments-api.yaml:1:1: file holds a list; it should hold a mapping of fields (key: value)",
    ),
    "non-UTF-8 bytes": (
        b"name: caf\xe9\npriority: 1\n",
        "services/payments-api.yaml:1:10: is not valid UTF-8 (byte 0xe9); save the file as UTF-8",
    ),
    "huge file": (
        b"name: A\npriority: 1\ndescription: " + b"x" * MAX_FILE_BYTES + b"\n",
        f"services/payments-api.yaml:1:1: file is {MAX_FILE_BYTES + 34:,} bytes; the limit is {MAX_FILE_BYTES:,} bytes",
    ),
    "alias bomb": (
        BOMB,
        "services/payments-api.yaml:1:1: file expands to more than 20,000 YAML nodes (aliases included);"
        " refusing it as a possible alias bomb",
    ),
    "a number as a key": (
        b"name: A\npriority: 1\nmeta:\n  5: five\n",
        "services/payments-api.yaml:4:3: key '5' is a number, not text; quote it (\"5\") if it is meant as text",
    ),
    "true as a key": (
        b"name: A\npriority: 1\nmeta: {true: x}\n",
        "services/payments-api.yaml:3:8: key 'true' is true/false, not text; quote it (\"true\") if it is meant as text",
    ),
    "a name without letters or digits": (
        b"name: '___'\npriority: 1\n",
        "services/payments-api.yaml:1:7: name: has no letters or digits to make a slug from; set slug",
    ),
    "a date that does not exist": (
        b"name: A\npriority: 1\nmeta:\n  released: 2027-02-30\n",
        "services/payments-api.yaml:4:13: YAML error: day is out of range for month",
    ),
    "unsafe tag": (
        b"name: !!python/object/apply:os.system ['true']\npriority: 1\n",
        "services/payments-api.yaml:1:7: YAML error: could not determine a constructor for the tag"
        " 'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
}


def _one_service_root(tmp_path: Path, content: bytes) -> Path:
    (tmp_path / "services").mkdir(parents=True, exist_ok=True)
    (tmp_path / "services" / "payments-api.yaml").write_bytes(content)
    return tmp_path


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_gets_one_error_with_file_line_col(tmp_path, case):
    content, expected = BAD_FILES[case]
    loaded = read_file(_one_service_root(tmp_path, content), "services/payments-api.yaml")
    assert loaded.record is None
    assert [str(error) for error in loaded.errors] == [expected]


def test_a_non_text_key_added_to_a_good_file_is_an_error_until_fixed(tmp_path, store):
    root = _one_service_root(tmp_path, GOOD)
    sync_directory(store, root)
    path = root / "services" / "payments-api.yaml"
    path.write_bytes(GOOD + b"meta:\n  5: five\n")
    assert [str(e) for e in sync_directory(store, root).errors] == [BAD_FILES["a number as a key"][1].replace(":4:", ":6:")]
    assert store.catalog.file_errors()[0]["path"] == "services/payments-api.yaml"  # not taken as the last good state
    path.write_bytes(GOOD + b"meta:\n  '5': five\n")
    report = sync_directory(store, root)
    assert report.errors == [] and store.reads.service("payments-api")["meta"] == {"5": "five"}


def test_wrong_types_each_get_their_own_line(tmp_path):
    loaded = read_file(_one_service_root(tmp_path, b"name: A\npriority: high\nactive: maybe\n"), "services/payments-api.yaml")
    assert [str(e) for e in loaded.errors] == [
        "services/payments-api.yaml:2:11: priority: must be a whole number",
        "services/payments-api.yaml:3:9: active: must be true or false",
    ]


def test_symlink_outside_the_repository_is_refused(tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_bytes(GOOD)
    root = tmp_path / "repo"
    (root / "services").mkdir(parents=True)
    os.symlink(secret, root / "services" / "payments-api.yaml")
    loaded = read_file(root, "services/payments-api.yaml")
    assert [str(e) for e in loaded.errors] == [
        "services/payments-api.yaml:1:1: is a symlink pointing outside the repository; refusing to read it"
    ]


def test_symlinked_directory_outside_the_repository_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.yaml").write_bytes(GOOD)
    root = tmp_path / "repo"
    (root / "services").mkdir(parents=True)
    os.symlink(outside, root / "services" / "team")
    assert "symlink pointing outside" in str(read_file(root, "services/team/x.yaml").errors[0])
    assert list_catalog_files(root) == []  # not followed when listing either


def test_symlink_inside_the_repository_is_read(tmp_path):
    root = _one_service_root(tmp_path, GOOD)
    os.symlink("payments-api.yaml", root / "services" / "alias.yaml")
    assert read_file(root, "services/alias.yaml").ok


def test_a_good_file_gives_its_model_and_digest(tmp_path):
    loaded = read_file(_one_service_root(tmp_path, GOOD), "services/payments-api.yaml")
    assert loaded.ok and loaded.slug == loaded.record["slug"] == "payments-api" and len(loaded.digest) == 64


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    assert read_file(_one_service_root(tmp_path, b"\xef\xbb\xbf" + GOOD), "services/payments-api.yaml").ok


def test_merge_keys_and_anchors_still_work(tmp_path):
    content = b"base: &base {slack_channel: '#x'}\n"
    root = _one_service_root(tmp_path, b"name: A\npriority: 1\nmeta:\n  <<: {slack_channel: '#x'}\n  oncall: y\n")
    loaded = read_file(root, "services/payments-api.yaml")
    assert loaded.ok and json.loads(loaded.record["meta"]) == {"oncall": "y", "slack_channel": "#x"}
    assert content  # anchors are exercised by the alias bomb case


def test_selector_errors_point_into_the_selector(tmp_path):
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "c.yaml").write_text("name: C\nservices:\n  type: web\n  max_priority: 0\n")
    loaded = read_file(tmp_path, "checks/c.yaml")
    assert [str(e) for e in loaded.errors] == ["checks/c.yaml:4:17: services.max_priority: must be >= 1"]


# -- rules across files -------------------------------------------------------------------------


def _errors(root: Path) -> list[str]:
    return [str(error) for error in validate_directory(root)[1]]


def test_duplicate_slug_across_files_names_both_files(tmp_path):
    """`validate` has no store to say which file had the slug: each file is named, so a pull request
    adding a file with a taken slug sees an error in its own file, whichever name sorts first (it
    used to be told only that the untouched file clashed with it)."""
    write_catalog(tmp_path, services=[{"name": "A", "slug": "a", "priority": 1}])
    (tmp_path / "services" / "b.yaml").write_text("name: B\nslug: a\npriority: 2\n")
    (tmp_path / "services" / "0-new.yaml").write_text("name: New\npriority: 2\nslug: a\n")
    assert _errors(tmp_path) == [
        "services/0-new.yaml:3:7: slug 'a' is also defined in services/a.yaml, services/b.yaml; a sync keeps the"
        " file that already has it and refuses the others",
        "services/a.yaml:2:7: slug 'a' is already defined in services/0-new.yaml",
        "services/b.yaml:2:7: slug 'a' is already defined in services/0-new.yaml",
    ]


def test_unknown_dependency_points_at_the_list_item(tmp_path):
    write_catalog(tmp_path, services=[{"name": "A", "slug": "a", "priority": 1, "dependencies": ["a-db", "nope"]}])
    write_catalog(tmp_path, services=[{"name": "A db", "slug": "a-db", "priority": 1}])
    assert _errors(tmp_path) == [
        "services/a.yaml:6:3: dependencies: unknown service 'nope' (no service file or Backstage Component defines it)"
    ]


def test_dependency_cycle_is_reported_in_each_file_with_both_files_named(tmp_path):
    write_catalog(tmp_path, services=[
        {"name": "A", "slug": "a", "priority": 1, "dependencies": ["b"]},
        {"name": "B", "slug": "b", "priority": 1, "dependencies": ["a"]},
    ])
    cycle = "dependency cycle: a -> b -> a (services/a.yaml, services/b.yaml)"
    assert _errors(tmp_path) == [f"services/a.yaml:5:3: {cycle}", f"services/b.yaml:5:3: {cycle}"]


def test_check_targeting_an_unknown_service(tmp_path):
    write_catalog(
        tmp_path,
        services=[{"name": "A", "slug": "a", "priority": 1}],
        checks=[{"name": "C", "slug": "c", "services": ["a", "ghost"]}],
    )
    assert _errors(tmp_path) == [
        "checks/c.yaml:5:3: services: unknown service 'ghost' (no service file or Backstage Component defines it)"
    ]


def test_the_example_catalog_validates_cleanly(example_dir):
    count, errors = validate_directory(example_dir)
    assert (count, errors) == (21, [])  # 11 services, 6 checks, catalog.yaml, a scorecard, a waiver, a campaign


# -- through sync: a bad file keeps its entity at its last good state ---------------------------


@pytest.mark.parametrize("case", sorted(BAD_FILES) + ["symlink outside"])
def test_bad_file_through_sync_loses_nothing(tmp_path, store, case):
    root = write_catalog(tmp_path / "repo", services=[
        {"name": "Payments API", "slug": "payments-api", "priority": 1, "owner": "team-payments"},
        {"name": "Users API", "slug": "users-api", "priority": 2},
    ], checks=[{"name": "Has owner", "slug": "has-owner"}])
    assert sync_directory(store, root).outcome == "applied"
    path = root / "services" / "payments-api.yaml"
    if case == "symlink outside":
        (tmp_path / "outside.yaml").write_bytes(GOOD.replace(b"priority: 1", b"priority: 9"))
        path.unlink()
        os.symlink(tmp_path / "outside.yaml", path)
        expected_start = "services/payments-api.yaml:1:1: is a symlink pointing outside"
    else:
        path.write_bytes(BAD_FILES[case][0])
        expected_start = BAD_FILES[case][1]
    (root / "services" / "users-api.yaml").write_text("name: Users API\nslug: users-api\npriority: 3\n")

    report = sync_directory(store, root)

    assert report.outcome == "applied"
    assert [str(e) for e in report.errors][0].startswith(expected_start)
    payments = json.loads(store.reads.service_json("payments-api"))
    assert payments["priority"] == 1 and payments["owner"] == "team-payments"  # last good state
    assert payments["error"].startswith(expected_start)
    assert json.loads(store.reads.service_json("users-api"))["priority"] == 3  # the other file still applied
    assert store.catalog.counts()["services"] == 2


def test_reading_in_two_processes_gives_exactly_what_one_process_reads(example_dir):
    (example_dir / "services" / "broken.yaml").write_text("name: Broken\npriority: 12\nownr: me\n")
    (example_dir / "services" / "syntax.yaml").write_bytes(b"name: [\n")
    (example_dir / "services" / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    paths = list_catalog_files(example_dir)
    serial = read_files(example_dir, paths, parallel_from=10**9)
    told: list[int] = []
    forked = _read_in_two_processes(example_dir, paths, None, told.append, chunk=3)  # both take chunks in turn
    assert [f.path for f in forked] == paths and sum(told) == len(paths)  # the progress bar hears of every file
    assert [(f.path, f.kind, f.digest, f.ok, f.record, f.config, f.slug, f.references) for f in forked] == \
           [(f.path, f.kind, f.digest, f.ok, f.record, f.config, f.slug, f.references) for f in serial]
    assert [[str(e) for e in f.errors] for f in forked] == [[str(e) for e in f.errors] for f in serial]
    assert any(f.errors for f in forked) and all(type(e).__name__ == "CatalogFileError" for f in forked for e in f.errors)
    assert sum(f.record is not None for f in forked) == 20  # the example's services, checks, scorecard, waiver, campaign


def test_tag_resolution_shortcut_agrees_with_pyyaml_for_every_plain_scalar_shape():
    import string

    import yaml

    from reconciler.yamlparse import _YamlLoader

    words = ["yes", "No", "ON", "off", "y", "n", "true", "False", "null", "Null", "~", "", "1e3", "0x1F", "0o17",
             "017", "1_000", "2026-01-05", "2026-01-05 12:00:00", ".inf", "-.Inf", ".nan", "<<", "=", "!", "&", "*",
             "12:30", "190:20:30", "+1", "-", "Service 00042", "team-38", "https://x.example", "#svc", "@me", "%x"]
    words += [c for c in string.printable] + [c + "x" for c in string.printable] + ["\u00e9t\u00e9", "\u4e2d"]
    ours, theirs = _YamlLoader(""), yaml.SafeLoader("")
    for word in words:
        for implicit in ((True, False), (False, True)):
            assert ours.resolve(yaml.ScalarNode, word, implicit) == theirs.resolve(yaml.ScalarNode, word, implicit), word


def test_a_service_records_json_texts_and_digest_are_json_dumps_own():
    """The record step writes a service's JSON by hand (a cold sync's speed): it must be json.dumps's
    text to the character, or every stored digest would move and every service show as updated."""
    import hashlib
    import random

    from reconciler.entity_records import service_record
    from reconciler.schema import Service

    rng = random.Random(14)
    awkward = ["", "x", "caf\u00e9", "\u2028", "\U0001f600", 'say "hi"', "back\\slash", "tab\tnew\nline", "\x00\x1f\x7f",
               "</script>", "\ud7ff\ue000", "#team", "a: b", "\u00ff" * 3]

    def text() -> str:
        return "".join(rng.choice(awkward) for _ in range(rng.randint(0, 3)))[:200]

    for number in range(400):
        fields = {"name": text() or "n", "slug": f"s-{number}", "priority": rng.randint(1, 10),
                  "tags": [text() for _ in range(rng.randint(0, 4))],
                  "dependencies": [f"d-{rng.randint(0, 9)}" for _ in range(rng.randint(0, 3))],
                  "meta": {text(): text() for _ in range(rng.randint(0, 4))}, "active": rng.random() < 0.5}
        for key in ("type", "description", "owner"):
            if rng.random() < 0.7:
                fields[key] = text()
        if rng.random() < 0.5:
            fields["repository"] = "acme/x"
        model = Service.model_validate(fields)
        record = service_record(model)
        assert record["tags"] == (json.dumps(model.tags) if model.tags else "[]")
        assert record["dependencies"] == (json.dumps(model.dependencies) if model.dependencies else "[]")
        assert record["meta"] == json.dumps(model.meta, sort_keys=True)
        fields_only = {key: value for key, value in record.items() if key != "digest"}
        assert record["digest"] == hashlib.sha256(json.dumps(fields_only, sort_keys=True).encode()).hexdigest()[:32]
