"""Reading catalog files, the first steps of a sync: bytes read safely, YAML parsed (see `yamlparse`),
validated against the models (`schema`), turned into store records (`entity_records`).

Every problem becomes a `CatalogFileError` naming `file:line:col`. Nothing here raises for a bad
file: `read_file` returns the errors beside the (absent) record, so one bad file never stops the rest.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import queue
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from . import backstage
from .document_paths import YAML_SUFFIXES, document_path, file_of
from .entity_records import definition_record, record_of
from .errors import CatalogFileError, Location
from .model_errors import explain
from .plain_yaml import plain_values
from .safe_read import Jail
from .schema import SLUG_PATTERN, Campaign, CatalogConfig, Check, Scorecard, Service, Waiver, slugify
from .yamlparse import build_values, check_document_shape, compose, compose_documents, node_location, parse_yaml

PARALLEL_FROM = 2_000  # files; below this a second process costs more than it saves
CATALOG_FILE = "catalog.yaml"
KIND_DIRECTORIES = {
    "services": "service", "checks": "check", "scorecards": "scorecard", "waivers": "waiver", "campaigns": "campaign",
}
# Scorecards, waivers and campaigns: few files, kept whole as definitions (store/scorecards.py)
DEFINITION_KINDS = ("scorecard", "waiver", "campaign")
DESCRIPTOR = "descriptor"  # a YAML file elsewhere: a catalog file if it holds Backstage entities
SKIPPED = "skipped"  # a file read that defines nothing (not a descriptor, or no Component in it)
MODELS: dict[str, type[BaseModel]] = {
    "service": Service, "check": Check, "catalog": CatalogConfig,
    "scorecard": Scorecard, "waiver": Waiver, "campaign": Campaign,
}
_SLUG = re.compile(SLUG_PATTERN)
# A top-level `apiVersion: backstage.io/...` line: what makes a YAML file outside services/ and checks/
# (and not named catalog-info.yaml) a descriptor file, whose mistakes are then reported
_DESCRIPTOR_LINE = re.compile(rb"^apiVersion:[ \t]*[\"']?backstage\.io/", re.MULTILINE)


@dataclass(slots=True)  # no __dict__: a cold sync holds 100,000 of these
class LoadedFile:
    """One catalog file as read: its record (a service or check) or config (catalog.yaml) when valid,
    else its errors; and the slug it declares and the slugs it points at, for the rules across files."""

    path: str  # relative to the catalog root, with forward slashes
    kind: str  # service | check | catalog | scorecard | waiver | campaign
    digest: str  # sha256 of the bytes ("" when they could not be read)
    record: dict | None = None  # what the store writes for a valid service, check or definition
    config: CatalogConfig | None = None  # a valid catalog.yaml
    # shared empty defaults: a first sync holds 100,000 of these, nearly all without errors
    errors: Sequence[CatalogFileError] = ()
    # the slug: a valid file's, or the one an invalid file that still parses declares (slug, or name)
    slug: str | None = None
    references: Sequence[str] = ()  # a valid file's dependencies or listed targets
    notes: Sequence[str] = ()  # what was read but skipped (Backstage entities of other kinds)

    @property
    def ok(self) -> bool:
        return (self.record is not None or self.config is not None) and not self.errors


def kind_of(relative_path: str, ignored_prefix: str | None = None) -> str | None:
    """The kind of file a path holds in a catalog, or None when it is not a catalog file. A YAML file
    outside services/ and checks/ is a `DESCRIPTOR` candidate: what it holds decides (`read_entities`)."""
    if ignored_prefix:  # the path is the ignored folder or inside it (no string built: 100,000 files)
        ignored = ignored_prefix.rstrip("/")
        if relative_path.startswith(ignored) and relative_path[len(ignored):len(ignored) + 1] in ("", "/"):
            return None
    if relative_path == CATALOG_FILE:
        return "catalog"
    # plain string operations: this runs once per file of catalogs with 10,000 files
    if not relative_path.endswith(YAML_SUFFIXES):
        return None
    top, slash, rest = relative_path.partition("/")
    if top.startswith(".") or rest.startswith(".") or "/." in rest:  # hidden files and folders are ignored
        return None
    if not slash:
        return DESCRIPTOR
    return KIND_DIRECTORIES.get(top, DESCRIPTOR) if rest else None


def list_catalog_files(root: Path, ignored_prefix: str | None = None) -> list[str]:
    """Every catalog file under root, sorted, as relative paths (symlinks listed, not followed;
    hidden folders not entered, as `kind_of` ignores what is in them)."""
    found: list[str] = []
    ignored = ignored_prefix.strip("/") if ignored_prefix else None
    # os.scandir with the relative prefix carried down: os.walk's relpath per folder cost a tenth of a
    # Backstage repository's cold sync (one folder per service; bench/bench_backstage_sync.py)
    pending = [(str(root), "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:  # unreadable or gone: skipped, as os.walk skips it
            continue
        for entry in entries:
            relative = prefix + entry.name
            try:
                is_directory = entry.is_dir()  # a symlink to a folder counts as a folder: never entered
            except OSError:
                is_directory = False
            if is_directory:
                if not entry.name.startswith(".") and relative != ignored and not entry.is_symlink():
                    pending.append((entry.path, relative + "/"))
            elif kind_of(relative, ignored_prefix):
                found.append(relative)
    return sorted(found)


def read_file(
    root: Path, relative_path: str, config: CatalogConfig | None = None, *, _jail: "Jail | None" = None
) -> LoadedFile:
    """Read, parse, validate and record one catalog file; never raises for what is in the file.
    `config` gives a check's defaults (catalog.yaml's; the built-in ones when None)."""
    loaded, value, node = _parse_file(relative_path, _jail or Jail(root))
    if loaded.errors:
        return loaded
    return _validated(loaded, value, node, config)


def read_entities(
    root: Path, relative_path: str, config: CatalogConfig | None = None, *, _jail: "Jail | None" = None
) -> list[LoadedFile]:
    """`read_file` for any catalog file, Backstage descriptors included: one LoadedFile per Component
    document (at `document_path` when the file holds several documents), or one of kind SKIPPED
    when the file defines nothing. Never raises for what is in the file."""
    kind = kind_of(relative_path) or "service"
    if kind == "catalog":
        return [read_file(root, relative_path, config, _jail=_jail)]
    entity_kind = "service" if kind == DESCRIPTOR else kind
    named = kind == DESCRIPTOR and relative_path.endswith(backstage.DESCRIPTOR_FILE_NAMES)
    try:
        data = (_jail or Jail(root)).read(relative_path)
    except CatalogFileError as error:
        if kind == DESCRIPTOR and not named:  # some other file (a big OpenAPI document, say): not ours
            return [LoadedFile(relative_path, SKIPPED, "")]
        return [LoadedFile(relative_path, entity_kind, "", errors=[error])]
    if kind == DESCRIPTOR and not named and not _DESCRIPTOR_LINE.search(data):
        # other YAML in the repository (a Helm template, a Kubernetes manifest that only carries a
        # backstage.io annotation): not ours to read, nor to report on
        return [LoadedFile(relative_path, SKIPPED, hashlib.sha256(data).hexdigest())]
    if named or backstage.MARKER in data:  # one search of a few hundred bytes
        return _read_descriptors(relative_path, data, kind, config)
    digest = hashlib.sha256(data).hexdigest()
    loaded = LoadedFile(relative_path, entity_kind, digest)
    value = plain_values(data)  # most files: their values without libyaml's nodes (see plain_yaml)
    if value is not None and _validated(loaded, value, None, config) is not None:
        return [loaded]
    try:  # any other shape, or an invalid file: the nodes too, which place every error
        node = compose(data, relative_path)
        value = build_values(node, relative_path)
    except CatalogFileError as error:
        loaded.errors = [error]
        return [loaded]
    return [_validated(loaded, value, node, config)]


def _read_descriptors(relative_path: str, data: bytes, kind: str, config: CatalogConfig | None) -> list[LoadedFile]:
    """The Components of a `---` separated stream, each validated as a service where it sits."""
    entity_kind = "service" if kind == DESCRIPTOR else kind
    digest = hashlib.sha256(data).hexdigest()
    try:
        nodes = compose_documents(data, relative_path)
        values = []
        for node in nodes:
            if node is not None:
                check_document_shape(node, relative_path)
            values.append(None if node is None else build_values(node, relative_path))
    except CatalogFileError as error:
        return [LoadedFile(relative_path, entity_kind, digest, errors=[error])]
    present = [(number, node, value) for number, (node, value) in enumerate(zip(nodes, values), 1) if node is not None]
    if kind != DESCRIPTOR and len(nodes) == 1 and present and not backstage.is_descriptor(present[0][2]):
        # one of our own files that only mentions backstage.io (in a description, say)
        return [_validated(LoadedFile(relative_path, entity_kind, digest), present[0][2], present[0][1], config)]
    found, skipped = [], []
    for number, node, value in present:
        if not backstage.is_descriptor(value) or not backstage.is_component(value):
            skipped.append(backstage.describe_kind(value))
            continue
        path = relative_path if len(nodes) == 1 else document_path(relative_path, number)
        found.append(_component(LoadedFile(path, "service", digest), value, node, relative_path, config))
    notes = [_skipped_note(relative_path, skipped)] if skipped else []
    if not found:
        notes = notes or [f"{relative_path}: holds no Backstage Component; nothing read from it"]
        return [LoadedFile(relative_path, SKIPPED, digest, notes=notes)]
    found[0].notes = notes
    return found


def _component(loaded: LoadedFile, document: dict, node: yaml.Node, file_path: str,
               config: CatalogConfig | None) -> LoadedFile:
    """A Component document as a service: mapped (`backstage`), then validated by the `Service` model."""
    try:
        fields, _ = backstage.service_fields(document)
        model = Service.model_validate(fields)
    except backstage.DescriptorProblem as problem:
        loaded.errors = [CatalogFileError(node_location(node, problem.loc, file_path), problem.message)]
    except ValidationError as error:
        loaded.errors = explain(error, node, file_path, Service,
                                 translate=lambda loc: backstage.document_loc(document, loc))
    if loaded.errors:
        loaded.slug = backstage.declared_slug(document)
        return loaded
    loaded.record = record_of(model, loaded.path, config or _BUILT_IN_CONFIG)
    loaded.slug = model.identity
    loaded.references = model.dependencies or ()
    return loaded


def _skipped_note(relative_path: str, kinds: list[str]) -> str:
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    listed = ", ".join(f"{count} x {kind}" if count > 1 else kind for kind, count in counts.items())
    return f"{relative_path}: skipped {len(kinds)} document{'s' if len(kinds) != 1 else ''} ({listed}): only Backstage Components become services"


def _validated(loaded: LoadedFile, value: Any, node: yaml.Node | None, config: CatalogConfig | None) -> LoadedFile | None:
    """A parsed file of our own format validated and recorded. Without its nodes (`plain_values`), an
    invalid file gives None and `loaded` stays as it was: the caller parses it again for the lines."""
    relative_path = loaded.path
    try:
        model = _validate(value, node, relative_path, loaded.kind)
    except _Invalid as invalid:
        if node is None:
            return None
        loaded.errors = invalid.errors
        loaded.slug = waiver_slug(relative_path) if loaded.kind == "waiver" else _declared_slug(value)
        return loaded
    if isinstance(model, CatalogConfig):
        loaded.config = model
        return loaded
    if loaded.kind in DEFINITION_KINDS:
        loaded.record = definition_record(model, relative_path, waiver_slug(relative_path))  # type: ignore[arg-type]
        loaded.slug = loaded.record["slug"]
        return loaded
    loaded.record = record_of(model, relative_path, config or _BUILT_IN_CONFIG)
    loaded.slug = model.identity
    if isinstance(model, Service):
        loaded.references = model.dependencies or ()
    elif isinstance(model.services, list):
        loaded.references = model.services
    return loaded


_BUILT_IN_CONFIG = CatalogConfig()


def _parse_file(relative_path: str, jail: "Jail") -> tuple[LoadedFile, Any, Any]:
    """The file read and parsed to plain values (and its nodes, for error lines); errors in `loaded`."""
    kind = kind_of(relative_path)
    loaded = LoadedFile(relative_path, kind if kind in MODELS else "service", "")
    try:
        data = jail.read(relative_path)
    except CatalogFileError as error:
        loaded.errors = [error]
        return loaded, None, None
    loaded.digest = hashlib.sha256(data).hexdigest()
    try:
        node = compose(data, relative_path)
        return loaded, build_values(node, relative_path), node
    except CatalogFileError as error:
        loaded.errors = [error]
        return loaded, None, None


def waiver_slug(relative_path: str) -> str:
    """A waiver has no name: its file's, `waivers/legacy-reports-log4j.yaml` -> `legacy-reports-log4j`."""
    return slugify(relative_path.rpartition("/")[2].rpartition(".")[0]) or "waiver"


def _declared_slug(value: Any) -> str | None:
    """The slug an invalid file still declares: its `slug` if that is one, else its name's."""
    slug, name = value.get("slug"), value.get("name")  # value is a mapping: the parser insists
    if isinstance(slug, str):
        return slug if _SLUG.match(slug) else None
    return (slugify(name) or None) if isinstance(name, str) else None


def read_files(
    root: Path, relative_paths: Iterable[str], config: CatalogConfig | None = None, *,
    parallel_from: int | None = None, progress: Callable[[int], None] | None = None,
) -> list[LoadedFile]:
    """`read_entities` for each path, in order. Thousands of files (a cold sync) are read by two
    processes when this one may fork safely, since parsing YAML is CPU-bound and a machine has two
    cores. `progress` is told how many more files are read, a chunk at a time."""
    paths = list(relative_paths)
    if len(paths) >= (PARALLEL_FROM if parallel_from is None else parallel_from) and _may_fork():
        return _read_in_two_processes(root, paths, config, progress)
    jail = Jail(root)  # the resolved root, shared: cheaper for thousands of files
    if progress is None:
        return _read_chunk(root, paths, config, jail)
    read = []
    for start in range(0, len(paths), _CHUNK):
        read += _read_chunk(root, paths[start:start + _CHUNK], config, jail)
        progress(len(paths[start:start + _CHUNK]))
    return read


def _read_in_two_processes(
    root: Path, paths: list[str], config: CatalogConfig | None, progress: Callable[[int], None] | None = None, *,
    chunk: int | None = None,
) -> list[LoadedFile]:
    """This process and a forked worker take chunks of the paths in turn, from a shared counter, until
    none is left, so that they finish together whichever of them runs slower (this process also
    unpickles the worker's files, and on a shared machine either may get less of a core; with a
    fixed half each, one of them waited for the other). The worker sends each chunk as it is read,
    and a thread here takes them in: the worker never waits on the pipe, and no pickle holds 50,000
    files at once."""
    size = chunk or _CHUNK
    chunks = [paths[start:start + size] for start in range(0, len(paths), size)]
    context = multiprocessing.get_context("fork")
    claimed = context.Value("i", 0)  # the number of the next chunk to read
    receiving, sending = context.Pipe(duplex=False)
    worker = context.Process(target=_read_chunks_in_worker, args=(root, chunks, config, claimed, sending), daemon=True)
    worker.start()
    sending.close()
    arrived: queue.SimpleQueue = queue.SimpleQueue()
    receiver = threading.Thread(target=_receive_chunks, args=(receiving, arrived), daemon=True)
    receiver.start()
    read: list[list[LoadedFile] | None] = [None] * len(chunks)
    worker_done = False
    try:
        jail = Jail(root)
        while (number := _claim(claimed)) < len(chunks):
            read[number] = _read_chunk(root, chunks[number], config, jail)
            if progress is not None:
                progress(len(chunks[number]))
            worker_done = worker_done or _take_arrived(arrived, read, chunks, progress, block=False)
        if not worker_done:
            worker_done = _take_arrived(arrived, read, chunks, progress, block=True)
    finally:
        if not worker_done:  # this process failed (or was interrupted): the worker's work is moot
            worker.kill()
        worker.join()
        receiver.join()  # it ends at the worker's last message, or at the pipe's end
        receiving.close()
    return [loaded for files in read for loaded in files]  # type: ignore[union-attr]


_CHUNK = 1_000  # files per claim and per message from the worker (about 0.05 s of reading)
_DONE = "done"


def _claim(claimed: Any) -> int:
    with claimed.get_lock():
        number = claimed.value
        claimed.value = number + 1
    return number


def _read_chunks_in_worker(root: Path, chunks: list[list[str]], config: CatalogConfig | None, claimed: Any,
                           sending: Any) -> None:
    """The forked worker: claim, read and send chunks until none is left; then "done", or the error."""
    try:
        jail = Jail(root)
        while (number := _claim(claimed)) < len(chunks):
            # tuples of fields, which cross the pipe faster than objects
            sending.send((number, [
                (f.path, f.kind, f.digest, f.record, f.config, f.errors, f.slug, f.references, f.notes)
                for f in _read_chunk(root, chunks[number], config, jail)
            ]))
        sending.send((_DONE, None))
    except BaseException as error:  # a bug, never a file's content: raised again in the parent
        try:
            sending.send((_DONE, error))
        except Exception:
            sending.send((_DONE, RuntimeError(f"reading in the worker failed: {error!r}")))
    finally:
        sending.close()


def _receive_chunks(receiving: Any, arrived: queue.SimpleQueue) -> None:
    """The parent's thread that empties the pipe as the worker fills it (so the worker never waits)."""
    while True:
        try:
            message = receiving.recv()
        except (EOFError, OSError) as error:  # the worker died without a word (killed, out of memory)
            arrived.put((_DONE, RuntimeError(f"the worker reading catalog files stopped: {error!r}")))
            return
        arrived.put(message)
        if message[0] == _DONE:
            return


def _take_arrived(arrived: queue.SimpleQueue, read: list, chunks: list[list[str]],
                  progress: Callable[[int], None] | None, *, block: bool) -> bool:
    """The worker's chunks that came in, as LoadedFiles in their places (with `block`, up to its last);
    True once the worker is done. Its error, if it had one, is raised here."""
    while block or not arrived.empty():
        number, files = arrived.get()
        if number == _DONE:
            if files is not None:
                raise files
            return True
        read[number] = [LoadedFile(*fields) for fields in files]
        if progress is not None:
            progress(len(chunks[number]))
    return False


def _read_chunk(root: Path, paths: list[str], config: CatalogConfig | None, jail: Jail) -> list[LoadedFile]:
    return [loaded for path in paths for loaded in read_entities(root, file_of(path), config, _jail=jail)]


def _may_fork() -> bool:
    """Forking a process with other threads (a server, the loops of `catalog up`) is not safe."""
    return hasattr(os, "fork") and (os.cpu_count() or 1) > 1 and threading.active_count() == 1


def locate(root: Path, relative_path: str, loc: tuple, parsed: dict[str, yaml.Node | None] | None = None) -> Location:
    """Where a key path such as ("dependencies", 2) sits in a file (or in one document of a file of
    Backstage descriptors, where it is the path of the field the key became); the file start if
    unknown. `parsed` keeps the files read for earlier calls: one read per file, however many errors."""
    if parsed is not None and relative_path in parsed:
        node = parsed[relative_path]
    else:
        node = _parse_for_locating(root, relative_path)
        if parsed is not None:
            parsed[relative_path] = node
    real = file_of(relative_path)
    if node is None:
        return Location(real)
    if isinstance(node, tuple):  # a Backstage document: (its node, its values)
        node, document = node
        loc = backstage.document_loc(document, loc) if loc != ("slug",) else ("metadata", "name")
    return node_location(node, loc, real)


def _parse_for_locating(root: Path, relative_path: str) -> Any:
    real = file_of(relative_path)
    try:
        data = Jail(root).read(real)
        if backstage.MARKER not in data:
            return parse_yaml(data, real)
        nodes = compose_documents(data, real)
        number = int(relative_path[len(real) + 1:]) if real != relative_path else 1
        node = nodes[number - 1] if 0 < number <= len(nodes) else None
        if node is None:
            return None
        value = build_values(node, real)
        return (node, value) if backstage.is_descriptor(value) else node
    except (CatalogFileError, ValueError):
        return None


# -- validation ---------------------------------------------------------------------------------


class _Invalid(Exception):
    def __init__(self, errors: list[CatalogFileError]):
        self.errors = errors


def _validate(value: Any, node: yaml.Node | None, relative_path: str, kind: str) -> BaseModel:
    model = MODELS[kind]
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise _Invalid(explain(error, node, relative_path, model) if node is not None else []) from None
