"""Backstage descriptors (`catalog-info.yaml`, `apiVersion: backstage.io/...`) read as services.

DESIGN.md section 13 fixes the mapping; this module is its one home. A `kind: Component` document
becomes the fields of a `Service` (validated by the same model as our own files), with a map from
each field back to the key of the document it came from, so that every error names the line inside
the right document. Every other kind (System, API, Group, User, Location, Resource, ...) is skipped
with a note. Backstage allows keys it does not know, so unknown keys are not errors here.

| Service field  | from the Component document                                   |
|----------------|---------------------------------------------------------------|
| slug           | `metadata.name` (slugified when Backstage allows what a slug does not: `My_App.v2`) |
| name           | `metadata.title`, else `metadata.name`                        |
| description    | `metadata.description`                                        |
| tags           | `metadata.tags`                                               |
| type           | `spec.type`                                                   |
| owner          | `spec.owner`, without `group:` (and the `default/` namespace) |
| dependencies   | `spec.dependsOn`: `component:x` -> x; other kinds (`resource:db`) are not services |
| meta.lifecycle | `spec.lifecycle`                                              |
| repository     | annotation `github.com/project-slug`                          |
| priority       | annotation `service-catalog/priority` (default 5)             |
"""

from __future__ import annotations

import re
from typing import Any

from .schema import SLUG_PATTERN, slugify

API_VERSION_PREFIX = "backstage.io/"
MARKER = API_VERSION_PREFIX.encode()  # a file without these bytes holds no Backstage document
DESCRIPTOR_FILE_NAMES = ("catalog-info.yaml", "catalog-info.yml")
DEFAULT_PRIORITY = 5
PRIORITY_ANNOTATION = "service-catalog/priority"
REPOSITORY_ANNOTATION = "github.com/project-slug"
DEFAULT_NAMESPACE = "default"

_SLUG_CHARACTERS = re.compile(SLUG_PATTERN)


class DescriptorProblem(Exception):
    """A Component document the mapping cannot read: `loc` is the key path inside the document."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = loc
        self.message = message


def is_descriptor(value: Any) -> bool:
    """Whether a YAML document is a Backstage entity (any kind)."""
    return isinstance(value, dict) and isinstance(value.get("apiVersion"), str) and value["apiVersion"].startswith(
        API_VERSION_PREFIX)


def is_component(value: Any) -> bool:
    kind = value.get("kind")
    return isinstance(kind, str) and kind.lower() == "component"


def describe_kind(value: Any) -> str:
    """A document's kind for a note: `Group`, or what it is when it is not a Backstage entity."""
    if not is_descriptor(value):
        return "a document that is not a Backstage entity"
    kind = value.get("kind")
    return kind if isinstance(kind, str) and kind else "an entity without a kind"


def service_fields(document: dict) -> tuple[dict, dict[str, tuple]]:
    """The `Service` fields of a Component document, and for each field the key path it came from.

    Raises DescriptorProblem for what the mapping itself needs (mappings where mappings belong, a
    name, a whole-number priority); the `Service` model checks the rest.
    """
    metadata = _mapping(document, ("metadata",), required=True)
    spec = _mapping(document, ("spec",))
    annotations = _mapping(metadata, ("metadata", "annotations"))
    name = metadata.get("name")
    if name is None:
        raise DescriptorProblem(("metadata",), "metadata.name: is required")
    if not isinstance(name, str):
        raise DescriptorProblem(("metadata", "name"), "metadata.name: must be text")
    slug = component_slug(name)
    if not slug:
        raise DescriptorProblem(("metadata", "name"), "metadata.name: has no letters or digits to make a slug from")
    fields: dict[str, Any] = {"slug": slug}
    origin: dict[str, tuple] = {"slug": ("metadata", "name")}
    title = metadata.get("title")
    fields["name"], origin["name"] = (title, ("metadata", "title")) if title is not None else (name, ("metadata", "name"))
    for field, source, key in (("description", metadata, "metadata"), ("tags", metadata, "metadata"),
                               ("type", spec, "spec")):
        if source.get(field) is not None:
            fields[field], origin[field] = source[field], (key, field)
    owner = spec.get("owner")
    if owner is not None:
        fields["owner"], origin["owner"] = _owner(owner), ("spec", "owner")
    depends_on = spec.get("dependsOn")
    if depends_on is not None:
        if not isinstance(depends_on, list):
            raise DescriptorProblem(("spec", "dependsOn"), "spec.dependsOn: must be a list")
        fields["dependencies"], origin["dependencies"] = component_references(depends_on), ("spec", "dependsOn")
    lifecycle = spec.get("lifecycle")
    if lifecycle is not None:
        fields["meta"], origin["meta"] = {"lifecycle": lifecycle}, ("spec", "lifecycle")
    repository = annotations.get(REPOSITORY_ANNOTATION)
    if repository is not None:
        fields["repository"], origin["repository"] = repository, ("metadata", "annotations", REPOSITORY_ANNOTATION)
    fields["priority"] = _priority(annotations.get(PRIORITY_ANNOTATION, DEFAULT_PRIORITY))
    origin["priority"] = ("metadata", "annotations", PRIORITY_ANNOTATION)
    return fields, origin


def document_loc(document: Any, loc: tuple) -> tuple:
    """A key path of `Service` fields (an error's) as the key path inside the Component document."""
    if not isinstance(document, dict) or not loc:
        return loc
    try:
        _, origin = service_fields(document)
    except DescriptorProblem:
        return loc
    field = loc[0]
    if field == "meta":  # the only meta key a Component gives: its lifecycle
        return ("spec", "lifecycle")
    base = origin.get(field)
    if base is None:
        return loc
    if field == "dependencies" and len(loc) > 1 and isinstance(loc[1], int):
        positions = _component_positions(document["spec"]["dependsOn"])
        return (*base, positions[loc[1]]) if loc[1] < len(positions) else base
    return (*base, *loc[1:])


def document_field(document: Any, field: str) -> str:
    """The Component's own key, dotted, that a `Service` field came from (`spec.dependsOn` for
    `dependencies`), so a message about the field names what the file's author wrote; else `field`."""
    if not isinstance(document, dict):
        return field
    try:
        _, origin = service_fields(document)
    except DescriptorProblem:
        return field
    return ".".join(origin[field]) if field in origin else field


def declared_slug(document: Any) -> str | None:
    """The slug a Component that fails validation still declares (its name's), for the rules across files."""
    metadata = document.get("metadata") if isinstance(document, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return (component_slug(name) or None) if isinstance(name, str) else None


def component_slug(name: str) -> str:
    """A Component's slug: its name when that is a slug, else the name slugified (Backstage allows
    upper case, `_` and `.`; references go through the same function, so they still match)."""
    return name if _SLUG_CHARACTERS.match(name) else slugify(name)


def component_references(references: list) -> list:
    """`dependsOn` entries that name Components, as slugs; other kinds (resource:, api:) are not
    services. Entries that are not text are passed on as they are, for the model to refuse."""
    return [_reference_slug(entry) if isinstance(entry, str) else entry
            for entry in references if not isinstance(entry, str) or _is_component_reference(entry)]


def _component_positions(references: list) -> list[int]:
    return [position for position, entry in enumerate(references)
            if not isinstance(entry, str) or _is_component_reference(entry)]


def _is_component_reference(reference: str) -> bool:
    kind, colon, _ = reference.partition(":")
    return not colon or kind.lower() == "component"


def _reference_slug(reference: str) -> str:
    """`component:default/x`, `component:x` or `x` -> x."""
    name = reference.partition(":")[2] if ":" in reference else reference
    namespace, slash, rest = name.partition("/")
    return component_slug(rest if slash else name)


def _owner(owner: Any) -> Any:
    """`group:team-a`, `group:default/team-a` -> team-a; other owners (`user:guest`, an e-mail) as written."""
    if not isinstance(owner, str) or not owner.lower().startswith("group:"):
        return owner
    name = owner[len("group:"):]
    return name.removeprefix(f"{DEFAULT_NAMESPACE}/")


def _priority(value: Any) -> Any:
    """The annotation's text as a whole number; annotations are text in Backstage, numbers pass too."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, str):
        raise DescriptorProblem(("metadata", "annotations", PRIORITY_ANNOTATION),
                                f"{PRIORITY_ANNOTATION}: must be a whole number from 1 to 10, not {value!r}")
    return value


def _mapping(parent: dict, loc: tuple, *, required: bool = False) -> dict:
    value = parent.get(loc[-1])
    if value is None:
        if required:
            raise DescriptorProblem(loc[:-1], f"{'.'.join(loc)}: is required")
        return {}
    if not isinstance(value, dict):
        raise DescriptorProblem(loc, f"{'.'.join(loc)}: must be a mapping (key: value)")
    return value


def component_json_schema() -> dict:
    """The JSON Schema of a Backstage Component as it is read here (for editors: `catalog schema backstage`).
    Only what the mapping reads is described; Backstage's other keys are allowed, as Backstage allows them."""
    text = {"type": "string"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Service catalog: Backstage Component descriptor (catalog-info.yaml)",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {
            "apiVersion": {"type": "string", "pattern": "^backstage\\.io/"},
            "kind": {"type": "string", "description": "Component becomes a service; other kinds are skipped"},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {**text, "minLength": 1, "maxLength": 100, "description": "the slug (slugified if need be)"},
                    "title": {**text, "minLength": 1, "maxLength": 200, "description": "the name"},
                    "description": {**text, "maxLength": 20000},
                    "tags": {"type": "array", "items": {**text, "maxLength": 200}, "maxItems": 50},
                    "annotations": {
                        "type": "object",
                        "additionalProperties": text,
                        "properties": {
                            REPOSITORY_ANNOTATION: {**text, "description": "owner/repo: the repository"},
                            PRIORITY_ANNOTATION: {**text, "pattern": "^([1-9]|10)$",
                                                  "description": f"1 (highest) .. 10; default {DEFAULT_PRIORITY}"},
                        },
                    },
                },
            },
            "spec": {
                "type": "object",
                "properties": {
                    "type": {**text, "maxLength": 200},
                    "owner": {**text, "maxLength": 200, "description": "group:x becomes x"},
                    "lifecycle": {**text, "maxLength": 2000, "description": "kept as meta.lifecycle"},
                    "dependsOn": {"type": "array", "items": text, "maxItems": 200,
                                  "description": "component:x entries become dependencies on x"},
                },
            },
        },
    }
