"""Process-level CPU inference tuning that changes speed, never results.

glibc returns every large block (> 32 MB, or > 128 KB before its adaptive threshold grows) to the
kernel when it is freed, so each inference re-faults and zeroes all its big activations: at
1024x2048 the x8-upsampled logits alone are 160 MB. Keeping freed memory in the heap (what
jemalloc/tcmalloc do, and what Intel recommends for PyTorch CPU inference) removes that cost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_applied = False


def tune_malloc(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Serve allocations up to ``mmap_threshold`` bytes from the heap and never trim it.

    Returns True when applied (glibc), False elsewhere (other libc: nothing changes). The
    setting lasts for the rest of the process; memory stays reserved after big inferences.
    """
    global _applied
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)))
    ok = bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))) and ok
    _applied = _applied or ok
    if ok:
        logger.debug("malloc tuned: mmap threshold %d, trim threshold %d",
                     mmap_threshold, trim_threshold)
    return ok


def malloc_tuned() -> bool:
    """Whether ``tune_malloc`` has been applied in this process."""
    return _applied
