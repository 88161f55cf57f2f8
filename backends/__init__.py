"""The backend switch: device strings -> (array namespace, device, dtype).

This is the only package that knows which array libraries exist. Everything above it
(``model``, ``scripts``) receives a :class:`Backend` or an array and works through the
array API standard namespace ``backend.xp``.

Device strings
--------------
``cpu``                NumPy.
``cuda`` / ``cuda:N``  CuPy on CUDA device N (0 by default); needs ``handgrad[cuda12]``
                       or ``handgrad[cuda13]`` and a working GPU.
``auto``               ``cuda:0`` when CuPy and a GPU work, otherwise ``cpu``; the choice is
                       logged (and warned about when CuPy is installed but unusable).
``strict``             array-api-strict on its default device (tests: proves the code uses
``strict:DEVICE``      only the standard), e.g. ``strict:device1``, its emulated 2nd device.

The ``HANDGRAD_DEVICE`` environment variable sets the default device string.

Randomness is not part of the standard: initial weights and shuffles are drawn on the
host by :func:`host_rng` (one NumPy Generator from one seed) and moved with
:meth:`Backend.asarray`, so every backend starts from identical numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import warnings
from typing import Any

import array_api_compat
import numpy as np

from backends.errors import ConfigError, DeviceUnavailableError, HandgradError
from backends.transfer import to_numpy

__all__ = [
    "DTYPES",
    "Backend",
    "ConfigError",
    "DeviceUnavailableError",
    "HandgradError",
    "env_device",
    "get_backend",
    "host_rng",
    "legacy_rng",
    "to_numpy",
]

logger = logging.getLogger("handgrad")

DTYPES = ("float32", "float64")
VALID_DEVICES = "cpu, cuda, cuda:N, auto, strict, strict:device1"
CUDA_EXTRAS = (
    "pip install -e '.[train,cuda12]' (CUDA 12) or -e '.[train,cuda13]' (CUDA 13) in the "
    "handgrad checkout"
)
STRICT_API_VERSION = "2024.12"  # Python scalars in maximum/where/logaddexp


@dataclasses.dataclass(frozen=True, repr=False)
class Backend:
    """One array library on one device with one floating dtype.

    ``xp`` is the array API namespace (array-api-compat's wrapper for NumPy and CuPy,
    array-api-strict itself). ``device`` is that library's device object and ``dtype`` its
    dtype object, ready to pass as ``device=`` and ``dtype=``.
    """

    name: str
    xp: Any
    device: Any
    dtype: Any
    is_gpu: bool
    spec: str

    @property
    def dtype_name(self) -> str:
        """The floating dtype as a string, ``'float32'`` or ``'float64'``."""
        return "float64" if self.dtype == self.xp.float64 else "float32"

    def __repr__(self) -> str:
        return f"Backend({self.name}, {self.spec}, {self.dtype_name})"

    def with_dtype(self, dtype: str) -> Backend:
        """The same library and device with another floating dtype."""
        return dataclasses.replace(self, dtype=_dtype(self.xp, dtype))

    def asarray(self, host_array, dtype=None, *, copy: bool = True):
        """Copy host data to this backend's device as ``dtype`` (default: the float dtype).

        A copy by default, on NumPy too, so in-place parameter updates never write into
        the caller's host array. ``copy=False`` is for data that is only read (training
        data): an array already on this device with this dtype is returned as it is, not
        copied again. Pass ``dtype=backend.xp.int64`` for labels and indices.
        """
        return self.xp.asarray(
            host_array,
            dtype=self.dtype if dtype is None else dtype,
            device=self.device,
            copy=True if copy else None,
        )

    def to_numpy(self, array) -> np.ndarray:
        """Copy an array of this backend to a new NumPy array on the host.

        The only way arrays cross to the host (CuPy refuses implicit conversion). Always a
        copy, so later in-place updates on the device never change what was returned.
        """
        return to_numpy(array)

    def synchronize(self) -> None:
        """Wait until queued device work is done (no-op on the host); use it around timings."""
        if self.is_gpu:
            self.device.synchronize()


def host_rng(seed: int | None) -> np.random.Generator:
    """The host random generator that draws all initial weights and shuffles."""
    return np.random.default_rng(seed)


def legacy_rng(seed: int) -> np.random.RandomState:
    """NumPy's legacy generator, as ``np.random.seed(seed)`` sets it (seed 004's weights)."""
    return np.random.RandomState(seed)


def env_device() -> str:
    """``$HANDGRAD_DEVICE``, stripped; "" when unset or blank (as the other variables)."""
    return os.environ.get("HANDGRAD_DEVICE", "").strip()


def get_backend(device: str | None = None, dtype: str = "float32") -> Backend:
    """Resolve a device string (see the module docstring) and a dtype name to a Backend.

    Raises ConfigError for an unknown device string or dtype and DeviceUnavailableError
    when the device is known but unusable here; each message names the fix.
    """
    env = env_device()
    from_env = device is None and bool(env)
    spec = device if device is not None else env or "auto"
    spec = str(spec).strip().lower()
    _dtype(np, dtype)
    try:
        return _resolve(spec, dtype)
    except HandgradError as exc:
        if from_env:  # the user never typed this device: say where it came from
            raise type(exc)(
                f"{exc} (the device came from the environment variable HANDGRAD_DEVICE="
                f"{os.environ['HANDGRAD_DEVICE']!r}; unset or change it)",
                setting="device",
            ) from None
        raise


def _resolve(spec: str, dtype: str) -> Backend:
    if spec == "auto":
        spec = _choose_auto()
    if spec == "cpu":
        xp = array_api_compat.array_namespace(np.empty(0))
        return Backend("numpy", xp, "cpu", _dtype(xp, dtype), False, "cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        return _cuda_backend(spec, dtype)
    if spec == "strict" or spec.startswith("strict:"):
        return _strict_backend(spec, dtype)
    raise ConfigError(f"unknown device {spec!r}; valid devices: {VALID_DEVICES}", setting="device")


def _dtype(xp, name: str):
    if name not in DTYPES:
        raise ConfigError(
            f"unknown dtype {name!r}; use one of: {', '.join(DTYPES)}", setting="dtype"
        )
    return getattr(xp, name)


@functools.cache
def probe_cuda() -> tuple[Any, int, str]:
    """Detect CUDA once: ``(cupy module or None, usable device count, reason if none)``.

    Imports CuPy, counts devices and runs one tiny kernel, so a missing driver or NVRTC
    shows up here and not in the middle of training. Cached; tests clear the cache.
    """
    try:
        import cupy
    except ModuleNotFoundError:
        return None, 0, "CuPy is not installed"
    except Exception as exc:  # a broken CuPy install (wrong CUDA libraries, ...)
        return None, 0, f"CuPy failed to import ({type(exc).__name__}: {exc})"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
        if count:
            float((cupy.arange(4, dtype=cupy.float32) * 2).sum())
    except Exception as exc:  # CUDARuntimeError, CompileException, ...
        return cupy, 0, f"{type(exc).__name__}: {exc}"
    if count == 0:
        return cupy, 0, "CUDA reports 0 devices"
    return cupy, count, ""


def _choose_auto() -> str:
    cupy, count, reason = probe_cuda()
    if count:
        logger.info("device auto: using cuda:0 (%d CUDA device(s) found)", count)
        return "cuda:0"
    if cupy is not None:
        warnings.warn(
            f"device auto: CuPy is installed but no GPU is usable ({reason}); using cpu",
            RuntimeWarning,
            stacklevel=3,
        )
    else:
        logger.info("device auto: using cpu (%s)", reason)
    return "cpu"


def _cuda_backend(spec: str, dtype: str) -> Backend:
    index_text = spec.partition(":")[2] or ("0" if spec == "cuda" else "")
    if not index_text.isdigit():
        raise ConfigError(
            f"unknown device {spec!r}; valid devices: {VALID_DEVICES}", setting="device"
        )
    index = int(index_text)
    cupy, count, reason = probe_cuda()
    if cupy is None:
        raise DeviceUnavailableError(
            f"device {spec!r} needs CuPy: {reason}. Install GPU support with {CUDA_EXTRAS},"
            " or use device 'cpu'",
            setting="device",
        )
    if count == 0:
        raise DeviceUnavailableError(
            f"device {spec!r}: CuPy is installed but no usable CUDA GPU or driver ({reason}). "
            "Check the GPU and driver with nvidia-smi, or use device 'cpu'",
            setting="device",
        )
    if index >= count:
        raise DeviceUnavailableError(
            f"device {spec!r}: only {count} CUDA device(s) found; use cuda:0"
            + (f" to cuda:{count - 1}" if count > 1 else ""),
            setting="device",
        )
    device = cupy.cuda.Device(index)
    device.use()  # CuPy runs kernels on the current device: make it this one
    xp = array_api_compat.array_namespace(cupy.empty(0))
    return Backend("cupy", xp, device, _dtype(xp, dtype), True, f"cuda:{index}")


def _strict_backend(spec: str, dtype: str) -> Backend:
    try:
        import array_api_strict as xp
    except ModuleNotFoundError as exc:
        raise DeviceUnavailableError(
            f"device {spec!r} needs array-api-strict: pip install -e '.[test]' in the handgrad "
            "checkout",
            setting="device",
        ) from exc
    xp.set_array_api_strict_flags(api_version=STRICT_API_VERSION)
    name = spec.partition(":")[2] or "CPU_DEVICE"
    devices = {d._device.lower(): d for d in xp.__array_namespace_info__().devices()}
    if name.lower() not in devices:
        valid = ", ".join(f"strict:{d}" for d in devices)
        raise ConfigError(
            f"unknown array-api-strict device {spec!r}; valid: strict, {valid}", setting="device"
        )
    return Backend("array_api_strict", xp, devices[name.lower()], _dtype(xp, dtype), False, spec)
