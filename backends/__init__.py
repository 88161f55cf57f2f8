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
``torch``              PyTorch on the CPU (``torch:cpu`` too); needs ``handgrad[torch]``.
``torch:cuda[:N]``     PyTorch on CUDA device N (0 by default): a CUDA build of PyTorch.
``torch:mps``          PyTorch on Apple's GPU (Metal); float32 only (MPS has no float64).
``jax``                JAX on its default device (a GPU when JAX has one, else the CPU);
``jax:cpu``            needs ``handgrad[jax]``; ``jax:gpu:N`` (0 by default) needs JAX with
``jax:gpu[:N]``        GPU support.

A JAX backend turns on ``jax_enable_x64``: without it JAX computes a float64 request in
float32 and int64 labels and indices in int32 (warning on every such array). The switch
is process-global: from then on JAX's own defaults (``jnp.asarray(1.0)``, ``jnp.arange``)
are 64-bit in the whole process, for other code using JAX too. handgrad passes ``dtype=``
everywhere, so its float32 runs stay float32 (tested).

PyTorch goes through array-api-compat's wrapper (``array_api_compat.torch``); JAX's
``jax.numpy`` is itself an array API namespace (what ``array_namespace`` returns for a JAX
array). JAX arrays are immutable: code that updates arrays in place is a silent no-op there.

The ``HANDGRAD_DEVICE`` environment variable sets the default device string.

Randomness is not part of the standard: initial weights and shuffles are drawn on the
host by :func:`host_rng` (one NumPy Generator from one seed) and moved with
:meth:`Backend.asarray`, so every backend starts from identical numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import os
import warnings
from typing import Any

import array_api_compat
import numpy as np

from backends.errors import (
    DASK_REFUSED,
    ConfigError,
    DeviceUnavailableError,
    HandgradError,
    check_number,
)
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
VALID_DEVICES = (
    "cpu, cuda, cuda:N, auto, strict, strict:device1, torch, torch:cpu, torch:cuda, "
    "torch:cuda:N, torch:mps, jax, jax:cpu, jax:gpu, jax:gpu:N"
)
CUDA_EXTRAS = (
    "pip install -e '.[train,cuda12]' (CUDA 12) or -e '.[train,cuda13]' (CUDA 13) in the "
    "handgrad checkout"
)
# What each optional library is called in messages, and the extra that installs it.
LIBRARIES = {
    "torch": ("PyTorch", "pip install -e '.[torch]' in the handgrad checkout"),
    "jax": ("JAX", "pip install -e '.[jax]' in the handgrad checkout"),
}
STRICT_API_VERSION = "2024.12"  # Python scalars in maximum/where/logaddexp


@dataclasses.dataclass(frozen=True, repr=False)
class Backend:
    """One array library on one device with one floating dtype.

    ``xp`` is the array API namespace (array-api-compat's wrapper for NumPy, CuPy and
    PyTorch; array-api-strict and ``jax.numpy`` themselves). ``device`` is that library's
    device object and ``dtype`` its dtype object, ready to pass as ``device=`` and
    ``dtype=``.
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
        if not self.is_gpu:
            return
        if self.name == "torch":
            import torch

            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            else:
                torch.mps.synchronize()
        elif self.name == "jax":
            # JAX has no device-wide barrier: wait for a tiny computation queued behind
            # the earlier ones on the device (XLA runs a device's computations in order).
            (self.xp.zeros((), device=self.device) + 1).block_until_ready()
        else:
            self.device.synchronize()


def host_rng(seed: int | None) -> np.random.Generator:
    """The host random generator that draws all initial weights and shuffles, from a
    ``seed`` of 0 to 2**32 - 1 (None: fresh entropy); a ConfigError for any other seed."""
    if seed is not None:
        try:
            seed = check_number("seed", seed, integer=True, low=0, high=2**32 - 1)
        except ConfigError:
            raise ConfigError(
                f"seed must be an integer from 0 to 2**32 - 1 (4294967295), or None for a "
                f"fresh one; got {seed!r}",
                setting="seed",
            ) from None
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
    if spec == "torch" or spec.startswith("torch:"):
        return _torch_backend(spec, dtype)
    if spec == "jax" or spec.startswith("jax:"):
        return _jax_backend(spec, dtype)
    if spec == "dask" or spec.startswith("dask:"):
        raise ConfigError(DASK_REFUSED, setting="device")
    raise ConfigError(f"unknown device {spec!r}; valid devices: {VALID_DEVICES}", setting="device")


def _dtype(xp, name: str):
    if name not in DTYPES:
        raise ConfigError(
            f"unknown dtype {name!r}; use one of: {', '.join(DTYPES)}", setting="dtype"
        )
    if array_api_compat.is_jax_namespace(xp):
        _enable_x64()
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


def _check_index(spec: str, index: int, count: int, prefix: str) -> None:
    """A DeviceUnavailableError naming the devices there are, for GPU ``index`` of
    ``count``."""
    if index >= count:
        raise DeviceUnavailableError(
            f"device {spec!r}: only {count} CUDA device(s) found; use {prefix}:0"
            + (f" to {prefix}:{count - 1}" if count > 1 else ""),
            setting="device",
        )


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
    _check_index(spec, index, count, "cuda")
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


def _unknown(spec: str) -> ConfigError:
    return ConfigError(f"unknown device {spec!r}; valid devices: {VALID_DEVICES}", setting="device")


def _import_library(name: str, spec: str):
    """Import ``torch`` or ``jax`` for device ``spec``, or raise the error naming its extra."""
    label, extra = LIBRARIES[name]
    try:
        return importlib.import_module(name)
    except Exception as exc:  # not installed, or a broken install (missing libraries, ...)
        reason = (
            "it is not installed"
            if isinstance(exc, ModuleNotFoundError)
            else f"it failed to import ({type(exc).__name__}: {exc})"
        )
        raise DeviceUnavailableError(
            f"device {spec!r} needs {label}: {reason}. Install it with {extra}, or use device "
            "'cpu'",
            setting="device",
        ) from exc


def _device_index(text: str, spec: str) -> int:
    """N of a ``...:N`` suffix ("" means 0); anything but digits is an unknown device."""
    if not text:
        return 0
    if not text.isdigit():
        raise _unknown(spec)
    return int(text)


def _torch_backend(spec: str, dtype: str) -> Backend:
    kind, _, index_text = spec.partition(":")[2].partition(":")
    if (
        spec.endswith(":")
        or kind not in ("", "cpu", "cuda", "mps")
        or (index_text and kind != "cuda")
    ):
        raise _unknown(spec)
    index = _device_index(index_text, spec)
    torch = _import_library("torch", spec)
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = (
                "this PyTorch is a CPU-only build"
                if torch.version.cuda is None
                else "PyTorch finds no usable CUDA GPU or driver"
            )
            raise DeviceUnavailableError(
                f"device {spec!r}: {why}. Install a CUDA build of PyTorch and check the GPU with "
                "nvidia-smi, or use device 'torch' (the CPU)",
                setting="device",
            )
        _check_index(spec, index, count, "torch:cuda")
        device, canonical = torch.device("cuda", index), f"torch:cuda:{index}"
    elif kind == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceUnavailableError(
                f"device {spec!r}: PyTorch finds no MPS device (an Apple silicon GPU, macOS "
                "12.3 or later, a PyTorch built with MPS); use device 'torch' (the CPU)",
                setting="device",
            )
        if dtype == "float64":
            raise ConfigError(
                f"device {spec!r} has no float64 (Apple's MPS computes in float32 at most); "
                "use dtype float32, or device 'torch' (the CPU) for float64",
                setting="dtype",
            )
        device, canonical = torch.device("mps"), "torch:mps"
    else:
        device, canonical = torch.device("cpu"), "torch:cpu"
    xp = array_api_compat.array_namespace(torch.empty(0))
    return Backend("torch", xp, device, _dtype(xp, dtype), kind in ("cuda", "mps"), canonical)


def _jax_backend(spec: str, dtype: str) -> Backend:
    platform, _, index_text = spec.partition(":")[2].partition(":")
    if (
        spec.endswith(":")
        or platform not in ("", "cpu", "gpu")
        or (index_text and platform != "gpu")
    ):
        raise _unknown(spec)
    index = _device_index(index_text, spec)
    jax = _import_library("jax", spec)
    if platform == "":
        device = jax.devices()[0]  # the default backend's first device
        platform = device.platform
        index = jax.devices(platform).index(device) if platform == "gpu" else 0
    else:
        try:
            devices = jax.devices(platform)
        except RuntimeError as exc:  # "Unknown backend: 'gpu' requested, but no platforms..."
            raise DeviceUnavailableError(
                f"device {spec!r}: JAX finds no GPU ({str(exc).splitlines()[0]}). Install JAX "
                "with GPU support (the jax[cuda12] or jax[cuda13] extra of jax) and check the "
                "GPU with nvidia-smi, or use device 'jax' (the CPU here)",
                setting="device",
            ) from None
        if index >= len(devices):
            raise DeviceUnavailableError(
                f"device {spec!r}: only {len(devices)} JAX GPU device(s) found; use jax:gpu:0"
                + (f" to jax:gpu:{len(devices) - 1}" if len(devices) > 1 else ""),
                setting="device",
            )
        device = devices[index]
    canonical = {"cpu": "jax:cpu", "gpu": f"jax:gpu:{index}"}.get(platform, f"jax:{platform}")
    xp = array_api_compat.array_namespace(jax.numpy.empty(0, device=device))  # jax.numpy
    return Backend("jax", xp, device, _dtype(xp, dtype), platform != "cpu", canonical)


def _enable_x64() -> None:
    """Turn on ``jax_enable_x64`` for a JAX backend (process-global: see the module
    docstring), without which JAX silently computes float64 in float32 and int64 in int32;
    refuse the backend if JAX does not honour it."""
    import jax

    if jax.config.read("jax_enable_x64"):
        return
    jax.config.update("jax_enable_x64", True)
    if jax.numpy.zeros(1, dtype=jax.numpy.float64).dtype != jax.numpy.float64:
        raise DeviceUnavailableError(
            "JAX ignores jax_enable_x64 here and would compute float64 in float32 and int64 "
            "in int32; set JAX_ENABLE_X64=1 before Python starts",
            setting="device",
        )
