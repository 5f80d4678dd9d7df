"""Where a document of a file of several is kept: `file#N`, and the file such a stored path is in.

A file of one document is kept at its own path; a file of several (Backstage descriptors separated by
`---`) at one path per document, numbered from 1 and counting every document. The store, the
reconciler and the pages read these paths alike, so the rule lives here, apart from the YAML reader.
"""

from __future__ import annotations

YAML_SUFFIXES = (".yaml", ".yml")


def document_path(file_path: str, number: int) -> str:
    """Where the Nth document (from 1) of a file of several documents is kept: `file#N`."""
    return f"{file_path}#{number}"


def file_of(path: str) -> str:
    """The file a stored path is in: `team.yaml#2` -> `team.yaml`; a file's own path as it is."""
    head, sign, number = path.rpartition("#")
    return head if sign and number.isdigit() and head.endswith(YAML_SUFFIXES) else path


def document_number(path: str) -> int:
    """The number of the document a stored path names: 2 for `team.yaml#2`, 0 for a file's own path."""
    real = file_of(path)
    return 0 if real == path else int(path[len(real) + 1:])


def display_path(path: str) -> str:
    """A stored path as a person reads it: `team.yaml (document 2)`."""
    real = file_of(path)
    return path if real == path else f"{real} (document {path[len(real) + 1:]})"
