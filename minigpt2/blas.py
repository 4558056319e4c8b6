"""threads -> NumPy's BLAS: how many threads the matrix products use, set while the program runs.

NumPy's wheels ship OpenBLAS, which starts one thread per core and keeps them spinning for a while after
each product. For the products of a large model that is the right choice; for a small one (n_embd 32-128) a
product takes microseconds and the waiting threads cost more than they give, worst on a busy machine (the
measurements are in docs/performance.md). The environment
variable OPENBLAS_NUM_THREADS only works before NumPy is imported; this module finds the OpenBLAS that
NumPy loaded and calls its own openblas_set_num_threads (Linux; elsewhere it reports that it cannot).
"""

from __future__ import annotations

import ctypes
import os
from functools import lru_cache

from .checks import is_whole

# the names OpenBLAS builds export it under: NumPy's scipy-openblas (64-bit ints, prefixed), plain OpenBLAS
SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads_64_", "openblas_set_num_threads64_",
           "openblas_set_num_threads")
GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads_64_", "openblas_get_num_threads64_",
           "openblas_get_num_threads")


@lru_cache(maxsize=1)
def _openblas() -> ctypes.CDLL | None:
    """The OpenBLAS library this process has loaded (through NumPy), or None."""
    import numpy  # noqa: F401  (NumPy loads its BLAS on import)

    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line.split()[-1]}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if any(hasattr(lib, name) for name in SETTERS):
            return lib
    return None


def blas_threads() -> int | None:
    """The number of threads NumPy's OpenBLAS uses now, or None if it cannot be asked."""
    lib = _openblas()
    for name in GETTERS if lib is not None else ():
        if hasattr(lib, name):
            return int(getattr(lib, name)())
    return None


def set_blas_threads(n: int) -> bool:
    """Make NumPy's matrix products use `n` threads from now on; False if this BLAS cannot be told."""
    if not is_whole(n) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    lib = _openblas()
    for name in SETTERS if lib is not None else ():
        if hasattr(lib, name):
            getattr(lib, name)(ctypes.c_int(n))
            return True
    return False


SMALL_MODEL_WIDTH = 256  # n_embd at or below which one thread is the default for training


def default_threads(n_embd: int, processes: int = 1) -> int:
    """Threads for training a model of width `n_embd`: one for small models (their products are too short to
    share), else the cores shared among the run's `processes` (MPI ranks on this machine)."""
    return 1 if n_embd <= SMALL_MODEL_WIDTH else max(1, (os.cpu_count() or 1) // processes)
