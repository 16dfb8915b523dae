"""How the worker's C heap gives memory back to the operating system.

Kafka fetches and produced batches (hundreds of KiB each), event payloads and the large dicts
are allocated with ``malloc``, not Python's small-object allocator. glibc serves a request above
its mmap threshold (128 KiB) with its own mapping, but raises that threshold to the size of each
such block freed, up to 32 MiB; from then on the fetch buffers come from the heap, which glibc
shrinks only from its top, and it fills with free pages. Setting the threshold fixes it (glibc
then stops adjusting it); what still frees in the middle of the heap is released by
``malloc_trim(0)`` every few seconds. docs/performance.md has what both saved.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

#: glibc's ``M_MMAP_THRESHOLD`` parameter of ``mallopt`` (malloc.h)
_M_MMAP_THRESHOLD = -3
#: blocks of this size or more get their own mapping, returned when freed (glibc's default)
MMAP_THRESHOLD = 128 * 1024
#: seconds between releases in a running worker
RELEASE_INTERVAL_S = 10.0


def _glibc() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_libc = _glibc()


def fix_mmap_threshold() -> bool:
    """Keep large blocks in their own mappings for good; False where the C library is not glibc."""
    return _libc is not None and _libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS; False where the C library cannot."""
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True
