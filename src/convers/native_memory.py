"""Keeps the C heap small across sessions (glibc only): few arenas, and free pages given back.

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


# mallopt's parameter numbers (glibc's malloc.h).
M_ARENA_MAX = -8


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


def limit_heap_arenas(arenas: int) -> bool:
    """Caps how many malloc arenas the process may have (blocking); False where not glibc.

    glibc gives threads that allocate at the same time arenas of their own, up to 8 per core, and
    an arena's free pages serve only the threads that land on it; the TTS, STT, VAD and embedder
    all allocate from worker threads. Measured with 8 sessions open at once: 820 MB uncapped, 769
    and 795 MB with 2 arenas (`python -m convers.bench.reconnects`). Call before the workers start.
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))
