"""A quick reader for the plain YAML most catalog files are: the values `yamlparse` would build, or None.

A service or check file is a dozen `key: value` lines, a `meta:` mapping, a `[a, b]` list. libyaml
composes each into a tree of nodes with marks that a valid file never needs (they only place
errors); composing is half of a cold sync's CPU (bench/bench_sync.py --services 100000: 37 of 75
microseconds a file). This reads that plain shape line by line. Anything else, or anything it is
unsure of, gives None, and the caller takes the full path (`yamlparse.compose` + `build_values`),
which also places every error: so a file read here gives exactly the values the full path gives
(tests/test_plain_yaml.py compares both on generated documents), and an invalid file is read again
by the full path for its lines.

The shape, in full: ASCII text without tabs or control characters; at the top, `key: value` lines;
a key with no value followed by more indented `key: value` lines (a mapping) or `- value` lines (a
list); values are plain scalars (typed as YAML 1.1 types them: `yamlparse.plain_scalar_tag`),
quoted scalars without escapes, or one-line `[a, b]` lists of simple words; comments and blank lines
anywhere. Keys are plain words, each once per mapping.
"""

from __future__ import annotations

import re
from typing import Any

from .yamlparse import MAX_NODES, TYPED_FIRST_CHARACTERS, plain_scalar_tag, scalar_value

_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*\Z")
# one-line flow lists of plain words (slugs, tags, numbers): nothing that could start a nested
# collection, a quoted scalar, an alias or a comment inside the brackets
_FLOW_LIST = re.compile(r"\[([A-Za-z0-9_., /-]*)\](?: +#.*| *)$")
_QUOTED = re.compile(r"\"([^\"\\]*)\"(?: +#.*| *)$|'([^']*)'(?: +#.*| *)$")
# what a plain scalar may not start with (YAML's indicators), nor hold (a flow collection's brackets,
# which only the full path reads)
_NOT_PLAIN_START = frozenset("-?:,[]{}#&*!|>'\"%@`")
_PLAIN_BYTES = b"\n" + bytes(range(0x20, 0x7F))  # printable ASCII and newlines: all else goes the full path
_STR = "tag:yaml.org,2002:str"
_TYPED = frozenset({
    "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null",
})


_OPEN = object()  # a key with nothing after it: a nested block may follow (a `null` value is not this)


_TEXT_KEYS: set[str] = set()  # keys seen to be text: the same few dozen, in every file


class _Unsure(Exception):
    """Outside the plain shape: the full path reads the file."""


def plain_values(data: bytes) -> dict | None:
    """The mapping a plain catalog file holds, as `yamlparse.build_values(compose(data))` gives it; None
    when the file is not of the plain shape (then nothing is said about whether it is valid)."""
    if len(data) > MAX_NODES:
        # every node of the plain shape takes 1.5 bytes or more, so a file this small holds fewer
        # nodes than yamlparse allows; a bigger one is left to it, as it counts them (MAX_NODES)
        return None
    if data.translate(None, _PLAIN_BYTES):  # non-ASCII, tabs, carriage returns, control characters
        return None  # the full path decides
    try:
        return _read(data.decode("ascii").split("\n"))
    except _Unsure:
        return None


# A cold sync reads 100,000 files of a dozen lines each: the loop below keeps to a few string
# operations a line (bench/bench_sync.py --services 100000; a regular expression per line cost ~8 of
# a file's ~21 microseconds).


def _read(lines: list[str]) -> dict | None:
    top: dict[str, Any] = {}
    container: dict | list | None = None  # the nested mapping or list being filled
    indent = -1  # its lines' indentation
    open_key: str | None = None  # a top-level key with no value yet: a nested block may follow
    for line in lines:
        if not line:
            continue
        first = line[0]
        if first == " ":
            stripped = line.lstrip(" ")
            if not stripped or stripped[0] == "#":
                continue
            first = stripped[0]
            depth = len(line) - len(stripped)
        elif first == "#":
            continue
        else:
            stripped, depth = line, 0
        if open_key is not None:  # the first line after `key:` says what the value is
            if first == "-":
                container, indent = [], depth
            elif depth > 0:
                container, indent = {}, depth
            else:
                container = None
            top[open_key] = container
            open_key = None
        if container is not None and depth == indent and (depth > 0 or first == "-"):
            if isinstance(container, list):
                if first != "-" or stripped[1:2] != " ":
                    raise _Unsure  # not `- value`
                item = stripped[2:].lstrip(" ")
                if not item or item[0] == "#":
                    raise _Unsure  # a null item
                container.append(_scalar(item))
            else:
                key, value = _key_value(stripped)
                if value is _OPEN:
                    raise _Unsure  # a nested mapping inside the nested one, or a null: rare
                if key in container:
                    raise _Unsure
                container[key] = value
            continue
        if depth != 0:
            raise _Unsure  # deeper or shallower than the block being read
        container = None
        key, value = _key_value(stripped)
        if key in top:
            raise _Unsure
        if value is _OPEN:
            open_key = key
        else:
            top[key] = value
    if open_key is not None:
        top[open_key] = None
    if not top:
        raise _Unsure  # an empty file: the full path says so
    return top


def _key_value(text: str) -> tuple[str, Any]:
    """A `key: value` line's key and value (`_OPEN` for a key alone, which a block may follow), its
    indentation stripped."""
    known = _LINES.get(text)
    if known is None:
        known = _parse_key_value(text)
        if known[1].__class__ is list:
            known = (known[0], tuple(known[1]))  # kept unchangeable: each file gets its own list
        if len(_LINES) >= _LINES_KEPT:
            _LINES.clear()
        _LINES[text] = known
    return known if known[1].__class__ is not tuple else (known[0], list(known[1]))


# Lines read lately, with their key and value: half the lines of a catalog's files repeat (`type: web`,
# `owner: team-payments`, `tags: [tier-1]`, `meta:`), and a line's values are text, numbers, booleans,
# None or a list (kept as a tuple). A line read again costs a lookup instead of ~0.7 us of string
# operations: 3 of 15 us a service file (bench/bench_sync.py --services 100000). Emptied when full, so
# the lines of files read long ago (names, descriptions) do not stay.
_LINES: dict[str, tuple[str, Any]] = {}
_LINES_KEPT = 4096


def _parse_key_value(text: str) -> tuple[str, Any]:
    key, colon, rest = text.partition(":")
    if not colon:
        raise _Unsure
    if key not in _TEXT_KEYS:
        if not _KEY.match(key) or plain_scalar_tag(key) != _STR:
            raise _Unsure  # `a b:`, `5:`, `true:`, `null:`: the full path reports a key that is not text
        if len(_TEXT_KEYS) < 10_000:
            _TEXT_KEYS.add(key)
    if not rest:
        return key, _OPEN
    if rest[0] != " ":
        raise _Unsure  # `a:b`
    rest = rest.lstrip(" ")
    if not rest or rest[0] == "#":
        return key, _OPEN
    if rest[0] == "[":
        return key, _flow_list(rest)
    return key, _scalar(rest)


def _scalar(text: str) -> Any:
    """A plain or quoted scalar, and maybe a comment after it."""
    first = text[0]
    if first == '"' or first == "'":
        match = _QUOTED.match(text)
        if match is None:
            raise _Unsure
        return match[1] if first == '"' else match[2]
    if first in _NOT_PLAIN_START:
        raise _Unsure
    value = text.split(" #", 1)[0].rstrip(" ") if "#" in text or text[-1] == " " else text
    if ": " in value or value[-1] == ":" or "[" in value or "]" in value or "{" in value or "}" in value:
        raise _Unsure
    return value if first not in TYPED_FIRST_CHARACTERS else _typed(value)


def _flow_list(text: str) -> list:
    match = _FLOW_LIST.match(text)
    if match is None:
        raise _Unsure
    inner = match[1]
    if not inner.strip(" "):
        return []
    items = []
    for item in inner.split(","):
        word = item.strip(" ")
        # `_FLOW_LIST` lets only [A-Za-z0-9_., /-] in: a word is [A-Za-z0-9_][A-Za-z0-9_./-]* when it is
        # not empty, starts with none of `./-` and holds no space
        if not word or word[0] in "./-" or " " in word:
            raise _Unsure  # an empty item, words with spaces, `-1`: the full path reads them
        items.append(word if word[0] not in TYPED_FIRST_CHARACTERS else _typed(word))
    return items


def _typed(value: str) -> Any:
    """A plain scalar's value: its text, or the int, float, bool or null YAML 1.1 makes of it."""
    tag = plain_scalar_tag(value)
    if tag == _STR:
        return value
    if tag not in _TYPED:
        raise _Unsure  # a timestamp, a merge key, a value key: the full path's constructor
    return scalar_value(tag, value)  # memoised there, for both readers
