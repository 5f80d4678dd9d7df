"""Safe YAML with line numbers: the C parser, limits against alias bombs, duplicate keys, node positions.

`parse_yaml` composes a document into nodes (which keep their marks) and checks it; the builders turn
nodes into plain values; `node_location` follows a key path through the nodes to a file:line:col.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import CatalogFileError, Location

try:  # the C parser is ~10x faster; the pure-Python one gives the same results
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

_PLAIN_SCALAR_TAGS: dict[str, str] = {}  # plain scalar -> resolved tag; keys and enum values repeat a lot


# The first characters an implicitly typed plain scalar (int, float, bool, null, ...) can start with;
# any other plain scalar is text, as the base resolver would find after trying no pattern at all.
# Most scalars of a catalog (names, slugs, owners, links) are unique: no memo helps with them.
TYPED_FIRST_CHARACTERS = frozenset(_SafeLoader.yaml_implicit_resolvers)
assert None not in TYPED_FIRST_CHARACTERS  # a wildcard resolver would have to see every scalar


_RESOLVER = _SafeLoader("")  # only its `resolve`, for `plain_scalar_tag`
_RESOLVER.dispose()


# Of YAML 1.1's implicit types only a timestamp can hold a space (`2001-12-14 21:59:43.10 -5`), and
# it starts with a digit: text such as "The web service of ..." is never tried against the patterns
# (a resolver call and a memo entry per description: ~3 us a file of a cold sync, bench/bench_sync.py).
# tests/test_plain_yaml.py checks PyYAML's resolvers agree.
_SPACED_TYPED_FIRST_CHARACTERS = frozenset("0123456789")


def plain_scalar_tag(value: str, _tags=_PLAIN_SCALAR_TAGS) -> str:  # type: ignore[no-untyped-def]
    """The tag YAML 1.1 gives a plain (unquoted) scalar: int, float, bool, null, timestamp, ... or str."""
    first = value[:1]
    if first not in TYPED_FIRST_CHARACTERS or (" " in value and first not in _SPACED_TYPED_FIRST_CHARACTERS):
        return "tag:yaml.org,2002:str"  # no implicit type starts so, or holds a space after such a start: text
    tag = _tags.get(value)
    if tag is None:
        tag = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))
        if len(_tags) < 50_000 and len(value) < 100:
            _tags[value] = tag
    return tag


class _YamlLoader(_SafeLoader):  # type: ignore[valid-type, misc]
    """The safe loader, with tag resolution memoised (it runs in Python for every node)."""

    def resolve(self, kind, value, implicit, _scalar=yaml.ScalarNode):  # type: ignore[no-untyped-def]
        if kind is _scalar:
            return plain_scalar_tag(value) if implicit[0] else "tag:yaml.org,2002:str"  # quoted: text
        return "tag:yaml.org,2002:seq" if kind is yaml.SequenceNode else "tag:yaml.org,2002:map"

    # no path resolvers are ever registered, so these are no-ops; the C composer calls both for
    # every node, and skipping the base class's attribute checks saves ~20% of composing
    def descend_resolver(self, current_node, current_index):  # type: ignore[no-untyped-def]
        pass

    def ascend_resolver(self):  # type: ignore[no-untyped-def]
        pass

    def construct_object(self, node, deep=False):  # type: ignore[no-untyped-def]
        """A value its constructor cannot make (`2027-02-30`: no such day) is an error at its node,
        not at the file's first line."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as error:
            raise yaml.constructor.ConstructorError(None, None, str(error), node.start_mark) from None

MAX_NODES = 20_000  # counted with aliases expanded: stops "billion laughs" before it grows


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


def parse_yaml(data: bytes, relative_path: str) -> yaml.Node:
    """Compose the YAML into nodes (which keep their line numbers) and check limits and duplicates."""
    node = compose(data, relative_path)
    _check_nodes(node, relative_path)
    return node


def compose(data: bytes, relative_path: str) -> yaml.Node:
    """`parse_yaml` without the limit and duplicate checks (`build_values` makes them)."""
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


def compose_documents(data: bytes, relative_path: str) -> list[yaml.Node | None]:
    """Every document of a `---` separated stream (a Backstage descriptor file), None for an empty one.
    Marks count lines from the start of the file, so each error lands inside the right document."""
    if b"---" not in data:  # one document (most descriptors): libyaml's one-document call is faster
        if all(not line.strip() or line.lstrip().startswith(b"#") for line in data.splitlines()):
            return [None]  # nothing yet, or only comments: no document (a whole catalog file would be an error)
        return [compose(data, relative_path)]
    _decode(data, relative_path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    loader = _YamlLoader(data)
    documents: list[yaml.Node | None] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            empty = node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"))
            documents.append(None if empty else node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = Location(relative_path, mark.line + 1, mark.column + 1) if mark else Location(relative_path)
        context = f" ({error.context})" if error.context else ""
        raise CatalogFileError(where, f"YAML syntax error: {error.problem or 'invalid YAML'}{context}") from None
    except yaml.YAMLError as error:
        raise CatalogFileError(Location(relative_path), f"YAML error: {error}") from None
    finally:
        loader.dispose()
    return documents


def check_document_shape(node: yaml.Node, relative_path: str) -> None:
    """A document of a descriptor file holds a mapping, as a whole catalog file does."""
    if not isinstance(node, yaml.MappingNode):
        shape = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
        raise CatalogFileError(
            _mark(node, relative_path), f"document holds {shape}; it should hold a mapping of fields (key: value)"
        )


def _check_nodes(root: yaml.Node, relative_path: str) -> None:
    """Refuse keys that are not text, duplicate keys, and documents that expand past MAX_NODES."""
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
                _check_key_is_text(key, relative_path)
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE:
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
_MERGE = "tag:yaml.org,2002:merge"
_KEY_KINDS = {  # what YAML makes of an unquoted key that is not text, in the error's words
    "tag:yaml.org,2002:int": "a number", "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true/false", "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date",
}


def _check_key_is_text(key: yaml.Node, relative_path: str) -> None:
    """Every key of a catalog file is text: `5:` or `true:` would be dropped by validation unseen."""
    if isinstance(key, yaml.ScalarNode) and key.tag in (_STR, _MERGE):
        return
    if isinstance(key, yaml.ScalarNode):
        kind = _KEY_KINDS.get(key.tag, f"tagged {key.tag}")
        message = f"key {key.value!r} is {kind}, not text; quote it (\"{key.value}\") if it is meant as text"
    else:
        shape = "a list" if isinstance(key, yaml.SequenceNode) else "a mapping"
        message = f"key is {shape}; keys must be text"
    raise CatalogFileError(_mark(key, relative_path), message)
_PLAIN_SCALARS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:float"}


class _Unusual(Exception):
    """A node the fast builder leaves to PyYAML's constructor (merge keys, timestamps, other tags)."""


class _NeedsCheck(Exception):
    """The fast builder met something `_check_nodes` may refuse: a duplicate key, too many nodes."""


_SCALAR_CONSTRUCTOR = yaml.constructor.SafeConstructor()  # stateless for int/bool/null/float scalars
_PLAIN_SCALAR_VALUES: dict[tuple[str, str], Any] = {}  # (tag, text) -> value; all immutable


def build_values(node: yaml.Node, relative_path: str) -> Any:
    """`_check_nodes`, then PyYAML's constructor, in one walk for the common shapes.

    The walk counts nodes as `_check_nodes` does and looks for the same duplicate keys; anything it
    is unsure of (a duplicate, too many nodes, an unusual tag or key, deep nesting) runs the two
    original steps instead, so errors and values are exactly theirs.
    """
    too_deep = False
    try:
        return _build_fast(node, [0])
    except (_NeedsCheck, _Unusual):
        pass
    except RecursionError:
        too_deep = True
    _check_nodes(node, relative_path)
    if too_deep:
        raise CatalogFileError(Location(relative_path), "YAML is nested too deeply")
    return _construct_slowly(node, relative_path)


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
        return scalar_value(tag, node.value)
    raise _Unusual


def scalar_value(tag: str, text: str) -> Any:
    """An int, bool, null or float plain scalar's value, as PyYAML's safe constructor makes it (memoised)."""
    cache_key = (tag, text)
    try:
        return _PLAIN_SCALAR_VALUES[cache_key]
    except KeyError:
        pass
    value = _SCALAR_CONSTRUCTOR.yaml_constructors[tag](_SCALAR_CONSTRUCTOR, yaml.ScalarNode(tag, text))
    if len(_PLAIN_SCALAR_VALUES) < 50_000 and len(text) < 100:
        _PLAIN_SCALAR_VALUES[cache_key] = value
    return value


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


def node_location(node: yaml.Node, loc: tuple, relative_path: str, *, at_key: bool = False) -> Location:
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
