"""Pydantic models of the catalog's YAML files: services, checks and catalog.yaml."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal, Mapping, Union

from anyascii import anyascii
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .cron import schedule_problem
from .events import ALL_EVENTS, EVENT_TYPES
from .outcomes import NO_LEVEL, RESULT_VALUES

SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
Slug = Annotated[StrictStr, Field(pattern=SLUG_PATTERN, min_length=1, max_length=100)]
Text = Annotated[StrictStr, Field(max_length=200)]


def _a_day(value: Any) -> Any:
    """A day as YAML writes one (2027-01-31, quoted or not): not a number of seconds, nor a time of day."""
    if isinstance(value, datetime) or not isinstance(value, (date, str)) or (
        isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)
    ):
        shown = value.isoformat() if isinstance(value, datetime) else repr(value)
        raise ValueError(f"must be a day such as 2027-01-31, not {shown}")
    return value


Day = Annotated[date, BeforeValidator(_a_day)]
Frequency = Literal["hourly", "daily", "weekly", "ad-hoc"]

FREQUENCY_PERIODS: dict[str, timedelta] = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
}
DEFAULT_FREQUENCY = "daily"
DEFAULT_TIMEOUT = "6h"
DEFAULT_WRITEBACK_BRANCH = "catalog-results"
DEFAULT_WRITEBACK_PATH = "results/"

_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_REPOSITORY = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+|https?://\S+)$")


def slugify(name: str) -> str:
    """`Payments API` -> `payments-api`, `Café Ünïcode` -> `cafe-unicode`: transliterated to ASCII,
    lower case, runs of other characters one dash, at most 100 characters."""
    # anyascii leaves ASCII as it is, so the slugs of ASCII names are what they always were
    return re.sub(r"[^a-z0-9]+", "-", anyascii(name).lower()).strip("-")[:100].rstrip("-")


def parse_duration(value: str | int) -> timedelta:
    """`6h`, `30m`, `1d12h`, `90s`, `2w`, or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30m, 6h or 2d")
    if isinstance(value, int):
        seconds = value
    else:
        match = _DURATION.match(value.strip())
        if not value.strip() or not match:
            raise ValueError(f"{value!r} is not a duration such as 30m, 6h or 2d")
        weeks, days, hours, minutes, secs = (int(g or 0) for g in match.groups())
        seconds = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + secs
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    if seconds > 30 * 86400:
        raise ValueError("must be at most 30 days")
    return timedelta(seconds=seconds)


def format_duration(seconds: int) -> str:
    """The inverse of `parse_duration`, in its largest whole unit: 21600 -> `6h`, 90 -> `90s`."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"




class AtKey(ValueError):
    """A model's rule broken at one of its keys (`loc`, from the model): the error is reported at that
    key's line, not at the file's first line (`model_errors.explain`)."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = loc

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_repository(value: str | None) -> str | None:
    if value is not None and not _REPOSITORY.match(value):
        raise ValueError('must be "owner/repo" or a URL')
    return value


class Service(_Strict):
    """One file under services/."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    slug: Slug | None = None
    priority: Annotated[StrictInt, Field(ge=1, le=10)]
    type: Text | None = None
    description: Annotated[StrictStr, Field(max_length=20_000)] | None = None
    owner: Text | None = None
    repository: Text | None = None
    active: StrictBool = True
    tags: Annotated[list[Text], Field(max_length=50)] = []
    dependencies: Annotated[list[Slug], Field(max_length=200)] = []
    meta: dict[Text, Annotated[StrictStr, Field(max_length=2000)]] = {}

    _repository = field_validator("repository")(_check_repository)

    @property
    def identity(self) -> str:
        return self.slug or slugify(self.name)

    @model_validator(mode="after")
    def _name_gives_a_slug(self) -> "Service":
        _identity_or_error(self)
        return self


class Selector(_Strict):
    """Targets services by their fields; all given fields must match."""

    type: Text | None = None
    owner: Text | None = None
    tags: Annotated[list[Text], Field(max_length=50)] | None = None
    max_priority: Annotated[StrictInt, Field(ge=1, le=10)] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> "Selector":
        if self.type is None and self.owner is None and not self.tags and self.max_priority is None:
            raise ValueError("a selector needs at least one of type, owner, tags, max_priority")
        return self


# `batch:` pairs of a check per repository_dispatch (DESIGN.md section 9); 1 = the origin's one run per pair
MAX_BATCH = 1000
DEFAULT_BATCH = 1
BatchSize = Annotated[StrictInt, Field(ge=1, le=MAX_BATCH)]

Targets = Union[Literal["all", "none"], Annotated[list[Slug], Field(min_length=1)], Selector]


class Check(_Strict):
    """One file under checks/."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    slug: Slug | None = None
    description: Annotated[StrictStr, Field(max_length=20_000)] | None = None
    frequency: Frequency | None = None
    schedule: Annotated[StrictStr, Field(max_length=100)] | None = None
    timeout: StrictStr | StrictInt | None = None
    active: StrictBool = True
    services: Targets = "all"
    repository: Text | None = None
    batch: BatchSize | None = None

    _repository = field_validator("repository")(_check_repository)

    @field_validator("timeout")
    @classmethod
    def _timeout_is_a_duration(cls, value: Any) -> Any:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule_is_cron(cls, value: str | None) -> str | None:
        problem = schedule_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _frequency_or_schedule(self) -> "Check":
        if self.frequency is not None and self.schedule is not None:
            raise AtKey(("schedule",), "give either frequency or schedule, not both")
        _identity_or_error(self)
        return self

    @property
    def identity(self) -> str:
        return self.slug or slugify(self.name)


def _identity_or_error(model) -> None:
    if not model.identity:
        raise AtKey(("name",), "has no letters or digits to make a slug from; set slug")


class Level(_Strict):
    """One level of a scorecard: the checks a service must meet, on top of the levels below."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    checks: Annotated[list[Slug], Field(min_length=1, max_length=200)]

    @field_validator("name")
    @classmethod
    def _not_the_word_for_no_level(cls, value: str) -> str:
        if value.strip().lower() == NO_LEVEL:
            raise ValueError(f"{value!r} is what pages, the API and the write-back call a service below the"
                             " first level; give the level another name")
        return value


MetBy = Literal[RESULT_VALUES]  # type: ignore[valid-type]


class Scorecard(_Strict):
    """One file under scorecards/: levels of checks, lowest first."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    slug: Slug | None = None
    description: Annotated[StrictStr, Field(max_length=20_000)] | None = None
    services: Targets = "all"
    levels: Annotated[list[Level], Field(min_length=1, max_length=20)]
    met_by: Annotated[list[MetBy], Field(min_length=1)] = ["pass"]

    @model_validator(mode="after")
    def _levels_named_once(self) -> "Scorecard":
        _identity_or_error(self)
        names = [level.name for level in self.levels]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise AtKey(("levels", i, "name"), f"each level needs its own name; {name!r} is the name of"
                                                   f" level {names.index(name) + 1} too")
        return self

    @property
    def identity(self) -> str:
        return self.slug or slugify(self.name)


MAX_WAIVER_DAYS = 365


class Waiver(_Strict):
    """One file under waivers/: a check that need not be met by some services, until a day."""

    check: Slug
    services: Annotated[list[Slug], Field(min_length=1, max_length=1000)]
    reason: Annotated[StrictStr, Field(min_length=1, max_length=2000)]
    owner: Text | None = None
    expires: Day = Field(description=f"the last day it counts (UTC), at most {MAX_WAIVER_DAYS} days ahead")


class Campaign(_Strict):
    """One file under campaigns/: services that should reach a scorecard's level, or meet checks, by a deadline."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    slug: Slug | None = None
    description: Annotated[StrictStr, Field(max_length=20_000)] | None = None
    scorecard: Slug | None = None
    level: Annotated[StrictStr, Field(min_length=1, max_length=100)] | None = None
    checks: Annotated[list[Slug], Field(min_length=1, max_length=200)] | None = None
    services: Targets = "all"
    owner: Text | None = None
    deadline: Day

    @model_validator(mode="after")
    def _scorecard_level_or_checks(self) -> "Campaign":
        _identity_or_error(self)
        if self.checks is not None and (self.scorecard is not None or self.level is not None):
            raise AtKey(("checks",), "give either scorecard with level, or checks, not both")
        if self.checks is None and (self.scorecard is None or self.level is None):
            raise ValueError("give scorecard with level, or checks")
        return self

    @property
    def identity(self) -> str:
        return self.slug or slugify(self.name)


class Defaults(_Strict):
    frequency: Frequency = DEFAULT_FREQUENCY
    timeout: StrictStr | StrictInt = DEFAULT_TIMEOUT
    repository: Text | None = None
    batch: BatchSize = DEFAULT_BATCH

    _repository = field_validator("repository")(_check_repository)

    @field_validator("timeout")
    @classmethod
    def _timeout_is_a_duration(cls, value: Any) -> Any:
        parse_duration(value)
        return value


# Folders the reconciler reads: the write-back folder may be none of them, in them, or above them
CATALOG_FOLDERS = ("services", "checks", "scorecards", "waivers", "campaigns")
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def check_branch_name(name: str) -> str:
    """`name` if git accepts it as a branch (`git check-ref-format --branch`), else ValueError saying why."""
    problems = []
    if name.startswith("-"):
        problems.append("must not start with '-'")
    if name == "HEAD":
        problems.append("must not be HEAD")
    if _REF_FORBIDDEN.search(name):
        problems.append("must not contain spaces, control characters or any of ~ ^ : ? * [ \\")
    problems += [f"must not contain {part!r}" for part in ("..", "@{") if part in name]
    if name.endswith("."):
        problems.append("must not end with '.'")
    parts = name.split("/")
    if "" in parts:
        problems.append("must not start or end with '/' or contain '//'")
    if any(part.startswith(".") or part.endswith(".lock") for part in parts):
        problems.append("no part between slashes may start with '.' or end with '.lock'")
    if problems:
        raise ValueError(f"{name!r} is not a valid git branch name: " + "; ".join(problems))
    return name


def check_writeback_path(path: str) -> str:
    """`path` as a folder name ending in '/' if it is a safe write-back folder, else ValueError saying why."""
    parts = path.rstrip("/").split("/")
    if parts == ["."]:
        raise ValueError(f"{path!r} is the repository root: give the write-back a folder of its own such as results/")
    if path.startswith("/") or "" in parts or "." in parts or ".." in parts:
        raise ValueError(
            f"{path!r} must be a folder inside the repository, written plainly: relative, without '.', '..' or '//'"
        )
    # git fsck refuses .git in any case and with trailing dots (NTFS ignores them)
    if any(part.lower().rstrip(".") == ".git" for part in parts):
        raise ValueError(f"{path!r} must not be or contain a .git folder: git refuses such trees")
    top = parts[0].lower()  # compared without case: on macOS and Windows Services/ is services/
    if top in CATALOG_FOLDERS or path.rstrip("/").lower() == "catalog.yaml":
        raise ValueError(
            f"{path!r} is (or is inside) a folder the catalog is read from (catalog.yaml, services/, checks/):"
            " the reconciler ignores the write-back folder, so those files would leave the catalog;"
            " use a folder of its own such as results/"
        )
    return "/".join(parts) + "/"


class Writeback(_Strict):
    branch: Annotated[StrictStr, Field(
        min_length=1, max_length=200, description="a branch name git accepts (git check-ref-format --branch)",
    )] = DEFAULT_WRITEBACK_BRANCH
    path: Annotated[StrictStr, Field(
        min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-][A-Za-z0-9._/-]*$",
        description="a folder of its own in the repository: not the root, services/ or checks/; no '..', no .git",
    )] = DEFAULT_WRITEBACK_PATH

    _branch_is_a_branch_name = field_validator("branch")(check_branch_name)
    _path_is_a_folder_of_its_own = field_validator("path")(check_writeback_path)


EnvName = Annotated[StrictStr, Field(
    pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200,
    description="the name of an environment variable (the value never lives in the repository)",
)]
EventFilter = Literal[ALL_EVENTS, *EVENT_TYPES]  # type: ignore[valid-type]
DIGESTS = ("none", "hourly", "daily")


class NotificationRoute(_Strict):
    """One route of catalog.yaml `notifications:`: which events go where, now or folded into a digest."""

    name: Slug
    url_env: EnvName | None = Field(None, description="holds an Apprise URL (slack://, msteams://, mailto://, json://, ...)")
    webhook_env: EnvName | None = Field(None, description="holds the URL of a JSON webhook, signed with secret_env")
    secret_env: EnvName | None = Field(None, description="holds the webhook's HMAC secret (X-Catalog-Signature-256)")
    events: Annotated[list[EventFilter], Field(min_length=1)] = [ALL_EVENTS]
    services: Targets = "all"
    digest: Literal[DIGESTS] = "none"  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _one_destination(self) -> "NotificationRoute":
        if (self.url_env is None) == (self.webhook_env is None):
            raise ValueError("give either url_env (an Apprise URL) or webhook_env (a signed JSON webhook)")
        if self.webhook_env is not None and self.secret_env is None:
            raise ValueError("a webhook needs secret_env: receivers check the X-Catalog-Signature-256 it signs")
        if self.url_env is not None and self.secret_env is not None:
            raise ValueError("secret_env signs webhooks only; an Apprise URL carries its own credentials")
        return self

    def wants(self, event_type: str) -> bool:
        return ALL_EVENTS in self.events or event_type in self.events


def route_problems(config: CatalogConfig, environ: Mapping[str, str]) -> list[tuple[int, str, str]]:
    """(route index, field, message) for each route that cannot send: a sync warns with them.

    Here, not in notify.py: a sync needs only this, and importing the sender (requests) cost every
    sync process 14 MB of memory (bench/bench_sync.py's peak)."""
    problems = []
    for index, route in enumerate(config.notifications):
        for name in ("url_env", "webhook_env", "secret_env"):
            variable = getattr(route, name)
            if variable is not None and not environ.get(variable):
                problems.append((index, name, f"route {route.name}: environment variable {variable} is not set;"
                                 " its events wait, and fail after the last retry, until it is"))
    return problems


_WORKFLOW = re.compile(r"^\.github/workflows/[A-Za-z0-9._-]+\.ya?ml(@refs/[A-Za-z0-9._/-]+)?$")


class Oidc(_Strict):
    """Who may answer with a GitHub OIDC token besides the check's repository rule."""

    workflow: Annotated[StrictStr, Field(
        max_length=300,
        description="the workflow file an answering Action must run from, e.g. .github/workflows/health.yml"
        " (optionally @refs/heads/main to pin the ref too)",
    )] | None = None

    @field_validator("workflow")
    @classmethod
    def _is_a_workflow_path(cls, value: str | None) -> str | None:
        if value is not None and not _WORKFLOW.match(value):
            raise ValueError(
                f"{value!r} is not a workflow file: give its path such as .github/workflows/health.yml"
                " (optionally followed by @refs/heads/BRANCH)"
            )
        return value


class CatalogConfig(_Strict):
    """catalog.yaml: catalog-wide defaults, write-back settings, notification routes and the OIDC workflow pin."""

    defaults: Defaults = Defaults()
    writeback: Writeback = Writeback()
    oidc: Oidc = Oidc()
    notifications: Annotated[list[NotificationRoute], Field(max_length=100)] = []

    @field_validator("notifications")
    @classmethod
    def _route_names_are_unique(cls, routes: list[NotificationRoute]) -> list[NotificationRoute]:
        seen = set()
        for route in routes:
            if route.name in seen:
                raise ValueError(f"two routes are named {route.name!r}: each route needs a name of its own")
            seen.add(route.name)
        return routes

    @classmethod
    def from_stored(cls, data: dict | None) -> "CatalogConfig":
        """The config a sync stored; a section that today's rules refuse (stored by an older version)
        reads as its defaults, so the sync that brings the fixed catalog.yaml can still run."""
        sections: dict[str, Any] = {}
        for name, section in (("defaults", Defaults), ("writeback", Writeback), ("oidc", Oidc)):
            try:
                sections[name] = section.model_validate((data or {}).get(name) or {})
            except ValidationError:
                sections[name] = section()
        routes = []
        for route in (data or {}).get("notifications") or []:
            try:
                routes.append(NotificationRoute.model_validate(route))
            except ValidationError:
                pass
        return cls(**sections, notifications=routes)


KINDS: dict[str, type[BaseModel]] = {
    "service": Service, "check": Check, "catalog": CatalogConfig,
    "scorecard": Scorecard, "waiver": Waiver, "campaign": Campaign,
}


def json_schema(kind: str | None = None) -> dict:
    """The JSON Schema of one kind of file (`backstage`: a Backstage Component), or of all of them under $defs."""
    from .backstage import component_json_schema  # it maps onto the models here

    if kind == "backstage":
        return component_json_schema()
    if kind is not None:
        schema = KINDS[kind].model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"Service catalog: {kind} file"
        return schema
    defs: dict = {}
    for name, model in KINDS.items():
        one = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(one.pop("$defs", {}))
        defs[model.__name__] = one
    backstage = component_json_schema()
    del backstage["$schema"]
    defs["BackstageComponent"] = backstage
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Service catalog files",
        "anyOf": [{"$ref": f"#/$defs/{name}"} for name in [*(m.__name__ for m in KINDS.values()), "BackstageComponent"]],
        "$defs": defs,
    }
