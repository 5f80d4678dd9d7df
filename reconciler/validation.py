"""Validating a catalog directory without a store: every file alone, then the rules across files."""

from __future__ import annotations

from pathlib import Path

from .catalog_index import CatalogIndex
from .errors import CatalogFileError, ConfigError
from .integrity import check_integrity, locate_problems
from .loader import CATALOG_FILE, SKIPPED, list_catalog_files, read_file, read_files
from .schema import CatalogConfig


def validate_directory(root: str | Path, notes: list[str] | None = None) -> tuple[int, list[CatalogFileError]]:
    """(number of catalog files read, every error sorted by file and line); ConfigError if root is no
    directory. `notes` gathers what was read and skipped (Backstage entities other than Components)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory; give the root of a catalog repository")
    root = root.resolve()
    config_file = read_file(root, CATALOG_FILE) if (root / CATALOG_FILE).exists() else None
    config = config_file.config if config_file and config_file.ok else CatalogConfig()
    paths = list_catalog_files(root, config.writeback.path)  # type: ignore[union-attr]
    read = {}
    for loaded in read_files(root, [p for p in paths if p != CATALOG_FILE], config):
        if notes is not None:
            notes.extend(loaded.notes)
        if loaded.kind == SKIPPED:
            if not loaded.notes:
                paths.remove(loaded.path)  # some other YAML file: not a catalog file
            continue
        read[loaded.path] = loaded
    errors: list[CatalogFileError] = list(config_file.errors) if config_file else []
    for loaded in read.values():
        errors.extend(loaded.errors)
    for found in locate_problems(root, check_integrity(read, (), CatalogIndex.empty(), without_store=True)).values():
        errors.extend(found)
    unique = {str(error): error for error in errors}
    ordered = sorted(unique.values(), key=lambda e: (e.location.path, e.location.line, e.location.col, e.message))
    return len(paths), ordered
