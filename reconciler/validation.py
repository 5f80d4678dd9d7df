"""Validating a catalog directory without a store: every file alone, then the rules across files."""

from __future__ import annotations

from pathlib import Path

from .errors import CatalogFileError, ConfigError
from .integrity import Entities, find_integrity_errors
from .loader import CATALOG_FILE, list_catalog_files, read_file
from .schema import CatalogConfig, Check, Service


def validate_directory(root: str | Path) -> tuple[int, list[CatalogFileError]]:
    """(number of files read, every error sorted by file and line); ConfigError if root is no directory."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory; give the root of a catalog repository")
    root = root.resolve()
    config_file = read_file(root, CATALOG_FILE) if (root / CATALOG_FILE).exists() else None
    config = config_file.model if config_file and config_file.ok else CatalogConfig()
    paths = list_catalog_files(root, config.writeback.path)  # type: ignore[union-attr]
    errors: list[CatalogFileError] = list(config_file.errors) if config_file else []
    defines: dict[str, tuple[str, str]] = {}
    dependencies: dict[str, list[str]] = {}
    list_targets: dict[str, list[str]] = {}
    for path in paths:
        if path == CATALOG_FILE:
            continue
        loaded = read_file(root, path)
        errors.extend(loaded.errors)
        model = loaded.model
        if not loaded.ok:
            continue
        if isinstance(model, Service):
            defines[path] = ("service", model.identity)
            dependencies[path] = list(model.dependencies)
        elif isinstance(model, Check):
            defines[path] = ("check", model.identity)
            list_targets[path] = list(model.services) if isinstance(model.services, list) else []
    entities = Entities(defines, dependencies, list_targets, current_paths={})
    for found in find_integrity_errors(root, entities, changed_paths=set(defines)).values():
        errors.extend(found)
    unique = {str(error): error for error in errors}
    ordered = sorted(unique.values(), key=lambda e: (e.location.path, e.location.line, e.location.col, e.message))
    return len(paths), ordered
