"""Files: ``.npz``, never pickled, always written atomically.

Three kinds, one layout. Parameters are stored under file names: ``w`` (n,) and ``b`` ()
for a single unit (a one-layer net with one output); ``W1`` (fan_in, fan_out), ``b1``,
``W2``, ... for every other network.

    parameter file  the parameters alone (``save_params``; what ``init`` reads)
    model file      the parameters plus ``meta``, one JSON text array describing the model
                    (see :mod:`model.trained`)
    checkpoint      a model file whose ``meta`` also holds ``training`` (config, epoch,
                    optimizer step, host RNG state, history), plus the optimizer buffers
                    as ``opt.<buffer>.<param>`` arrays

Everything loads with ``allow_pickle=False`` into host NumPy arrays, so a file saved on a
GPU loads on a CPU-only machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
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
    "load_host_params",
    "process_alive",
    "read_meta",
    "read_npz",
    "save_params",
    "to_file_names",
    "write_npz",
]


class CheckpointError(HandgradError, ValueError):
    """A parameter file, model file or checkpoint is unreadable, corrupt, or does not fit."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable) -> Path:
    """Write a file so that it is either complete or absent: ``write(f)`` fills a
    temporary file beside ``path``, which is flushed, synced and renamed over ``path``.

    A new file gets the usual permissions (0666 less the umask), a replaced one keeps
    its own. Temporary files that a
    killed process of this machine left beside ``path`` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = f"{socket.gethostname()}-"
    _remove_orphans(path, owner)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{owner}{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        os.fchmod(fd, mode)  # a replaced file keeps its permissions
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


def _remove_orphans(path: Path, owner: str) -> None:
    """Remove ``.<name>.<host>-<pid>.*.tmp`` files of this host whose process is gone."""
    for tmp in path.parent.glob(f".{path.name}.{owner}*.tmp"):
        pid = tmp.name[len(f".{path.name}.{owner}") :].split(".", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


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
    """File names -> internal names, checking that every name, type and shape fits
    ``model`` and that every value is finite."""
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
        if a.dtype.kind not in "iuf":
            raise CheckpointError(
                f"{source}: {name} holds {a.dtype} values; parameters must be real numbers"
            )
        if a.shape != shape:
            raise CheckpointError(
                f"{source}: {name} has shape {a.shape} but the model {model.sizes} needs "
                f"{shape}; use a file made for this architecture"
            )
        if not np.all(np.isfinite(a)):
            raise CheckpointError(f"{source}: {name} contains NaN or inf")
        params[name] = a.astype(np.float64)
    return params


def read_npz(path, names=None) -> dict[str, np.ndarray]:
    """Every array of an .npz file, or those of ``names`` it has (an .npz reads each array
    only when asked for it, so ``("meta",)`` skips the parameters), on the host; a
    CheckpointError for anything else."""
    if path is None or not str(path).strip():
        raise CheckpointError("the file path is empty; pass an existing .npz file")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path} does not exist or is not a file; give a model file (.npz), a run's "
            "checkpoint.npz or its folder"
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not an .npz archive (corrupt, truncated, or another kind of file); "
            "use another file or retrain"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files if names is None or k in names}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); "
            "use another file or retrain"
        ) from None


def read_meta(arrays: dict, source) -> dict | None:
    """The ``meta`` JSON entry of a model file or checkpoint; None for a parameter file."""
    if "meta" not in arrays:
        return None
    entry = arrays.pop("meta")
    try:
        meta = json.loads(str(entry)) if entry.dtype.kind == "U" and entry.ndim == 0 else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{source}: its 'meta' entry is not a JSON object; the file is damaged"
        )
    return meta


def write_npz(path, arrays: dict) -> Path:
    """Save host arrays as an uncompressed .npz, atomically."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def save_params(path, model, params: dict, backend) -> Path:
    """Save parameters (any backend) as an .npz of host arrays under file names."""
    host = {k: backend.to_numpy(v) for k, v in params.items()}
    return write_npz(path, to_file_names(model, host))


def load_host_params(path, model) -> dict[str, np.ndarray]:
    """Read the parameters of a parameter file, model file or checkpoint into host float64
    arrays, checked against ``model`` (any ``meta`` and optimizer buffers are ignored)."""
    arrays = read_npz(path)
    arrays.pop("meta", None)
    params = {k: v for k, v in arrays.items() if not k.startswith("opt.")}
    return from_file_names(model, params, str(path))


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
