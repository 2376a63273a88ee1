"""Process-level memory settings for the long-running agent (glibc malloc)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from pathlib import Path

#: glibc's mallopt parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Two arenas: glibc's default (8 per core) lets every thread grow its own heap, and
#: the agent's few worker threads would then hold tens of MB each of freed memory.
ARENA_MAX = 2
#: A fixed mmap threshold: glibc otherwise raises it after every large free, up to
#: 32 MB, so that the windows and payload buffers of a burst end up in the heap,
#: which then cannot shrink past the last live object. Fixed, blocks of 256 KB and
#: more come from mmap and go back to the system when freed.
MMAP_THRESHOLD = 256 * 1024
#: Give back free memory at the top of the heap once 1 MB of it accumulates.
TRIM_THRESHOLD = 1024 * 1024


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # Once per process: find_library runs `ldconfig -p` in a subprocess, and the
    # housekeeping loop trims every few seconds.
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = ARENA_MAX) -> bool:
    """Cap glibc malloc arenas and fix its thresholds; must run before worker threads
    start. False if this is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    try:
        return all(
            libc.mallopt(param, value)
            for param, value in (
                (_M_ARENA_MAX, arenas),
                (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            )
        )
    except AttributeError:
        return False


def rss_mb() -> float | None:
    """This process's resident memory in MB (Linux; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def release_free_memory() -> bool:
    """Hand freed heap pages back to the system (glibc ``malloc_trim``); False if not
    glibc. Cheap enough for a housekeeping tick: after a burst, free memory inside the
    heap would otherwise stay in the agent's RSS."""
    libc = _libc()
    if libc is None:
        return False
    try:
        return bool(libc.malloc_trim(0))
    except AttributeError:
        return False
