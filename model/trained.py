"""A trained model as a file you can use: the network, its parameters, and the
preprocessing its inputs went through, saved together and applied together.

The file is a model file (:mod:`model.files` has the format). Loading checks every
field and shape and raises :class:`CheckpointError` naming what is wrong. Prediction
standardizes raw rows exactly as training did, runs the network (evaluation mode) on any
backend, and maps output indices back to the class labels (a model trained on labels
{3, 7, 9} predicts 3, 7 and 9).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from backends import get_backend
from backends.errors import DataError, HandgradError
from model.checkpoint import CheckpointError
from model.data import check_finite, check_range
from model.files import ModelFile, read_meta, read_model_file, write_model_file
from model.fit import r2_score
from model.folders import check_model_file, check_output_file, checkpoint_path
from model.network import Sequential
from model.preprocessing import LabelEncoder, Standardizer

__all__ = ["TrainedModel", "load_checkpoint", "predictions_csv", "training_progress"]

_CHUNK_ROWS = 65536  # rows per forward pass at prediction time: bounded device memory


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedModel:
    """A network with host float64 parameters (internal names W1, b1, ...), the dtype it
    was trained in, and its preprocessing: a :class:`Standardizer` for the inputs (or
    None) and a :class:`LabelEncoder` for the classes (classifiers only)."""

    model: Sequential
    params: dict
    dtype: str = "float32"
    standardizer: Standardizer | None = None
    labels: LabelEncoder | None = None

    # ------------------------------------------------------------------ files

    def save(self, path, *, training: dict | None = None, state: dict | None = None) -> Path:
        """Write the model file (atomically). ``training`` and the host optimizer ``state``
        make it a checkpoint that a run can resume from."""
        path = check_output_file(path, "save")
        if training is None:  # a model file: never in place of a run's own files
            path = check_model_file(path)
        return write_model_file(path, self._file(training=training, state=state))

    def _file(self, **fields) -> ModelFile:
        return ModelFile(self.model, self.params, self.dtype, self.standardizer, self.labels,
                         **fields)  # fmt: skip

    @classmethod
    def load(cls, path) -> TrainedModel:
        """Read and check a model file, or a checkpoint or run folder (the training state
        is ignored)."""
        return load_checkpoint(checkpoint_path(path), training=False)[0]

    # ------------------------------------------------------------------ prediction

    @property
    def n_features(self) -> int:
        return self.model.sizes[0]

    def inputs(self, X) -> np.ndarray:
        """Raw feature rows -> the network's inputs (float64 host): shape and finiteness
        checked, then standardized as in training."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataError(
                f"X has shape {X.shape} but the model takes {self.n_features} features per "
                f"row; pass an array of shape (n, {self.n_features})"
            )
        if X.dtype.kind not in "biuf":
            raise DataError(f"X must be numeric, got {X.dtype}")
        check_finite(X, "X")
        return X.astype(np.float64) if self.standardizer is None else self.standardizer.transform(X)

    def _device_params(self, backend) -> dict:
        return {k: backend.asarray(v) for k, v in self.params.items()}

    def outputs(self, X, *, backend=None) -> np.ndarray:
        """The network's output A_L for raw rows X (host float64): probabilities for
        classifiers, values otherwise. Runs on ``backend`` (default: cpu, the model's
        dtype) in chunks of rows."""
        backend = backend or get_backend("cpu", self.dtype)
        params = self._device_params(backend)
        inputs = self._checked_inputs(X, backend)
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite outputs: below
            chunks = [
                backend.to_numpy(
                    self.model.predict(params, backend.asarray(inputs[s : s + _CHUNK_ROWS]))
                )
                for s in range(0, inputs.shape[0], _CHUNK_ROWS)
            ]
        out = np.concatenate(chunks) if chunks else np.zeros((0, self.model.sizes[-1]))
        return _finite(out.astype(np.float64))

    def _checked_inputs(self, X, backend) -> np.ndarray:
        """:meth:`inputs`, refused when they overflow the dtype ``backend`` computes in."""
        inputs = self.inputs(X)
        check_range("X (standardized)" if self.standardizer else "X", inputs, backend.dtype_name)
        return inputs

    def _proba(self, out) -> np.ndarray:
        """Class probabilities (n, K) from the network's output: bce's sigma(z) is p of
        the second class; multi-label: p_j of label j being 1, per label."""
        if self.model.multi_label:
            return out
        return np.hstack([1.0 - out, out]) if self.model.loss == "bce" else out

    def _predicted(self, out) -> np.ndarray:
        """Predictions from the network's output: labels, values ((n,) for one output),
        or for multi-label a 0/1 matrix (n, k) (p_j > 1/2)."""
        if self.model.multi_label:
            return (out > 0.5).astype(np.int64)
        if self.labels is not None:
            return self.labels.decode(np.argmax(self._proba(out), axis=1))
        return out[:, 0] if out.shape[1] == 1 else out

    def require_classes(self) -> None:
        """A HandgradError (setting ``proba``) unless this model predicts classes."""
        if self.labels is None:
            raise HandgradError(
                f"a {self.model.loss} model predicts values, not class probabilities",
                setting="proba",
            )

    def predict_proba(self, X, *, backend=None) -> np.ndarray:
        """Class probabilities (n, K), columns in the order of ``labels.classes``; for
        multi-label, p_j (n, k) of each label."""
        self.require_classes()
        return self._proba(self.outputs(X, backend=backend))

    def predict(self, X, *, backend=None) -> np.ndarray:
        """Class labels (n,) for classifiers (a 0/1 matrix (n, k) for multi-label); values
        (n,) or (n, k) otherwise."""
        return self._predicted(self.outputs(X, backend=backend))

    def evaluate(self, X, y, *, backend=None) -> dict:
        """Loss on (X, y) and, for classifiers, accuracy and the confusion matrix
        (``confusion[i][j]``: rows of class ``classes[i]`` predicted as ``classes[j]``),
        from one forward pass; for multi-label, the subset accuracy (rows with every label
        right) and ``label_accuracy`` per label; for regression ``r2``
        (:func:`model.fit.r2_score`)."""
        backend = backend or get_backend("cpu", self.dtype)
        inputs = backend.asarray(self._checked_inputs(X, backend))
        y = self._checked_targets(y, inputs.shape[0])
        if self.labels is None:
            target = backend.asarray(y[:, None] if y.ndim == 1 else y)
        else:
            index = y.astype(np.int64) if self.model.multi_label else self.labels.encode(y)
            target = backend.asarray(index, dtype=backend.xp.int64)
        params = self._device_params(backend)
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite outputs: below
            out, cache = self.model.forward(params, inputs)
            loss = float(self.model.loss_from_cache(cache, target))
        host = _finite(backend.to_numpy(out))
        if self.labels is None:
            return {"loss": loss, "r2": r2_score(self.model, params, inputs, target)}
        if self.model.multi_label:
            right = self._predicted(host) == index
            return {"loss": loss, "accuracy": float(np.mean(np.all(right, axis=1))),
                    "label_accuracy": np.mean(right, axis=0).tolist()}  # fmt: skip
        predicted = np.argmax(self._proba(host), axis=1)
        k = len(self.labels)
        confusion = np.zeros((k, k), dtype=np.int64)
        np.add.at(confusion, (index, predicted), 1)
        return {
            "loss": loss,
            "accuracy": float(np.mean(predicted == index)),
            "classes": self.labels.to_json(),
            "confusion": confusion.tolist(),
        }

    def _checked_targets(self, y, rows: int) -> np.ndarray:
        """``y`` as a host array of numbers, one per row of X (multi-label: a 0/1 row of
        the model's labels), finite."""
        y = np.asarray(y)
        wanted = "class labels" if self.labels is not None else "target values"
        if y.ndim == 0 or y.dtype.kind not in "biuf":
            got = f"a single {y.dtype} value" if y.ndim == 0 else f"{y.dtype} values"
            raise DataError(f"y holds {got}; pass one row of numbers ({wanted}) per row of X")
        if y.shape[0] != rows or not y.shape[0]:
            raise DataError(
                f"X has {rows} rows and y {y.shape[0]}; pass the same number, at least one"
            )
        check_finite(y, "y")
        k = self.model.n_outputs
        if self.model.multi_label and (y.shape[1:] != (k,) or not np.all((y == 0) | (y == 1))):
            raise DataError(
                f"this multi-label model takes y as 0/1 labels of shape (n, {k}), one column "
                f"per label; got shape {y.shape}"
                + ("" if y.shape[1:] != (k,) else " with values other than 0 and 1")
            )
        return y


def predictions_csv(trained: TrainedModel, X, *, proba: bool = False, backend=None) -> str:
    """Predictions as CSV text: a header row, then one row per row of X. Column
    ``prediction`` holds the class label or the value (``prediction_1`` .. ``_k`` for k
    outputs: values, or a multi-label model's 0/1 labels); ``proba`` adds ``p_<class>``
    columns for classifiers (``p_1`` .. ``p_k``, each label's probability of 1, for
    multi-label). One forward pass."""
    if proba:
        trained.require_classes()
    out = trained.outputs(X, backend=backend)
    predicted = trained._predicted(out)
    columns = [predicted[:, None] if predicted.ndim == 1 else predicted]
    if predicted.ndim == 1:
        names = ["prediction"]
    else:
        names = [f"prediction_{k}" for k in range(1, predicted.shape[1] + 1)]
    predictions = len(names)
    if proba:
        columns.append(trained._proba(out))
        labels = range(1, predictions + 1) if trained.model.multi_label else trained.labels.classes
        names += [f"p_{c}" for c in labels]
    lines = [",".join(names)]
    real = ".9g" if trained.dtype == "float32" else ".17g"  # enough digits to round-trip
    kinds = ["d" if trained.labels is not None else real] * predictions
    kinds += [real] * (len(names) - predictions)
    for row in np.hstack(columns) if predicted.size else []:
        lines.append(
            ",".join(format(int(v) if k == "d" else v, k) for v, k in zip(row, kinds, strict=True))
        )
    return "\n".join(lines) + "\n"


def load_checkpoint(path, *, training: bool = True):
    """Read one network's model file or checkpoint: ``(TrainedModel, training meta, host
    optimizer state)``. With ``training=True`` the file must be a checkpoint."""
    f = read_model_file(path)
    if f.replicas is not None:
        raise CheckpointError(
            f"{path} holds a sweep of several models (one per replica); resume it as a sweep, "
            "or take one replica out of it (model.sweep.load_sweep, or scripts/export.py)"
        )
    trained = TrainedModel(f.network, f.model_params, f.dtype, f.standardizer, f.labels)
    if not training:
        return trained, None, None
    if f.training is None or not {"config", "epoch", "rng", "history"} <= set(f.training):
        raise CheckpointError(
            f"{path} is a model file without training state; it can be used for prediction "
            "or to start a new run (init), not resumed"
        )
    return trained, f.training, f.state


def training_progress(path) -> str | None:
    """ "epoch E of N" for a checkpoint (E completed of the N it was to train); None for a
    model file without training state."""
    info = (read_meta(path) or {}).get("training")
    try:
        return f"epoch {int(info['epoch'])} of {int(info['config']['epochs'])}"
    except (TypeError, KeyError, ValueError):
        return None


def _finite(out: np.ndarray) -> np.ndarray:
    """``out`` (a network's outputs) if every value is finite; else a DataError: the
    parameters overflow on these rows, as a model kept from a diverged run may."""
    bad = ~np.all(np.isfinite(out), axis=tuple(range(1, out.ndim)))
    if bad.any():
        raise DataError(
            f"the model's outputs are NaN or infinite for {int(bad.sum())} of {len(out)} rows "
            f"(the first: row {int(np.flatnonzero(bad)[0])}): its parameters overflow on them, "
            "as those of a diverged run may; retrain it with a smaller learning rate",
            setting="model",
        )
    return out
