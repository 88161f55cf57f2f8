"""BLAS threads of the NumPy backend, set through threadpoolctl.

A small-batch training step is dozens of small matrix products. OpenBLAS splits each one
over its threads; on a 2-core machine where another process keeps one core busy, a
product that waits for its second thread takes many times longer than one thread alone
(measured on digits 64-512-10, batch 64: 0.42 s on 1 thread either way, 1.24 s on 2
threads with one core busy; the default digits job, full batch 1437 x 64 x 64 = 5.9M
multiply-adds: 0.3 s on 1 thread, 7-9 s on 2 with the machine busy). Products of a few
million multiply-adds gain nothing from a second thread even on an idle machine, and
larger ones (784-256, batch 128: 25M multiply-adds) gain ~1.8x on an idle machine but
lose far more on a busy one. So :func:`blas_threads` picks one thread when the step's
largest product is at most :data:`SMALL_GEMM` multiply-adds and leaves the library's
default otherwise.

The choice is overridden, in this order, by :func:`set_blas_threads` (the library
setting) and the environment variable ``HANDGRAD_BLAS_THREADS`` (a positive integer, or
``default`` to leave BLAS alone). Either refuses more than :data:`MAX_THREADS_PER_CORE`
threads per core of the machine (``os.cpu_count()``): threads beyond the cores only wait
for each other (OpenBLAS caps them at its build's maximum anyway), so such a number is
taken for a typo (``99999999999`` was handed to the library, which truncated it) rather
than a choice; four per core still lets one measure oversubscription.
"""

from __future__ import annotations

import contextlib
import functools
import os

from backends.errors import ConfigError

__all__ = [
    "ENV_VAR",
    "MAX_THREADS_PER_CORE",
    "SMALL_GEMM",
    "blas_info",
    "blas_threads",
    "limit_blas",
    "max_blas_threads",
    "set_blas_threads",
]

ENV_VAR = "HANDGRAD_BLAS_THREADS"
SMALL_GEMM = 32_000_000  # multiply-adds: at or below this, one BLAS thread
MAX_THREADS_PER_CORE = 4  # more BLAS threads than this per core are refused

_setting: dict[str, int | str | None] = {"threads": None}


def set_blas_threads(threads: int | str | None) -> None:
    """Set the BLAS threads of NumPy training: a positive int, ``"default"`` (leave the
    library's own count), or None (back to the automatic choice and the environment)."""
    _setting["threads"] = None if threads is None else _parse(threads, "set_blas_threads")


def _parse(value, source: str) -> int | str:
    if isinstance(value, str) and value.strip().lower() == "default":
        return "default"
    try:
        threads = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float("inf")
        threads = 0
    if threads < 1 or (isinstance(value, float) and value != threads):
        raise ConfigError(
            f"{source}: BLAS threads must be a positive integer or 'default', got {value!r}"
        )
    most = max_blas_threads()
    if threads > most:
        raise ConfigError(
            f"{source}: BLAS threads must be at most {most} ({MAX_THREADS_PER_CORE} per core "
            f"of this machine's {most // MAX_THREADS_PER_CORE}), got {value!r}; use at most "
            f"{most // MAX_THREADS_PER_CORE}, or 'default'"
        )
    return threads


def max_blas_threads() -> int:
    """The most BLAS threads a setting may ask for: :data:`MAX_THREADS_PER_CORE` per core
    of ``os.cpu_count()``."""
    return MAX_THREADS_PER_CORE * (os.cpu_count() or 1)


def blas_threads(largest_gemm: int) -> int | None:
    """BLAS threads for a step whose largest matrix product has ``largest_gemm``
    multiply-adds (m k n): the library setting, else ``$HANDGRAD_BLAS_THREADS``, else 1
    for small products; None means "leave BLAS's default"."""
    choice: int | str | None = _setting["threads"]
    if choice is None and os.environ.get(ENV_VAR, "").strip():
        choice = _parse(os.environ[ENV_VAR], f"the environment variable {ENV_VAR}")
    if choice is None:
        choice = 1 if largest_gemm <= SMALL_GEMM else "default"
    return None if choice == "default" else int(choice)


@functools.cache
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # inspects the loaded libraries once (milliseconds)


def limit_blas(threads: int | None):
    """A context manager running its body with ``threads`` BLAS threads (None: unchanged)."""
    if threads is None:
        return contextlib.nullcontext()
    return _controller().limit(limits=threads, user_api="blas")


def blas_info() -> dict:
    """The BLAS NumPy uses, for the record: ``{"library", "version", "threads"}`` (SciPy
    may load a second one; NumPy's is the one whose path names numpy)."""
    blas = [lib for lib in _controller().info() if lib["user_api"] == "blas"]
    if not blas:
        return {"library": "none found", "version": "", "threads": 0}
    lib = next((b for b in blas if "numpy" in b["filepath"]), blas[0])
    return {
        "library": lib["internal_api"],
        "version": lib.get("version") or "",
        "threads": lib["num_threads"],
    }
