"""Shared checks for the tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj

from backends import to_numpy


def assert_on(backend, array, dtype=None):
    """The array kept the backend's namespace, device and (float) dtype."""
    assert array_namespace(array) is backend.xp
    assert device(array) == backend.device
    assert array.dtype == (backend.dtype if dtype is None else dtype)


def tolerance(backend) -> float:
    """Relative tolerance for comparing backends: float64 1e-12, float32 1e-5."""
    return 1e-12 if backend.dtype_name == "float64" else 1e-5


def host(a) -> np.ndarray:
    """``a`` as a NumPy array: device arrays of any backend through ``backends.to_numpy``
    (never ``np.asarray`` on them: CuPy refuses it, others may copy silently or not at all),
    host data (NumPy arrays, Python numbers and lists) as it is."""
    if is_array_api_obj(a) and not isinstance(a, np.ndarray | np.generic):
        return to_numpy(a)
    return np.asarray(a)


def assert_close(actual, expected, rtol, atol=0.0):
    np.testing.assert_allclose(host(actual), host(expected), rtol=rtol, atol=atol)


def random_targets(backend, loss, shape, rng):
    """Targets of ``shape`` (n, k) that ``loss`` accepts, drawn from ``rng``: n class
    indices below k (int64) for cross_entropy, 0/1 floats for bce, N(0, 1) otherwise."""
    if loss == "cross_entropy":
        return backend.asarray(rng.integers(0, shape[1], shape[0]), dtype=backend.xp.int64)
    if loss == "bce":
        return backend.asarray(rng.integers(0, 2, shape))
    return backend.asarray(rng.normal(size=shape))
