"""Gives the C heap's free memory back to the system once a session has ended (glibc only).

A closed session's Python objects and its native buffers (audio, decoder and synthesis scratch)
are freed, but glibc keeps freed heap pages for reuse; when a long-lived allocation sits above
them, the heap cannot shrink and RSS ratchets up in ~20 MB steps across reconnects
(`python -m convers.bench.reconnects`). malloc_trim(0) returns every free page of every arena.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from typing import Any

log = logging.getLogger(__name__)


@functools.cache
def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_memory() -> bool:
    """Returns the C heap's free pages to the system (blocking, a few ms); False where not glibc."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
