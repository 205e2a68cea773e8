"""How a process of this project allocates: buffers of image size go back to the system when freed.

A run reads, downloads, decodes and writes images of about 250 KB, each in transient buffers. glibc
serves a freed buffer of that size from its heap the next time (its mmap threshold rises to the
largest buffer freed, up to 32 MB), so the heap keeps the high-water mark of every phase; pyarrow's
default pool (mimalloc) keeps what it has touched too. Fixing glibc's threshold at its default of
128 KiB, without the rise, and giving Arrow jemalloc, told to hand back what it frees at once
rather than after its decay time, lowers the whole job's peak RSS by about 15% (README,
"The whole job"). Arrow on the system allocator would save a little more, but each of its
multi-megabyte buffers would then be a fresh mapping: that doubled the export's time. They apply to
the whole process, on Linux; the package applies them when it is imported
(flux_pipeline/__init__.py)."""

from __future__ import annotations

import ctypes
import os
import sys

ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"
"""Read by pyarrow once, when it loads: set before any import of pyarrow, and only if unset."""
ARROW_JEMALLOC_VARIABLE, ARROW_JEMALLOC_CONF = "JE_ARROW_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0"
"""Read by Arrow's jemalloc when it starts (its options, as MALLOC_CONF is for jemalloc); only if
unset. With no decay, the export's row groups (a few MB each, allocated and freed in turn) do not
pile up: the whole job's peak RSS 293 -> 284 MB at 256 images and 300 -> 291 MB at 1024, for
0.15 and 0.5-0.9 s more of export (benchmarks/whole_job.py)."""
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""mallopt's parameter numbers (malloc.h). Setting the mmap threshold turns off its rise, but not
the rise of the trim threshold (to twice the mmap threshold) that came with it before."""
MMAP_THRESHOLD = 128 * 1024


def return_large_buffers_to_the_system() -> None:
    if sys.platform != "linux":
        return  # pyarrow's wheels have jemalloc on Linux only; other platforms keep their defaults
    os.environ.setdefault(ARROW_POOL_VARIABLE, "jemalloc")
    os.environ.setdefault(ARROW_JEMALLOC_VARIABLE, ARROW_JEMALLOC_CONF)
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc's; not every libc has it
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
