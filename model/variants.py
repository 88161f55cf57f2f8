"""Which per-operation variants the training step uses on a namespace.

A small-batch step on the CPU is dispatch-bound: a 64-64-10 step makes ~35 array calls
of a few microseconds each, and allocating a fresh array for most of them is a large
part of that. NumPy's and CuPy's functions take ``out=``, so there the operations of the
step (activations, the loss gradient, the optimizers' temporaries) write into arrays the
step already owns; every other namespace runs the same operations' portable code, the
reference the variants are tested against. Nothing else changes: the same layers, the
same loop, the same math (the variants agree with the portable code bit for bit, or to
rounding where the summation order differs).

``HANDGRAD_FAST=0`` turns the variants off (the portable code everywhere).
"""

from __future__ import annotations

import functools
import os

from array_api_compat import device, is_cupy_namespace, is_numpy_namespace

from backends.errors import ConfigError

__all__ = ["ENV_VAR", "fast_enabled", "ones", "step_name", "writes_in_place"]

ENV_VAR = "HANDGRAD_FAST"


def fast_enabled() -> bool:
    """``$HANDGRAD_FAST``: 1, unset or blank for on, 0 for off (spaces around ignored);
    anything else is a ConfigError."""
    raw = os.environ.get(ENV_VAR, "")
    value = raw.strip() or "1"
    if value not in ("0", "1"):
        raise ConfigError(
            f"the environment variable {ENV_VAR}={raw!r} is not understood; set it to 1 "
            "(the in-place variants where the namespace allows them, the default) or 0 (the "
            "portable code always), or unset it"
        )
    return value == "1"


def writes_in_place(xp) -> bool:
    """Whether the step on namespace ``xp`` takes the in-place variants: NumPy or CuPy,
    and ``$HANDGRAD_FAST`` not 0."""
    return (is_numpy_namespace(xp) or is_cupy_namespace(xp)) and fast_enabled()


def step_name(xp) -> str:
    """``"in-place"`` or ``"portable"``: what a run records of the step it took."""
    return "in-place" if writes_in_place(xp) else "portable"


def ones(shape: tuple, like, /, *, xp, keep: bool = False):
    """An array of ones of ``shape`` with ``like``'s dtype on its device, for sums written
    as products with ones (1^T A: one small matrix product, where a reduction through the
    namespace's wrappers costs three times as much on NumPy). ``keep`` (the in-place
    variants, NumPy and CuPy): the same array for every call with this shape, dtype and
    device, never written to (:func:`kept_ones`)."""
    if keep:
        return kept_ones(shape, like.dtype, getattr(like, "device", None), xp)
    return xp.ones(shape, dtype=like.dtype, device=device(like))


@functools.lru_cache(maxsize=64)
def kept_ones(shape: tuple, dtype, where, xp):
    """The ones of :func:`ones` kept for the in-place variants, one array per (shape,
    dtype, device); callers in the step call this directly (one C call, not two)."""
    return (
        xp.ones(shape, dtype=dtype, device=where)
        if where is not None
        else xp.ones(shape, dtype=dtype)
    )
