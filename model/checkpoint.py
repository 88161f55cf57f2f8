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
    "WriteError",
    "atomic_write",
    "device_copy",
    "from_file_names",
    "host_copy",
    "process_alive",
    "read_npz",
    "save_params",
    "to_file_names",
    "write_npz",
]


class CheckpointError(HandgradError, ValueError):
    """A parameter file, model file or checkpoint is unreadable, corrupt, or does not fit."""


class WriteError(HandgradError, OSError):
    """A file could not be written (a full disk, no permission, a read-only folder); the
    file it would have replaced is untouched."""


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
    try:
        return _atomic_write(path, write)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise WriteError(
            f"cannot write {path}: {reason}; nothing there was replaced. Free space on that "
            "disk (or make the folder writable), or write elsewhere"
        ) from None


def _atomic_write(path: Path, write: Callable) -> Path:
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


def from_file_names(model, arrays: dict, source: str, *, only=None) -> dict[str, np.ndarray]:
    """File names -> internal names, checking that every name, type and shape fits
    ``model`` (``only``: just those of its parameters), that no array is left over, and
    that every value is finite; host float64 arrays."""
    arrays = dict(arrays)
    if _is_single_unit(model) and "w" in arrays:
        arrays["W1"] = np.asarray(arrays.pop("w")).reshape(-1, 1)
        if "b" in arrays:
            arrays["b1"] = np.asarray(arrays.pop("b")).reshape(1)
    shapes = {k: s for k, s in model.param_shapes().items() if only is None or k in only}
    extra = sorted(set(arrays) - set(shapes))
    if extra:
        bias = " (the model has no biases)" if not model.bias and any(
            k.startswith("b") for k in extra) else ""  # fmt: skip
        raise CheckpointError(
            f"{source} holds arrays the model {model.sizes} does not have: "
            f"{', '.join(extra)}{bias}; use a file made for this architecture"
        )
    params = {}
    for name, shape in shapes.items():
        if name not in arrays:
            raise CheckpointError(
                f"{source} has no parameter {name!r} (it has: {', '.join(sorted(arrays))}); "
                f"the model {model.sizes} needs {', '.join(shapes)}"
            )
        a = np.asarray(arrays[name])
        if a.dtype.kind != "f":
            raise CheckpointError(
                f"{source}: {name} holds {a.dtype} values; parameters are floating-point "
                "numbers (a file handgrad wrote holds float32 or float64)"
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


def write_npz(path, arrays: dict) -> Path:
    """Save host arrays as an uncompressed .npz, atomically."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def save_params(path, model, params: dict, backend) -> Path:
    """Save parameters (any backend) as an .npz of host arrays under file names."""
    host = {k: backend.to_numpy(v) for k, v in params.items()}
    return write_npz(path, to_file_names(model, host))


def host_copy(tree, backend):
    """A params or optimizer-state dict with every array copied to host NumPy."""
    if isinstance(tree, dict):
        return {k: host_copy(v, backend) for k, v in tree.items()}
    return tree if tree is None or isinstance(tree, int | float | list) else backend.to_numpy(tree)


def device_copy(tree, backend):
    """The inverse of :func:`host_copy`: every host array moved to ``backend``."""
    if isinstance(tree, dict):
        return {k: device_copy(v, backend) for k, v in tree.items()}
    return tree if tree is None or isinstance(tree, int | float | list) else backend.asarray(tree)
