"""The C heap settings `convers serve` makes: they take effect on glibc and are a no-op elsewhere."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from convers import native_memory

ON_GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and ctypes.util.find_library("c") is not None


@pytest.mark.skipif(not ON_GLIBC, reason="glibc only")
def test_the_arena_cap_and_the_trim_are_accepted_by_glibc() -> None:
    assert native_memory.limit_heap_arenas(2) is True
    assert native_memory.release_free_memory() is True


def test_without_a_c_library_both_say_they_did_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_memory, "_libc", lambda: None)
    assert native_memory.limit_heap_arenas(2) is False
    assert native_memory.release_free_memory() is False
