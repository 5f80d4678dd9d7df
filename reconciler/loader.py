"""Reading catalog files: safe YAML with line numbers, limits against hostile input, validation.

Every problem becomes a `CatalogFileError` naming `file:line:col`. Nothing here raises for a bad
file: `read_file` returns the errors beside the (absent) model, so one bad file never stops the rest.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Union

import yaml
from pydantic import BaseModel, ValidationError

from .errors import CatalogFileError, Location
from .schema import CatalogConfig, Check, Service

try:  # the C parser is ~10x faster; the pure-Python one gives the same results
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

_PLAIN_SCALAR_TAGS: dict[str, str] = {}  # plain scalar -> resolved tag; keys and enum values repeat a lot


class _YamlLoader(_SafeLoader):  # type: ignore[valid-type, misc]
    """The safe loader, with tag resolution memoised (it runs in Python for every node)."""

    def resolve(self, kind, value, implicit, _scalar=yaml.ScalarNode, _tags=_PLAIN_SCALAR_TAGS):  # type: ignore[no-untyped-def]
        if kind is _scalar:
            if not implicit[0]:
                return "tag:yaml.org,2002:str"  # quoted: always a string (no path resolvers here)
            tag = _tags.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_PLAIN_SCALAR_TAGS) < 50_000 and len(value) < 100:
                    _PLAIN_SCALAR_TAGS[value] = tag
            return tag
        return "tag:yaml.org,2002:seq" if kind is yaml.SequenceNode else "tag:yaml.org,2002:map"

    # no path resolvers are ever registered, so these are no-ops; the C composer calls both for
    # every node, and skipping the base class's attribute checks saves ~20% of composing
    def descend_resolver(self, current_node, current_index):  # type: ignore[no-untyped-def]
        pass

    def ascend_resolver(self):  # type: ignore[no-untyped-def]
        pass

MAX_FILE_BYTES = 256 * 1024
MAX_NODES = 20_000  # counted with aliases expanded: stops "billion laughs" before it grows
CATALOG_FILE = "catalog.yaml"
KIND_DIRECTORIES = {"services": "service", "checks": "check"}
MODELS: dict[str, type[BaseModel]] = {"service": Service, "check": Check, "catalog": CatalogConfig}
YAML_SUFFIXES = (".yaml", ".yml")

Entity = Union[Service, Check, CatalogConfig]


@dataclass
class LoadedFile:
    """One catalog file as read: its model when valid, else its errors."""

    path: str  # relative to the catalog root, with forward slashes
    kind: str  # service | check | catalog
    digest: str  # sha256 of the bytes ("" when they could not be read)
    model: Entity | None = None
    errors: list[CatalogFileError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.model is not None and not self.errors


def kind_of(relative_path: str, ignored_prefix: str | None = None) -> str | None:
    """The kind of file a path holds in a catalog, or None when it is not a catalog file."""
    if ignored_prefix and (relative_path + "/").startswith(ignored_prefix.rstrip("/") + "/"):
        return None
    if relative_path == CATALOG_FILE:
        return "catalog"
    # plain string operations: this runs once per file of catalogs with 10,000 files
    top, slash, rest = relative_path.partition("/")
    if not slash or not rest or not relative_path.endswith(YAML_SUFFIXES):
        return None
    name = rest.rpartition("/")[2]
    if name in (".yaml", ".yml"):  # a bare suffix is a hidden file, not a YAML file
        return None
    return KIND_DIRECTORIES.get(top)


def list_catalog_files(root: Path, ignored_prefix: str | None = None) -> list[str]:
    """Every catalog file under root, sorted, as relative paths (symlinks listed, not followed)."""
    found = []
    if (root / CATALOG_FILE).exists() or (root / CATALOG_FILE).is_symlink():
        found.append(CATALOG_FILE)
    for directory in KIND_DIRECTORIES:
        base = root / directory
        if not base.is_dir() or base.is_symlink():
            continue
        for dirpath, dirnames, filenames in os.walk(base):  # never follows symlinked directories
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            prefix = Path(dirpath).relative_to(root).as_posix() + "/"
            for name in filenames:
                relative = prefix + name
                if kind_of(relative, ignored_prefix):
                    found.append(relative)
    return sorted(found)


def read_file(root: Path, relative_path: str, *, _jail: "_Jail | None" = None) -> LoadedFile:
    """Read, parse and validate one catalog file; never raises for what is in the file."""
    kind = kind_of(relative_path) or "service"
    loaded = LoadedFile(relative_path, kind, "")
    try:
        data = (_jail or _Jail(root)).read(relative_path)
    except CatalogFileError as error:
        loaded.errors.append(error)
        return loaded
    loaded.digest = hashlib.sha256(data).hexdigest()
    try:
        node = _compose(data, relative_path)
        value = _build_checked(node, relative_path)
        loaded.model = _validate(value, node, relative_path, kind)
    except _Invalid as invalid:
        loaded.errors.extend(invalid.errors)
    except CatalogFileError as error:
        loaded.errors.append(error)
    return loaded


def read_files(root: Path, relative_paths: Iterable[str]) -> list[LoadedFile]:
    """`read_file` for each path (sharing the resolved root: cheaper for thousands of files)."""
    jail = _Jail(root)
    return [read_file(root, path, _jail=jail) for path in relative_paths]


def locate(root: Path, relative_path: str, loc: tuple) -> Location:
    """Where a key path such as ("dependencies", 2) sits in a file; the file start if unknown."""
    try:
        node = parse_yaml(_read_bytes(root, relative_path), relative_path)
    except CatalogFileError:
        return Location(relative_path)
    return _node_location(node, loc, relative_path)


# -- reading bytes safely ---------------------------------------------------------------------


def _read_bytes(root: Path, relative_path: str) -> bytes:
    return _Jail(root).read(relative_path)


class _Jail:
    """Reads files under one root, refusing any that resolve outside it (symlinks)."""

    def __init__(self, root: Path):
        self.real_root = os.path.realpath(root)
        self._inside = self.real_root.rstrip(os.sep) + os.sep
        self._safe_directories: dict[str, bool] = {"": True}

    def read(self, relative_path: str) -> bytes:
        # os-level calls and a cache of checked directories: this runs once per file of catalogs
        # with 10,000 files, where realpath on every path costs more than the YAML parsing
        directory = relative_path.rpartition("/")[0]
        safe = self._safe_directories.get(directory)
        if safe is None:
            real = os.path.realpath(os.path.join(self.real_root, directory))
            safe = self._safe_directories[directory] = real.startswith(self._inside)
        path = os.path.join(self.real_root, relative_path)
        if safe:
            # the usual case, a regular file, in one open: O_NOFOLLOW refuses a symlink, and
            # every refusal takes the careful way below (which gives the same errors as before)
            try:
                fd = os.open(path, _OPEN_FLAGS)
            except OSError:
                pass
            else:
                return _read_open_file(fd, relative_path)
        if not safe or os.path.islink(path):
            path = os.path.realpath(path)
            if not path.startswith(self._inside):
                raise CatalogFileError(
                    Location(relative_path), "is a symlink pointing outside the repository; refusing to read it"
                )
        return _read_regular_file(path, relative_path)


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


def _read_regular_file(resolved: str, relative_path: str) -> bytes:
    try:
        fd = os.open(resolved, _OPEN_FLAGS)
    except FileNotFoundError:
        raise CatalogFileError(Location(relative_path), "file does not exist (or is a broken symlink)") from None
    except OSError as error:
        raise CatalogFileError(Location(relative_path), f"cannot read file: {error.strerror or error}") from None
    return _read_open_file(fd, relative_path)


def _read_open_file(fd: int, relative_path: str) -> bytes:
    """The bytes of an open file (closed here), if it is a regular file within the size limit."""
    start = Location(relative_path)
    try:  # plain os calls, no file object: this runs once per file of catalogs with 10,000 files
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise CatalogFileError(start, "is not a regular file")
        if status.st_size > MAX_FILE_BYTES:
            raise CatalogFileError(start, f"file is {status.st_size:,} bytes; the limit is {MAX_FILE_BYTES:,} bytes")
        data = _read_up_to(fd, status.st_size + 1, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise CatalogFileError(start, f"file is over the limit of {MAX_FILE_BYTES:,} bytes")
    return data


def _read_up_to(fd: int, expected: int, limit: int) -> bytes:
    """Read until end of file or `limit` bytes; `expected` (the size plus one) sizes the first read."""
    data = os.read(fd, min(expected, limit))
    if not data or len(data) >= limit:
        return data
    chunks = [data]
    total = len(data)
    while total < limit:  # the file grew since fstat, or a short read
        chunk = os.read(fd, limit - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _decode(data: bytes, relative_path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line = before.count(b"\n") + 1
        col = error.start - (before.rfind(b"\n") + 1) + 1
        raise CatalogFileError(
            Location(relative_path, line, col),
            f"is not valid UTF-8 (byte 0x{data[error.start]:02x}); save the file as UTF-8",
        ) from None


# -- YAML ---------------------------------------------------------------------------------------


def parse_yaml(data: bytes, relative_path: str) -> yaml.Node:
    """Compose the YAML into nodes (which keep their line numbers) and check limits and duplicates."""
    node = _compose(data, relative_path)
    _check_nodes(node, relative_path)
    return node


def _compose(data: bytes, relative_path: str) -> yaml.Node:
    """`parse_yaml` without the limit and duplicate checks (`_build_checked` makes them)."""
    _decode(data, relative_path)  # libyaml would take UTF-16 too: insist on UTF-8 first
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    loader = _YamlLoader(data)  # bytes: libyaml reads them without a Python-side re-encoding
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = Location(relative_path, mark.line + 1, mark.column + 1) if mark else Location(relative_path)
        problem = error.problem or "invalid YAML"
        context = f" ({error.context})" if error.context else ""
        raise CatalogFileError(where, f"YAML syntax error: {problem}{context}") from None
    except yaml.YAMLError as error:
        raise CatalogFileError(Location(relative_path), f"YAML error: {error}") from None
    finally:
        loader.dispose()
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
        raise CatalogFileError(Location(relative_path), "file is empty; it should hold a mapping of fields")
    if not isinstance(node, yaml.MappingNode):
        shape = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
        raise CatalogFileError(
            _mark(node, relative_path), f"file holds {shape}; it should hold a mapping of fields (key: value)"
        )
    return node


def _check_nodes(root: yaml.Node, relative_path: str) -> None:
    """Refuse duplicate keys and documents that expand past MAX_NODES through aliases."""
    count = 0
    stack = [root]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise CatalogFileError(
                Location(relative_path),
                f"file expands to more than {MAX_NODES:,} YAML nodes (aliases included); "
                "refusing it as a possible alias bomb",
            )
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in seen:
                        first = seen[key.value].start_mark.line + 1
                        raise CatalogFileError(
                            _mark(key, relative_path), f"duplicate key {key.value!r} (first defined on line {first})"
                        )
                    seen[key.value] = key
                stack.append(key)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_PLAIN_SCALARS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:float"}


class _Unusual(Exception):
    """A node the fast builder leaves to PyYAML's constructor (merge keys, timestamps, other tags)."""


class _NeedsCheck(Exception):
    """The fast builder met something `_check_nodes` may refuse: a duplicate key, too many nodes."""


_SCALAR_CONSTRUCTOR = yaml.constructor.SafeConstructor()  # stateless for int/bool/null/float scalars
_PLAIN_SCALAR_VALUES: dict[tuple[str, str], Any] = {}  # (tag, text) -> value; all immutable


def _build_checked(node: yaml.Node, relative_path: str) -> Any:
    """`_check_nodes` then `_construct`, in one walk for the common shapes.

    The walk counts nodes as `_check_nodes` does and looks for the same duplicate keys; anything it
    is unsure of (a duplicate, too many nodes, an unusual tag, deep nesting) runs the two original
    steps instead, so errors and values are exactly theirs.
    """
    try:
        return _build_fast(node, [0])
    except (_NeedsCheck, _Unusual, RecursionError):
        pass
    _check_nodes(node, relative_path)
    return _construct(node, relative_path)


def _build_fast(node: yaml.Node, count: list[int]) -> Any:
    count[0] += 1
    if count[0] > MAX_NODES:
        raise _NeedsCheck
    tag = node.tag
    node_type = type(node)  # the composer makes exactly these classes
    if tag == _STR and node_type is yaml.ScalarNode:
        return node.value
    if tag == _MAP and node_type is yaml.MappingNode:
        mapping = {}
        for key, value in node.value:
            if type(key) is yaml.ScalarNode and key.tag == _STR:  # the usual key: plain text
                if key.value in mapping:  # a text key's value is its text
                    raise _NeedsCheck
                count[0] += 1
                mapping[key.value] = _build_fast(value, count)
                continue
            if not (isinstance(key, yaml.ScalarNode) and key.tag in _PLAIN_SCALARS or key.tag == _STR):
                raise _Unusual
            raise _NeedsCheck  # an int/bool/null key: rare, leave it to the two original steps
        return mapping
    if tag == _SEQ and node_type is yaml.SequenceNode:
        return [_build_fast(item, count) for item in node.value]
    if tag in _PLAIN_SCALARS and node_type is yaml.ScalarNode:
        cache_key = (tag, node.value)
        try:
            return _PLAIN_SCALAR_VALUES[cache_key]
        except KeyError:
            pass
        value = _SCALAR_CONSTRUCTOR.yaml_constructors[tag](_SCALAR_CONSTRUCTOR, node)
        if len(_PLAIN_SCALAR_VALUES) < 50_000 and len(node.value) < 100:
            _PLAIN_SCALAR_VALUES[cache_key] = value
        return value
    raise _Unusual


def _construct(node: yaml.Node, relative_path: str) -> Any:
    """Nodes to Python values: a fast path for plain maps, lists and scalars, else PyYAML's constructor."""
    constructor = _YamlLoader("")
    try:
        return _build(node, constructor)
    except _Unusual:
        pass
    except RecursionError:
        raise CatalogFileError(Location(relative_path), "YAML is nested too deeply") from None
    finally:
        constructor.dispose()
    return _construct_slowly(node, relative_path)


def _build(node: yaml.Node, constructor: Any) -> Any:
    """Same values as SafeConstructor for the common shapes (checked: nodes are few after _check_nodes)."""
    tag = node.tag
    if tag == _STR and isinstance(node, yaml.ScalarNode):
        return node.value
    if tag == _MAP and isinstance(node, yaml.MappingNode):
        mapping = {}
        for key, value in node.value:
            if not (isinstance(key, yaml.ScalarNode) and key.tag in _PLAIN_SCALARS or key.tag == _STR):
                raise _Unusual  # merge keys (<<), complex keys: PyYAML knows the rules
            mapping[_build(key, constructor)] = _build(value, constructor)
        return mapping
    if tag == _SEQ and isinstance(node, yaml.SequenceNode):
        return [_build(item, constructor) for item in node.value]
    if tag in _PLAIN_SCALARS and isinstance(node, yaml.ScalarNode):
        return constructor.construct_object(node)
    raise _Unusual


def _construct_slowly(node: yaml.Node, relative_path: str) -> Any:
    constructor = _YamlLoader("")
    try:
        return constructor.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = Location(relative_path, mark.line + 1, mark.column + 1) if mark else Location(relative_path)
        raise CatalogFileError(where, f"YAML error: {error.problem or error}") from None
    except (yaml.YAMLError, ValueError, TypeError) as error:
        raise CatalogFileError(Location(relative_path), f"YAML error: {error}") from None
    finally:
        constructor.dispose()


def _mark(node: yaml.Node, relative_path: str) -> Location:
    return Location(relative_path, node.start_mark.line + 1, node.start_mark.column + 1)


def _node_location(node: yaml.Node, loc: tuple, relative_path: str, *, at_key: bool = False) -> Location:
    """Follow a pydantic error location through the node tree to the line of the offending key."""
    current, key_node = node, None
    for part in loc:
        if isinstance(current, yaml.MappingNode) and isinstance(part, str):
            match = next(((k, v) for k, v in current.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            if match is None:
                continue  # a union branch name or a missing key: stay where we are
            key_node, current = match
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and part < len(current.value):
            key_node, current = None, current.value[part]
    target = key_node if (at_key and key_node is not None) else current
    return _mark(target, relative_path)


# -- validation ---------------------------------------------------------------------------------


class _Invalid(Exception):
    def __init__(self, errors: list[CatalogFileError]):
        self.errors = errors


def _validate(value: Any, node: yaml.Node, relative_path: str, kind: str) -> Entity:
    model = MODELS[kind]
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise _Invalid(_explain(error, node, relative_path, model)) from None


def _explain(error: ValidationError, node: yaml.Node, relative_path: str, model: type[BaseModel]) -> list[CatalogFileError]:
    explained: dict[tuple, CatalogFileError] = {}
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        if not _is_branch_for_node(node, loc):
            continue
        field_path = ".".join(str(p) for p in loc if not _is_branch_name(p))
        is_extra = item["type"] == "extra_forbidden"
        where = _node_location(node, loc, relative_path, at_key=is_extra)
        message = _message(item, loc, model)
        key = (where.line, where.col, field_path)
        if key not in explained:
            prefix = f"{field_path}: " if field_path and not is_extra else ""
            explained[key] = CatalogFileError(where, prefix + message)
    return sorted(explained.values(), key=lambda e: (e.location.line, e.location.col))


def _is_branch_name(part: Any) -> bool:
    return isinstance(part, str) and ("Selector" in part or "[" in part or part.startswith("literal"))


def _is_branch_for_node(node: yaml.Node, loc: tuple) -> bool:
    """For a union (`services:`), keep only the errors of the branch that fits the YAML's shape."""
    current = node
    for index, part in enumerate(loc):
        if _is_branch_name(part):
            wanted = (
                yaml.MappingNode if "Selector" in part
                else yaml.SequenceNode if part.startswith("list")
                else yaml.ScalarNode
            )
            if not isinstance(current, wanted):
                return False
            continue
        if isinstance(current, yaml.MappingNode) and isinstance(part, str):
            match = next((v for k, v in current.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            if match is None:
                return True
            current = match
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and part < len(current.value):
            current = current.value[part]
    return True


def _message(item: dict, loc: tuple, model: type[BaseModel]) -> str:
    kind, ctx = item["type"], item.get("ctx") or {}
    if kind == "extra_forbidden":
        name = str(loc[-1])
        known = _known_keys(model, loc[:-1])
        hint = difflib.get_close_matches(name, known, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else f" (known keys: {', '.join(known)})" if known else ""
        return f"unknown key {name!r}{suggestion}"
    if kind == "missing":
        return "is required"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if kind == "int_type":
        return "must be a whole number"
    if kind == "string_type":
        return "must be text"
    if kind == "bool_type":
        return "must be true or false"
    if kind == "list_type":
        return "must be a list"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a mapping (key: value)"
    if kind == "string_pattern_mismatch" and "[a-z0-9]+" in str(ctx.get("pattern", "")):
        return "must be a slug: lower-case letters and digits in words joined by single dashes"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "value_error":
        return str(item["msg"]).removeprefix("Value error, ")
    return str(item["msg"]).lower() if item["msg"][:1].isupper() else str(item["msg"])


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names allowed at a location, for 'did you mean' hints."""
    from .schema import Defaults, Selector, Writeback

    plain = tuple(part for part in loc if not (isinstance(part, str) and "Selector" in part))
    nested = {("defaults",): Defaults, ("writeback",): Writeback, ("services",): Selector}
    target = nested.get(plain, model if not plain else None)
    return sorted(target.model_fields) if target else []
