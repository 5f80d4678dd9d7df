"""The errors the catalog raises, each carrying what a user needs to fix it.

    CatalogError                  base: every error a user can cause or fix
    ├── ConfigError               a bad setting, flag or environment variable
    ├── CatalogFileError          one YAML file is unreadable or invalid (file, line, col)
    ├── CatalogIntegrityError     files are fine alone but not together (duplicate slug, cycle...)
    ├── SourceError               the git source cannot be cloned, fetched or checked out
    ├── SyncRefused               a sync would remove too much (needs --allow-mass-removal)
    ├── NotFound                  a service, check, result or token that does not exist
    ├── Conflict                  a state change that is not allowed (e.g. a finished result)
    ├── NotAllowed                a caller who may not do this (an OIDC token of another repository)
    ├── InvalidInput              a bad value given to the API or the CLI
    ├── DispatchError             a dispatcher could not send (transient or permanent)
    └── WritebackError            writing results back to git failed

The CLI prints any of these as one line and exits non-zero; the API maps them to HTTP in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


class CatalogError(Exception):
    """Base class: the message is meant for the user, as is. `code`: the API error's stable code, when
    it is not the one of its HTTP status (api/errors.py)."""

    code: str | None = None


class ConfigError(CatalogError):
    """A bad setting, flag or environment variable."""


@dataclass(frozen=True)
class Location:
    """A place in a catalog file: path relative to the catalog root, 1-based line and column."""

    path: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


class CatalogFileError(CatalogError):
    """A catalog file that cannot be read, parsed or validated."""

    def __init__(self, location: Location, message: str):
        self.location = location
        self.message = message
        super().__init__(f"{location}: {message}")

    def __reduce__(self):  # picklable with its fields (files are read in a second process)
        return (type(self), (self.location, self.message))

    def as_dict(self) -> dict:
        return {
            "file": self.location.path,
            "line": self.location.line,
            "col": self.location.col,
            "message": self.message,
        }


class CatalogIntegrityError(CatalogFileError):
    """Files that are valid alone but contradict each other; `other` names the second file."""

    def __init__(self, location: Location, message: str, other: Location | None = None):
        self.other = other
        super().__init__(location, message)

    def __reduce__(self):
        return (type(self), (self.location, self.message, self.other))


class SourceError(CatalogError):
    """The catalog repository cannot be cloned, fetched or checked out."""


class SyncRefused(CatalogError):
    """A sync that would remove too much of the catalog."""


class NotFound(CatalogError):
    """Something asked for by name or id does not exist."""


class Conflict(CatalogError):
    """A change the current state does not allow, such as completing a finished result."""


class TooLate(Conflict):
    """An answer that came after its check's timeout: not recorded, the result times out (a retry that
    gets it was not recorded earlier, unlike one that finds the result completed)."""

    code = "timed_out"


class NotAllowed(CatalogError):
    """A caller who may not do this, whatever the state: an OIDC token answering another repository's check."""


class InvalidInput(CatalogError):
    """A value given by a user (API body, CLI argument) is not acceptable."""


class DispatchError(CatalogError):
    """A dispatcher failed; `transient` says whether a later retry may succeed."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None):
        self.transient = transient
        self.retry_after = retry_after
        super().__init__(message)


class WritebackError(CatalogError):
    """Writing results back to git failed."""
