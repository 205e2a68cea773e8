"""How a process of this project allocates: buffers of image size go back to the system when freed.

A run reads, downloads, decodes and writes images of about 250 KB, each in transient buffers. glibc
serves a freed buffer of that size from its heap the next time (its mmap threshold rises to the
largest buffer freed, up to 32 MB), so the heap keeps the high-water mark of every phase; pyarrow's
default pool (mimalloc) keeps what it has touched too. Fixing glibc's threshold at its default of
128 KiB, without the rise, and giving Arrow jemalloc (which hands back what it frees) lowers the
whole job's peak RSS by a tenth or more at the same speed (README, "The whole job"). Arrow on the
system allocator would save a little more, but each of its multi-megabyte buffers would then be a
fresh mapping: that doubled the export's time. Both apply to the whole process, on Linux; the
package applies them when it is imported (flux_pipeline/__init__.py)."""

from __future__ import annotations

import ctypes
import os
import sys

ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"
"""Read by pyarrow once, when it loads: set before any import of pyarrow, and only if unset."""
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""mallopt's parameter numbers (malloc.h). Setting the mmap threshold turns off its rise, but not
the rise of the trim threshold (to twice the mmap threshold) that came with it before."""
MMAP_THRESHOLD = 128 * 1024


def return_large_buffers_to_the_system() -> None:
    if sys.platform != "linux":
        return  # pyarrow's wheels have jemalloc on Linux only; other platforms keep their defaults
    os.environ.setdefault(ARROW_POOL_VARIABLE, "jemalloc")
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc's; not every libc has it
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
