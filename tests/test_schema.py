"""The pydantic models of catalog files, their helpers, and the JSON Schemas shipped in the example."""

from __future__ import annotations

import json
import subprocess
import shutil
from datetime import timedelta

import pytest
from pydantic import ValidationError

from conftest import EXAMPLE
from reconciler.schema import CatalogConfig, Check, Service, json_schema, parse_duration, slugify


def test_slugify_makes_identities_from_names():
    assert slugify("Payments API") == "payments-api"
    assert slugify("  Über -- Service #2 ") == "uber-service-2"
    assert slugify("x" * 150) == "x" * 100


@pytest.mark.parametrize("name, slug", [
    ("Café Ünïcode", "cafe-unicode"), ("Straße", "strasse"), ("Łódź Ørsted Æble", "lodz-orsted-aeble"),
    ("İstanbul", "istanbul"), ("Москва", "moskva"), ("Ελλάδα", "ellada"), ("ﬁle ½", "file-1-2"),
])
def test_slugify_transliterates_names_in_any_script(name, slug):
    assert slugify(name) == slug
    assert Service(name=name, priority=1).identity == slug


def test_slugify_keeps_the_slugs_of_ascii_names():
    """Names in plain ASCII get the slugs they always had (the first rule, written out here)."""
    import random
    import re
    import string

    def first_rule(name: str) -> str:
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:100]

    generator = random.Random(12)
    import yaml

    names = list(string.printable) + [
        yaml.safe_load(path.read_text())["name"] for path in EXAMPLE.glob("*s/*.yaml") if path.parent.name != "waivers"]
    names += ["".join(generator.choices(string.printable, k=generator.randint(1, 130))) for _ in range(2000)]
    for name in names:
        if not first_rule(name).endswith("-"):  # cut at 100 on a dash: no longer a valid slug, see below
            assert slugify(name) == first_rule(name), name


def test_a_slug_cut_at_100_characters_never_ends_in_a_dash():
    assert slugify("x" * 99 + " y") == "x" * 99


@pytest.mark.parametrize("text, expected", [
    ("6h", timedelta(hours=6)), ("30m", timedelta(minutes=30)), ("1d12h", timedelta(hours=36)),
    ("2w", timedelta(weeks=2)), (90, timedelta(seconds=90)),
])
def test_parse_duration_accepts_the_documented_forms(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "6 hours", "0m", "31d", True, "-1h"])
def test_parse_duration_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_service_defaults_and_identity():
    service = Service(name="Payments API", priority=1)
    assert service.identity == "payments-api" and service.active is True and service.tags == []
    assert Service(name="X", slug="custom", priority=10).identity == "custom"


@pytest.mark.parametrize("fields", [
    {"name": "A", "priority": 0},
    {"name": "A", "priority": "1"},  # strict: a quoted number is a typo worth reporting
    {"name": "A", "priority": 1, "onwer": "x"},
    {"name": "A", "priority": 1, "slug": "Not A Slug"},
    {"name": "A", "priority": 1, "repository": "not a repo"},
    {"name": "A", "priority": 1, "meta": {"k": 1}},
    {"name": "!!!", "priority": 1},
    {"priority": 1},
])
def test_service_refuses_bad_fields(fields):
    with pytest.raises(ValidationError):
        Service.model_validate(fields)


def test_check_targets_every_form():
    assert Check(name="C").services == "all"
    assert Check(name="C", services="none").services == "none"
    assert Check(name="C", services=["a", "b"]).services == ["a", "b"]
    assert Check(name="C", services={"type": "web", "max_priority": 3}).services.max_priority == 3


@pytest.mark.parametrize("fields", [
    {"name": "C", "frequency": "daily", "schedule": "0 3 * * 1"},
    {"name": "C", "schedule": "every monday"},
    {"name": "C", "frequency": "monthly"},
    {"name": "C", "timeout": "soon"},
    {"name": "C", "services": {}},
    {"name": "C", "services": []},
    {"name": "C", "services": "some"},
])
def test_check_refuses_bad_fields(fields):
    with pytest.raises(ValidationError):
        Check.model_validate(fields)


def test_catalog_config_defaults_and_writeback_path():
    config = CatalogConfig()
    assert (config.defaults.frequency, config.writeback.branch, config.writeback.path) == ("daily", "catalog-results", "results/")
    assert CatalogConfig.model_validate({"writeback": {"path": "history"}}).writeback.path == "history/"
    with pytest.raises(ValidationError):
        CatalogConfig.model_validate({"writeback": {"path": "../outside"}})


def test_json_schema_forbids_unknown_keys():
    for kind in ("service", "check", "catalog", "scorecard", "waiver", "campaign"):
        assert json_schema(kind)["additionalProperties"] is False
    assert set(json_schema()["$defs"]) >= {"Service", "Check", "CatalogConfig", "Selector", "Scorecard", "Level",
                                           "Waiver", "Campaign"}


@pytest.mark.parametrize("kind", ["service", "check", "catalog", "scorecard", "waiver", "campaign"])
def test_example_schemas_equal_catalog_schema_output(kind):
    """The schemas editors use in the example never go stale: regenerate with `catalog schema KIND`."""
    catalog = shutil.which("catalog")
    printed = subprocess.run([catalog, "schema", kind], capture_output=True, text=True, check=True).stdout if catalog else None
    shipped = json.loads((EXAMPLE / "schemas" / f"{kind}.schema.json").read_text())
    assert shipped == json_schema(kind)
    if printed is not None:
        assert json.loads(printed) == shipped


def test_example_files_point_editors_at_the_schemas():
    for path in sorted(EXAMPLE.glob("*s/*.yaml")):
        kind = path.parent.name[:-1]
        assert path.read_text().startswith(f"# yaml-language-server: $schema=../schemas/{kind}.schema.json"), path


def test_example_has_a_pull_request_workflow_running_validate():
    import yaml

    workflow = yaml.safe_load((EXAMPLE / ".github" / "workflows" / "validate.yml").read_text())
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as true
    steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert any("catalog validate --format github ." in step for step in steps)


def test_notification_routes_name_their_variables_and_filters():
    route = {"name": "audit-hook", "webhook_env": "AUDIT_HOOK_URL", "secret_env": "AUDIT_HOOK_SECRET", "events": ["all"]}
    config = CatalogConfig.model_validate({"notifications": [route, {
        "name": "payments", "url_env": "NOTIFY_PAYMENTS", "events": ["failing", "level-changed", "campaign-overdue"],
        "services": {"owner": "team-payments"}, "digest": "hourly"}]})
    assert [r.name for r in config.notifications] == ["audit-hook", "payments"]
    assert config.notifications[1].wants("level-changed") and not config.notifications[1].wants("recovered")
    assert CatalogConfig.from_stored(config.model_dump(mode="json")) == config


@pytest.mark.parametrize("route", [
    {"name": "r"},                                                          # no destination
    {"name": "r", "url_env": "A", "webhook_env": "B", "secret_env": "C"},   # two
    {"name": "r", "webhook_env": "B"},                                      # an unsigned webhook
    {"name": "r", "url_env": "A", "secret_env": "C"},                       # a secret for Apprise
    {"name": "r", "url_env": "slack://token@channel"},                      # a URL, not a variable name
    {"name": "r", "url_env": "A", "events": ["on-fire"]},
    {"name": "r", "url_env": "A", "events": []},
    {"name": "r", "url_env": "A", "digest": "weekly"},
    {"name": "r", "url_env": "A", "on": ["failing"]},                       # `on:`, read by YAML 1.1 as true
])
def test_bad_notification_routes_are_refused(route):
    with pytest.raises(ValidationError):
        CatalogConfig.model_validate({"notifications": [route]})


def test_two_routes_with_one_name_are_refused():
    with pytest.raises(ValidationError, match="two routes are named"):
        CatalogConfig.model_validate({"notifications": [{"name": "r", "url_env": "A"}, {"name": "r", "url_env": "B"}]})
