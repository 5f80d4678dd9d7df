"""Reading a catalog file's bytes safely: regular files under the root only, within a size limit,
a symlink followed only when it stays inside the repository (so a FIFO, /dev/zero or a link to
/etc/passwd is an error for that file, never a hang or a leak)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Iterator

from .errors import CatalogFileError, Location

MAX_FILE_BYTES = 256 * 1024


def read_bytes(root: Path, relative_paths: Iterable[str]) -> Iterator[tuple[str, bytes | CatalogFileError]]:
    """Each file's bytes, or why they cannot be read: regular files under root only, within the size
    limit (checked before reading), so a FIFO or a symlink to /dev/zero is an error, not a hang."""
    jail = Jail(root)
    for path in relative_paths:
        try:
            yield path, jail.read(path)
        except CatalogFileError as error:
            yield path, error


class Jail:
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
            safe = self._directory_is_inside(directory)
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


    def _directory_is_inside(self, directory: str) -> bool:
        """Whether a folder resolves inside the root: a folder that is no symlink, in a folder that is
        inside, is inside (one lstat); else its realpath decides. Backstage repositories keep one
        folder per service (`components/<name>/catalog-info.yaml`): a realpath each cost a second
        of a 10,000-file sync (bench/bench_backstage_sync.py)."""
        parent = directory.rpartition("/")[0]
        parent_safe = self._safe_directories.get(parent)
        if parent_safe is None:
            parent_safe = self._directory_is_inside(parent)
        full = os.path.join(self.real_root, directory)
        if parent_safe and not os.path.islink(full):
            safe = True
        else:
            safe = os.path.realpath(full).startswith(self._inside)
        self._safe_directories[directory] = safe
        return safe


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
    try:  # plain os calls, no file object: this runs once per file of catalogs with 100,000 files
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise CatalogFileError(Location(relative_path), "is not a regular file")
        if status.st_size > MAX_FILE_BYTES:
            raise CatalogFileError(
                Location(relative_path), f"file is {status.st_size:,} bytes; the limit is {MAX_FILE_BYTES:,} bytes"
            )
        data = _read_up_to(fd, status.st_size, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise CatalogFileError(Location(relative_path), f"file is over the limit of {MAX_FILE_BYTES:,} bytes")
    return data


def _read_up_to(fd: int, size: int, limit: int) -> bytes:
    """Read until end of file or `limit` bytes; `size` (fstat's) sizes the first read."""
    data = os.read(fd, min(size + 1, limit))
    if len(data) == size or not data or len(data) >= limit:
        # the size fstat gave, asked one byte more: the file ended there (a second read to see the
        # end cost a cold sync of 100,000 files 100,000 more system calls)
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
