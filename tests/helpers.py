"""Shared checks for the tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, device


def assert_on(backend, array, dtype=None):
    """The array kept the backend's namespace, device and (float) dtype."""
    assert array_namespace(array) is backend.xp
    assert device(array) == backend.device
    assert array.dtype == (backend.dtype if dtype is None else dtype)


def tolerance(backend) -> float:
    """Relative tolerance for comparing backends: float64 1e-12, float32 1e-5."""
    return 1e-12 if backend.dtype_name == "float64" else 1e-5


def assert_close(actual, expected, rtol, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)
