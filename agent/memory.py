"""Process-level memory settings for the long-running agent."""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc's mallopt parameter for the number of malloc arenas.
_M_ARENA_MAX = -8
#: Two arenas: glibc's default (8 per core) lets every thread grow its own heap, and
#: the agent's few worker threads would then hold tens of MB each of freed memory.
ARENA_MAX = 2


def limit_malloc_arenas(arenas: int = ARENA_MAX) -> bool:
    """Cap glibc malloc arenas; must run before worker threads start. False if not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
