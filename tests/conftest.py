"""One backend grid for every test: numpy, array-api-strict (default device and its
emulated ``device1``), cupy, PyTorch (CPU; CUDA and MPS) and JAX (CPU; GPU). Without a
usable GPU the cupy cases skip with CUDA's reason; ``HANDGRAD_REQUIRE_GPU=1`` turns that
skip into a failure (``ci/gpu.sh``). The PyTorch and JAX cases skip with the backend
switch's own message (the library is not installed: the extra to install; no such
device) whatever HANDGRAD_REQUIRE_GPU says; ``torch-mps`` always skips in this float64
grid, MPS having no float64.

Fixtures: ``backend`` (every device of the grid), ``other_backend`` (every device but
numpy, for comparisons with the NumPy reference) and ``numpy_backend`` (long training
runs, whose results are checked once: the backends' agreement is tested over short runs)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from backends import ConfigError, DeviceUnavailableError, get_backend, probe_cuda

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

DEVICES = [
    pytest.param("cpu", id="numpy"),
    pytest.param("strict", id="strict"),
    pytest.param("strict:device1", id="strict-device1"),
    pytest.param("cuda", id="cupy", marks=pytest.mark.gpu),
    pytest.param("torch", id="torch"),
    pytest.param("jax:cpu", id="jax"),
    pytest.param("torch:cuda", id="torch-cuda", marks=pytest.mark.gpu),
    pytest.param("torch:mps", id="torch-mps", marks=pytest.mark.gpu),
    pytest.param("jax:gpu", id="jax-gpu", marks=pytest.mark.gpu),
]


def require_device(spec: str) -> str:
    """Skip (or, with HANDGRAD_REQUIRE_GPU=1, fail) a cuda case when no GPU is usable; skip
    a torch or jax case when the library or its device is missing, with the reason."""
    if spec.startswith("cuda"):
        _, count, reason = probe_cuda()
        if not count:
            if os.environ.get("HANDGRAD_REQUIRE_GPU") == "1":
                pytest.fail(f"HANDGRAD_REQUIRE_GPU=1 but no usable CUDA GPU: {reason}")
            pytest.skip(f"no usable CUDA GPU: {reason}")
    elif spec.startswith(("torch", "jax")):
        try:
            get_backend(spec, "float64")
        except (DeviceUnavailableError, ConfigError) as exc:  # ConfigError: MPS's float64
            pytest.skip(str(exc))
    return spec


@pytest.fixture(params=DEVICES)
def device_spec(request) -> str:
    """A device string of the grid, skipped when that device is unusable here."""
    return require_device(request.param)


@pytest.fixture
def backend(device_spec):
    """The float64 Backend of the grid's device (``backend.with_dtype`` for float32)."""
    return get_backend(device_spec, "float64")


@pytest.fixture
def xp(backend):
    return backend.xp


@pytest.fixture(params=[p for p in DEVICES if p.id != "numpy"])
def other_backend(request):
    """The float64 Backend of every device of the grid but numpy, for the tests that
    compare a backend with the NumPy reference: numpy against itself can never fail."""
    return get_backend(require_device(request.param), "float64")


@pytest.fixture
def numpy_backend():
    """The float64 NumPy Backend, for long training runs."""
    return get_backend("cpu", "float64")
