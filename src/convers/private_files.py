"""The data directory and everything in it private to the user (0700 / 0600) from the first write.

Memory, event logs, the profile and the access token say who the user is and what they said: no
other local account may read them. Files are created with the private mode (not chmod-ed after a
window in which they were readable), and a directory or file an earlier version left readable is
tightened when convers next opens it. Only group and other bits are removed, and only on what this
user owns: a read-only file stays read-only, and a shared folder someone passed as --data-dir is
left alone with a warning. JSON records (the models' checksums) are written through a private
temporary file and a rename (`write_json_atomically`).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Creates `path` (and missing parents) as 0700, or tightens it if it exists; returns it."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    tighten(path)
    return path


def tighten(path: Path) -> None:
    """Removes group and other permissions from `path` if it exists, is ours, and has any."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if not stat.S_IMODE(info.st_mode) & 0o077:
        return
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        log.warning("%s is readable by other users and not owned by you: it was left as it is", path)
        return
    try:
        os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o077)
    except OSError as error:
        log.warning("cannot make %s private to you: %s", path, error.strerror)


def create_private(path: Path) -> None:
    """Makes sure `path` exists as a 0600 file (an empty file when new) without changing its content.

    An existing file is never opened: closing any descriptor of a file drops every POSIX lock this
    process holds on it, and SQLite's locks on memory.db are POSIX locks. Opening and closing it
    beside a live connection (each new session's store did) let another process that read the
    database and closed take itself for the last user and delete the WAL: the server's later
    commits went into the unlinked file and a kill -9 lost them.
    """
    if not path.exists():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        except FileExistsError:
            pass  # made at this moment by another opener: it is not ours to touch either
    tighten(path)


def open_private_append(path: Path) -> IO[str]:
    """`path` opened for appending text, created 0600 (line-buffered, UTF-8)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        handle = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
    except BaseException:
        os.close(fd)
        raise
    tighten(path)
    return handle


def write_json_atomically(path: Path, data: object) -> None:
    """Writes `data` as JSON through a temporary file and a rename: readers see the old file or the new one."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        private_dir(path.parent)
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
