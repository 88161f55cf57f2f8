"""Parameter files and checkpoints: ``.npz``, never pickled, always written atomically.

Parameter names on disk (and in ``scripts/reproduce.py --json``): ``w`` (n,) and ``b`` ()
for a single unit (a one-layer net with one output); ``W1`` (fan_in, fan_out), ``b1``,
``W2``, ... for every other network. A checkpoint holds the same arrays plus the optimizer
buffers (``opt.<buffer>.<param>``) and one JSON text array ``meta`` (config, epoch,
optimizer step, host RNG state, history). Everything loads with ``allow_pickle=False``
into host NumPy arrays, so a checkpoint saved on a GPU loads on a CPU-only machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from backends.errors import HandgradError

__all__ = [
    "CheckpointError",
    "atomic_write",
    "device_copy",
    "from_file_names",
    "host_copy",
    "load_checkpoint",
    "load_host_params",
    "save_checkpoint",
    "save_params",
    "to_file_names",
]

FORMAT = "handgrad-checkpoint-1"


class CheckpointError(HandgradError, ValueError):
    """A parameter file or checkpoint is unreadable, corrupt, or does not fit the model."""


def atomic_write(path, write: Callable) -> Path:
    """Write a file so that it is either complete or absent: ``write(f)`` fills a
    temporary file beside ``path``, which is flushed, synced and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _is_single_unit(model) -> bool:
    return model.depth == 1 and model.sizes[-1] == 1


def to_file_names(model, host_params: dict) -> dict[str, np.ndarray]:
    """Internal names (W1, b1, ...) -> file names (w, b for a single unit)."""
    if not _is_single_unit(model):
        return dict(host_params)
    named = {"w": host_params["W1"][:, 0]}
    if model.bias:
        named["b"] = host_params["b1"][0]
    return named


def from_file_names(model, arrays: dict, source: str) -> dict[str, np.ndarray]:
    """File names -> internal names, checking that every name and shape fits ``model``."""
    arrays = dict(arrays)
    if _is_single_unit(model) and "w" in arrays:
        arrays["W1"] = np.asarray(arrays.pop("w")).reshape(-1, 1)
        if "b" in arrays:
            arrays["b1"] = np.asarray(arrays.pop("b")).reshape(1)
    params = {}
    for name, shape in model.param_shapes().items():
        if name not in arrays:
            raise CheckpointError(
                f"{source} has no parameter {name!r} (it has: {', '.join(sorted(arrays))}); "
                f"the model {model.sizes} needs {', '.join(model.param_shapes())}"
            )
        a = np.asarray(arrays[name])
        if a.shape != shape:
            raise CheckpointError(
                f"{source}: {name} has shape {a.shape} but the model {model.sizes} needs "
                f"{shape}; pass the matching --hidden/--model or another file"
            )
        if not np.all(np.isfinite(a)):
            raise CheckpointError(f"{source}: {name} contains NaN or inf")
        params[name] = a
    return params


def _read_npz(path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); "
            "use another file or retrain"
        ) from None


def _write_npz(path, arrays: dict) -> Path:
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def save_params(path, model, params: dict, backend) -> Path:
    """Save parameters (any backend) as an .npz of host arrays under file names."""
    host = {k: backend.to_numpy(v) for k, v in params.items()}
    return _write_npz(path, to_file_names(model, host))


def load_host_params(path, model) -> dict[str, np.ndarray]:
    """Read an .npz of parameters into host arrays, checked against ``model``."""
    return from_file_names(model, _read_npz(path), str(path))


def host_copy(tree, backend):
    """A params or optimizer-state dict with every array copied to host NumPy."""
    if isinstance(tree, dict):
        return {k: host_copy(v, backend) for k, v in tree.items()}
    return tree if isinstance(tree, int | float) else backend.to_numpy(tree)


def device_copy(tree, backend):
    """The inverse of :func:`host_copy`: every host array moved to ``backend``."""
    if isinstance(tree, dict):
        return {k: device_copy(v, backend) for k, v in tree.items()}
    return tree if tree is None or isinstance(tree, int | float) else backend.asarray(tree)


def save_checkpoint(path, *, model, params, state, meta: dict) -> Path:
    """Host ``params`` and optimizer ``state`` (see :func:`host_copy`) plus ``meta``:
    buffers as ``opt.<buffer>.<param>`` arrays, the step and ``meta`` as JSON text."""
    arrays = to_file_names(model, params)
    for key, value in state.items():
        if isinstance(value, dict):
            arrays.update({f"opt.{key}.{k}": v for k, v in value.items()})
    meta = {**meta, "format": FORMAT, "optimizer_step": state["step"]}
    arrays["meta"] = np.array(json.dumps(meta))
    return _write_npz(path, arrays)


def load_checkpoint(path, model_for: Callable):
    """Read a checkpoint into host arrays: returns ``(model, params, state, meta)``.

    ``model_for(meta)`` builds the model from the stored config; the arrays are checked
    against it. Move params and state to a device with :func:`device_copy`."""
    arrays = _read_npz(path)
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a handgrad checkpoint (no valid 'meta' entry); "
            "pass a run folder or checkpoint.npz written by scripts/train.py"
        )
    model = model_for(meta)
    state: dict = {"step": meta["optimizer_step"]}
    for key in [k for k in arrays if k.startswith("opt.")]:
        _, buffer, name = key.split(".", 2)
        state.setdefault(buffer, {})[name] = arrays.pop(key)
    return model, from_file_names(model, arrays, str(path)), state, meta
