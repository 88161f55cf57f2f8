"""Model files, run checkpoints and sweep checkpoints: one format, one writer
(:func:`write_model_file`), one reader (:func:`read_model_file`). The schema, field by
field, with the version each field appeared in, is in docs/file-format.md.

A file is an uncompressed ``.npz``, never pickled, written atomically: the parameters as
arrays (file names: ``w``, ``b`` for a single unit, the network's names ``W1``, ``b1``,
``gamma1``, ... otherwise), for a sweep stacked along a leading axis of R replicas;
optimizer buffers as ``opt.<buffer>.<name>`` (checkpoints); and one JSON text entry
``meta``::

    format, format_version   "handgrad-model", 3
    handgrad_version         the version that wrote it
    network                  {"loss", "layers": [...]} (:meth:`Sequential.to_json`)
    dtype                    the training dtype, "float32" or "float64"
    classes                  the class labels in output order (classifiers), else null
    preprocessing            {"standardize": {"mean": [...], "sd": [...]} or null}
    replicas                 null, or R for a sweep's replica-stacked arrays
    training                 checkpoints only: config, epoch, RNG state, history, changes,
                             optimizer step, data fingerprint, step; a sweep's grid and
                             diverged replicas; ``optimizer_state`` (below)

Every older version reads: format 2 model files and checkpoints (``model``: an MLP's
sizes, activation, output, loss, bias; no ``replicas``) and format 1 sweep checkpoints
(``"handgrad-sweep"``). A field a newer version adds gets a default when it is missing,
so adding one never breaks an existing file. Reading checks every field, name, dtype,
shape and value, and raises :class:`CheckpointError` naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import metadata
from pathlib import Path

import numpy as np

from backends import DTYPES
from backends.errors import DataError, HandgradError
from model.checkpoint import CheckpointError, from_file_names, read_npz, to_file_names, write_npz
from model.mlp import MLP
from model.network import Sequential
from model.preprocessing import LabelEncoder, Standardizer

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelFile",
    "load_host_params",
    "read_meta",
    "read_model_file",
    "write_model_file",
]

FORMAT, FORMAT_VERSION = "handgrad-model", 3
SWEEP_FORMAT_1 = "handgrad-sweep"  # format 1 of sweep checkpoints, read only
_MLP_KEYS = {"sizes", "activation", "output", "loss", "bias"}  # format 2's "model"


@dataclasses.dataclass(frozen=True, eq=False)
class ModelFile:
    """What a file holds: the network, its host float64 parameters (network names; a
    leading replica axis when ``replicas``), the training dtype and preprocessing, and for
    a checkpoint its ``training`` meta and host optimizer ``state``."""

    network: Sequential
    params: dict
    dtype: str = "float32"
    standardizer: Standardizer | None = None
    labels: LabelEncoder | None = None
    replicas: int | None = None
    training: dict | None = None
    state: dict | None = None

    @property
    def model_params(self) -> dict:
        """The parameters the model predicts with: early stopping's best epoch's when the
        checkpoint keeps them (``opt.best``), else ``params``."""
        best = (self.state or {}).get("best")
        return self.params if best is None else best


def _version() -> str:
    try:
        return metadata.version("handgrad")
    except metadata.PackageNotFoundError:
        return "unknown"


def write_model_file(path, f: ModelFile) -> Path:
    """Write ``f`` atomically as an .npz (see the module docstring)."""
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "handgrad_version": _version(),
        "network": f.network.to_json(),
        "dtype": f.dtype,
        "classes": None if f.labels is None else f.labels.to_json(),
        "preprocessing": {
            "standardize": None if f.standardizer is None else f.standardizer.to_json()
        },
        "replicas": f.replicas,
    }
    arrays = dict(f.params) if f.replicas else to_file_names(f.network, f.params)
    if f.training is not None:
        meta["training"] = {**f.training, "optimizer_step": (f.state or {}).get("step", 0)}
        scalars = {k: v for k, v in (f.state or {}).items()
                   if k != "step" and not isinstance(v, dict)}  # fmt: skip
        if scalars:
            meta["training"]["optimizer_state"] = scalars
        for buffer, values in (f.state or {}).items():
            if isinstance(values, dict):
                arrays.update({f"opt.{buffer}.{k}": v for k, v in values.items()})
    arrays["meta"] = np.array(json.dumps(meta))
    return write_npz(path, arrays)


def read_meta(path, arrays: dict | None = None) -> dict | None:
    """The ``meta`` JSON object of a file (reading only that entry unless ``arrays`` are
    given; they lose it); None for a file of parameters alone."""
    arrays = read_npz(path, ("meta",)) if arrays is None else arrays
    if "meta" not in arrays:
        return None
    entry = arrays.pop("meta")
    try:
        meta = json.loads(str(entry)) if entry.dtype.kind == "U" and entry.ndim == 0 else None
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than JSON allows
        meta = None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its 'meta' entry is not a JSON object; the file is damaged")
    return meta


def load_host_params(path, network) -> dict[str, np.ndarray]:
    """The parameters of a parameter file, model file or checkpoint as host float64 arrays,
    checked against ``network`` (meta and optimizer buffers aside; a checkpoint's early
    stopping's best parameters where it keeps them). A sweep's checkpoint
    holds one network per replica: it is refused, naming how to take one out."""
    arrays = read_npz(path)
    meta = read_meta(path, arrays) or {}
    if meta.get("format") == SWEEP_FORMAT_1 or meta.get("replicas"):
        raise CheckpointError(
            f"{path} holds a sweep: one network per replica. Take one out first (python "
            f"scripts/export.py {Path(path).parent} --replica best --out model.npz) and "
            "start from that file"
        )
    best = {k.removeprefix("opt.best."): v for k, v in arrays.items() if k.startswith("opt.best.")}
    if best:  # early stopping's best epoch: what the run's model is
        return from_file_names(network, best, f"{path} (early stopping's best parameters)")
    params = {k: v for k, v in arrays.items() if not k.startswith("opt.")}
    return from_file_names(network, params, str(path))


def read_model_file(path) -> ModelFile:
    """Read and check any model file, checkpoint or sweep checkpoint, of any version."""
    arrays = read_npz(path)
    meta = read_meta(path, arrays)
    if meta is None:
        raise CheckpointError(
            f"{path} holds no model description (no 'meta' entry), so it is not a model "
            "file or checkpoint; if it holds a network's parameters (W1, b1, ...), it can "
            "start a training run (init)"
        )
    version = (meta.get("format"), meta.get("format_version"))
    if meta.get("format") == "handgrad-checkpoint-1":
        raise CheckpointError(
            f"{path} was written by handgrad 0.1 (format handgrad-checkpoint-1), which this "
            "version cannot resume or predict with; start a new run from its parameters "
            "(init) instead"
        )
    if version not in ((FORMAT, 2), (FORMAT, 3), (SWEEP_FORMAT_1, 1)):
        newer = meta.get("format") == FORMAT and isinstance(meta.get("format_version"), int)
        raise CheckpointError(
            f"{path} is not a handgrad model file this version reads (format "
            f"{meta.get('format')!r}, version {meta.get('format_version')!r}; this version "
            f"reads {FORMAT!r} 2 and 3)"
            + ("; it was written by a newer handgrad: upgrade handgrad" if newer else "")
        )
    source = str(path)
    network = _network(meta, source)
    replicas = _replicas(meta, version, arrays, source)
    try:
        labels, standardizer = _preprocessing(meta, network, source)
    except DataError as exc:
        raise CheckpointError(str(exc)) from None
    if meta.get("dtype") not in DTYPES:
        raise CheckpointError(f"{source}: dtype must be one of {DTYPES}, got {meta.get('dtype')!r}")
    params = {k: v for k, v in arrays.items() if not k.startswith("opt.")}
    training = meta.get("training")
    state = None
    if training is not None:
        if not isinstance(training, dict):
            raise CheckpointError(f"{source}: its training state is damaged")
        state = _state(arrays, training, network, replicas, source)
    return ModelFile(
        network,
        _checked(network, params, replicas, source),
        meta["dtype"],
        standardizer,
        labels,
        replicas,
        training,
        state,
    )


def _network(meta: dict, source: str) -> Sequential:
    """The network of a file: ``network`` (format 3) or an MLP's ``model`` (2, sweeps 1)."""
    try:
        if "network" in meta:
            return Sequential.from_json(meta["network"])
        spec = meta.get("model")
        if not isinstance(spec, dict) or set(spec) != _MLP_KEYS:
            raise CheckpointError(
                f"{source}: 'model' must have exactly the keys {sorted(_MLP_KEYS)}"
            )
        if not isinstance(spec["sizes"], list) or not isinstance(spec["bias"], bool):
            raise TypeError("sizes must be a list and bias true or false")
        activation = spec["activation"]
        return MLP(
            tuple(spec["sizes"]),
            activation=tuple(activation) if isinstance(activation, list) else activation,
            output=spec["output"],
            loss=spec["loss"],
            bias=spec["bias"],
        )
    except CheckpointError:
        raise
    except (HandgradError, TypeError) as exc:
        raise CheckpointError(f"{source}: the model description is invalid: {exc}") from None


def _replicas(meta: dict, version, arrays: dict, source: str) -> int | None:
    """R for a sweep's stacked arrays (``replicas``, or any format 1 sweep), else None."""
    replicas = meta.get("replicas")
    if version[0] == SWEEP_FORMAT_1:
        first = next((a for k, a in arrays.items() if not k.startswith("opt.")), None)
        replicas = first.shape[0] if first is not None and first.ndim else None
        if not replicas:
            raise CheckpointError(f"{source}: its parameters have no common replica axis")
    elif replicas is not None and (
        isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1
    ):
        raise CheckpointError(
            f"{source}: 'replicas' must be null or a count >= 1, got {replicas!r}"
        )
    return replicas


def _preprocessing(meta: dict, network: Sequential, source: str):
    """(labels, standardizer) of a file, checked against the network."""
    labels = None
    if network.is_classifier:
        count = 2 if network.loss == "bce" else network.n_outputs
        labels = LabelEncoder.from_json(meta.get("classes"), count, source)
    elif meta.get("classes") is not None:
        raise DataError(f"{source}: a {network.loss} model has no classes")
    pre = meta.get("preprocessing")
    if not isinstance(pre, dict) or set(pre) != {"standardize"}:
        raise DataError(f"{source}: 'preprocessing' must be {{'standardize': ... or null}}")
    scale = pre["standardize"]
    standardizer = (
        None if scale is None else Standardizer.from_json(scale, network.n_inputs, source)
    )
    return labels, standardizer


def _checked(network, arrays: dict, replicas: int | None, source: str, only=None) -> dict:
    """The parameters under the network's names (``only``: those alone), each checked (a
    stacked file per replica, each slice as one network's)."""
    if not replicas:
        return from_file_names(network, arrays, source, only=only)
    for k, a in arrays.items():
        if a.ndim == 0 or a.shape[0] != replicas:
            raise CheckpointError(
                f"{source}: {k} has shape {a.shape}, not a leading axis of {replicas} replicas"
            )
    per = [from_file_names(network, {k: a[r] for k, a in arrays.items()}, source, only=only)
           for r in range(replicas)]  # fmt: skip
    return {k: np.stack([p[k] for p in per]) for k in per[0]}


def _state(arrays: dict, training: dict, network, replicas, source: str) -> dict:
    """The host optimizer state of a checkpoint: its step, its host values and its buffers
    (early stopping's ``best``: every parameter; the others: the trained ones)."""
    state: dict = {"step": training.get("optimizer_step", 0)}
    buffers: dict = {}
    for key in [k for k in arrays if k.startswith("opt.")]:
        _, buffer, name = key.split(".", 2)
        buffers.setdefault(buffer, {})[name] = arrays[key]
    for buffer, values in buffers.items():
        only = None if buffer == "best" else network.trained
        what = "early stopping's best parameters" if buffer == "best" else f"optimizer {buffer}"
        state[buffer] = _checked(network, values, replicas, f"{source} ({what})", only=only)
    scalars = training.get("optimizer_state", {})
    if not isinstance(scalars, dict) or not all(
        k not in state and _plain(v) for k, v in scalars.items()
    ):
        raise CheckpointError(f"{source}: its optimizer state is damaged")
    state.update(scalars)
    return state


def _plain(value) -> bool:
    """A JSON number, boolean, or (nested) list of them."""
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, int | float)
