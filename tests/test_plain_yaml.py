"""The quick reader of plain YAML gives exactly what the full path gives, or steps aside (None)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from reconciler.errors import CatalogFileError
from reconciler.loader import list_catalog_files
from reconciler.plain_yaml import plain_values
from reconciler.yamlparse import MAX_NODES, build_values, compose

EXAMPLE = Path(__file__).resolve().parent.parent / "catalog-repo-example"

KEYS = ["name", "slug", "meta", "on", "yes", "5", "null", "a.b", "x-y", "true", "key", "Key", "_k", "1e3"]
VALUES = [
    "x", "Service 1", "1", "-1", "+1", "0x1F", "017", "0o17", "1_000", "1:30", "1.5", ".5", ".inf", "-.inf", ".nan",
    "1e3", "yes", "No", "off", "y", "null", "Null", "~", "2026-01-01", "2026-01-01 10:00:00", "a: b", "a:", "a:b",
    "x #c", "x#c", "x  # c", '"q"', '"q" #c', '"q"#c', '"#q"', '""', "''", "'s'", "'it''s'", '"a\\"b"', '"a\\nb"',
    "[a, b]", "[]", "[ ]", "[a, , b]", "[1, true, null]", "[a b]", "[-1]", "[a,b]", "[a, [b]]", "[a, {b: c}]",
    "{a: b}", "|", ">", "&a x", "*a", "!!str 1", "x, y", "x [y]", "x {y}", "@x", "%x", "`x", "-x", "- x", "?x",
    "", "# c", "https://x.y/z?a=b#frag", "it's", "a  b", "x  ", "=", "<<", "0", "-0", "+.5", "1,000", "0b101",
]

COMMON = ["x", "Service 1", "3", "acme/repo", "The web, for part 5.", "[pci, tier-1]", "[]", '"#team"', "true", "daily"]


def _value(rng: random.Random) -> str:
    return rng.choice(COMMON if rng.random() < 0.7 else VALUES)


def _document(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(0, 8)):
        shape = rng.random()
        key = rng.choice(KEYS)
        if shape < 0.5:
            lines.append(f"{key}: {_value(rng)}".rstrip() if rng.random() < 0.9 else f"{key}:  {_value(rng)}")
        elif shape < 0.65:
            lines.append(f"{key}:")
            indent = " " * rng.choice([2, 2, 4])
            for _ in range(rng.randint(0, 3)):
                lines.append(f"{indent}{rng.choice(KEYS)}: {_value(rng)}".rstrip())
        elif shape < 0.8:
            lines.append(f"{key}:")
            indent = " " * rng.choice([0, 2, 2, 4])
            for _ in range(rng.randint(0, 3)):
                lines.append(f"{indent}- {_value(rng)}".rstrip())
        else:  # the odd line: comments, blanks, markers, continuations, bad indentation
            lines.append(rng.choice(["# comment", "", "   ", "---", "...", "  more text", "    - x", "- x",
                                     "  # indented comment", "\tname: x", "name: x\r", "key: caf\u00e9"]))
    return "\n".join(lines) + rng.choice(["\n", "", "\n\n"])


def _full_path(data: bytes):
    try:
        return build_values(compose(data, "f.yaml"), "f.yaml")
    except CatalogFileError as error:
        return error


def test_plain_reader_gives_what_the_full_path_gives_or_steps_aside():
    rng = random.Random(16)
    read_quickly = 0
    for _ in range(6000):
        data = _document(rng).encode()
        quick = plain_values(data)
        if quick is None:
            continue
        read_quickly += 1
        full = _full_path(data)
        # repr: True and 1, 1.0 and 1 compare equal; their reprs do not
        assert repr(quick) == repr(full), data
    assert read_quickly > 300  # the quick path is taken, not only stepped around


@pytest.mark.parametrize("text", [
    "name: A\nslug: a\n", "name: A\nmeta:\n  k: v\n", "services:\n  - a\n  - b\n", "services:\n- a\n",
    "tags: [x, y]  # two\n", "name: \"quoted: text\"\n", "name: A # comment\n\n# end\n",
])
def test_plain_shapes_are_read_quickly(text):
    assert plain_values(text.encode()) == build_values(compose(text.encode(), "f.yaml"), "f.yaml")


@pytest.mark.parametrize("text", [
    "5: five\n", "name: A\nname: B\n", "a: b: c\n", "name: |\n  x\n", "a: &x 1\nb: *x\n", "",
    "# only a comment\n", "name: A\n  continued\n", "meta:\n  a:\n    b: c\n", "name: caf\u00e9\n", "name: A\r\n",
    "---\nname: A\n", "on: x\n", "when: 2026-01-01\n",
])
def test_other_shapes_are_left_to_the_full_path(text):
    assert plain_values(text.encode()) is None


def test_a_file_past_the_node_limit_is_left_to_the_full_path():
    """yamlparse refuses a document of more than MAX_NODES nodes (alias bombs): so must the quick reader."""
    data = ("tags: [" + ", ".join(f"t{n}" for n in range(MAX_NODES + 1)) + "]\n").encode()
    assert plain_values(data) is None
    assert isinstance(_full_path(data), CatalogFileError)


def test_example_catalog_files_read_quickly_give_the_same_values():
    read_quickly = 0
    for path in list_catalog_files(EXAMPLE):
        data = (EXAMPLE / path).read_bytes()
        quick = plain_values(data)
        if quick is not None:
            read_quickly += 1
            assert repr(quick) == repr(_full_path(data)), path
    assert read_quickly >= 10  # its services and checks are of the plain shape


def test_only_a_scalar_starting_with_a_digit_can_be_typed_with_a_space_in_it():
    """plain_scalar_tag calls text any scalar with a space unless it starts with a digit (a timestamp):
    PyYAML's own resolvers must agree, for every first character they type."""
    import yaml

    from reconciler.yamlparse import _RESOLVER, TYPED_FIRST_CHARACTERS, plain_scalar_tag

    words = ["yes", "No", "true", "FALSE", "on", "off", "y", "n", "null", "~", "<<", "=", ".inf", "-.5", "+1", "0x1F",
             "1_000", "1:30", "2001-12-14", "2001-12-14t21:59:43.10-05:00", ".nan", "-1", "0o17", "1e3"]
    for first in TYPED_FIRST_CHARACTERS:
        for word in words + [first]:
            for spaced in (f"{first}{word[1:]} x", f"{first} {word}", f"{first}{word} ", f"{word} {first}"):
                if spaced[:1] == first:
                    expected = _RESOLVER.resolve(yaml.ScalarNode, spaced, (True, False))
                    assert plain_scalar_tag(spaced) == expected, spaced
    assert plain_scalar_tag("2001-12-14 21:59:43.10 -5") == "tag:yaml.org,2002:timestamp"


def test_a_repeated_line_gives_each_file_its_own_list():
    """Lines read lately are kept with their values: a list must still be each file's own."""
    first = plain_values(b"name: A\ntags: [x, y]\n")
    first["tags"].append("changed")
    assert plain_values(b"name: B\ntags: [x, y]\n") == {"name": "B", "tags": ["x", "y"]}
