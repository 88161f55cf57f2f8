"""What defines a training run, checked: :class:`RunConfig`, and the host-side preparation
that follows from it (data loaded, split, standardized, targets encoded; the network built).

Every setting is checked when a RunConfig is made, so a run never starts with a value that
cannot work (a learning rate of 0, nan or -1, a negative weight decay, an empty path); the
error names the setting (``exc.setting``), which a command-line tool maps to its flag.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from pathlib import Path

import numpy as np

from backends import DTYPES
from backends.comm import on_root
from backends.errors import ConfigError, HandgradError, about, check_number
from backends.transfer import HostRows, row_chunks
from model.activations import ACTIVATIONS
from model.checkpoint import CheckpointError
from model.data import DATASETS, DataError, check_range, load_dataset, load_file, split_rows
from model.losses import LOSSES
from model.mlp import MLP, NORMS, logistic_regression, relu_neuron, single_neuron
from model.network import Sequential
from model.optimizers import OPTIMIZERS
from model.preprocessing import LabelEncoder, Standardizer, Targets, resolve_targets
from model.schedules import SCHEDULES, EarlyStopping, Schedule
from model.schedules import SETTINGS as SCHEDULE_SETTINGS
from model.schedules import USES as SCHEDULE_USES
from model.streaming import map_data

__all__ = [
    "DEFAULT_LR",
    "LARGE_FEATURES",
    "MODELS",
    "STREAM_BYTES",
    "PreparedData",
    "RunConfig",
    "build_model",
    "check_memory",
    "estimate_bytes",
    "prepare_data",
]

logger = logging.getLogger("handgrad")

MODELS = ("neuron", "relu-neuron", "logistic", "mlp")
FIXED_LOSS = {"neuron": "sse", "relu-neuron": "mse", "logistic": "bce"}
DEFAULT_LR = {name: choice.default_lr for name, choice in OPTIMIZERS.items()}
MAX_EPOCHS = 10_000_000  # more is a typo, not a plan: it would run for days even on digits
# A data file whose X is this large is streamed from disk when its format allows (see
# prepare_data): loaded, split and standardized in memory it would take ~3 times as much.
STREAM_BYTES = 2**30
# Features not standardized and larger than this in magnitude are warned about before
# training. Standardized features are of order 1; at 1e6 a freshly drawn network's
# pre-activations are ~1e6 times larger, so sigmoids and softmaxes saturate (their
# gradients underflow: exp(-1e6) is 0), and an SGD step, lr * x * error, moves the next
# pre-activations by ~lr * x^2 = 1e11: the loss stalls or overflows whatever the learning
# rate. Smaller raw values (counts, prices in cents) may train, if slowly: a warning there
# would mostly be noise. A stalled loss is reported after training (model.run) either way.
LARGE_FEATURES = 1e6


def _check_choice(name, value, choices):
    if value not in choices:
        raise ConfigError(
            f"unknown {name} {value!r}; use one of: {', '.join(choices)}", setting=name
        )
    return value


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run; stored in its checkpoints.

    ``model``: ``mlp`` (``hidden`` widths, default (64,); ``activation``, default relu;
    ``norm`` of each hidden layer, ``none``, ``layer`` or ``batch``; ``dropout`` after each
    hidden activation, in [0, 1)) or one of the tutorials' single units: ``neuron``
    (sigmoid, sse), ``relu-neuron`` (mse), ``logistic`` (bce), which take none of those.
    ``loss`` None is inferred from the targets (see
    :func:`model.preprocessing.resolve_targets`). ``lr`` None is the optimizer's
    default (``DEFAULT_LR``). ``batch_size`` None is full batch. Data: a bundled
    ``dataset`` (default digits) or a ``data`` file (.npz or .csv), not both. Every value
    is checked here, with an error naming the setting.

    The learning rate per epoch follows ``schedule`` (constant, step, cosine, invscaling,
    plateau; its parameters ``lr_step_size``, ``lr_factor``, ``lr_patience``,
    ``lr_threshold``, ``lr_power``, ``lr_min``, ``lr_period``, each for the schedules that
    read it, see :mod:`model.schedules`; a cosine period left unset is the run's epochs,
    kept when a resume changes them).
    ``early_stopping`` (a patience in epochs, None for none) with ``min_delta`` stops the
    run at its best epoch; ``clip_grad`` clips each step's gradients to that global norm.
    """

    model: str = "mlp"
    hidden: tuple[int, ...] | None = None
    activation: str | None = None
    loss: str | None = None
    optimizer: str = "adam"
    lr: float | None = None
    epochs: int = 100
    batch_size: int | None = None
    weight_decay: float = 0.0
    seed: int = 0
    dataset: str | None = None
    data: str | None = None
    standardize: bool = False
    val_split: float = 0.2
    dtype: str = "float32"
    norm: str = "none"
    dropout: float = 0.0
    # the schedule's settings (model.schedules.SETTINGS), with the Schedule's own defaults
    schedule: str = Schedule.name
    lr_step_size: int = Schedule.step_size
    lr_factor: float = Schedule.factor
    lr_patience: int = Schedule.patience
    lr_threshold: float = Schedule.threshold
    lr_power: float = Schedule.power
    lr_min: float = Schedule.lr_min
    lr_period: int | None = Schedule.period
    early_stopping: int | None = None
    min_delta: float = 0.0
    clip_grad: float | None = None

    def __post_init__(self):
        _check_choice("model", self.model, MODELS)
        if self.model == "mlp":
            self._check_network()
        else:
            self._check_unit()
        if self.loss is not None:
            _check_choice("loss", self.loss, tuple(LOSSES))
        self._check_training()
        self._check_aids()
        self._check_data()
        _check_choice("dtype", self.dtype, DTYPES)

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    def _check_network(self) -> None:
        """An MLP's hidden widths, activation, normalization and dropout."""
        hidden = (64,) if self.hidden is None else self.hidden
        if isinstance(hidden, str | int) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden
        ):
            raise ConfigError(
                f"hidden must list positive integer widths, got {self.hidden!r}", setting="hidden"
            )
        self._set("hidden", tuple(hidden))
        self._set("activation", self.activation or "relu")
        _check_choice("activation", self.activation, tuple(ACTIVATIONS))
        _check_choice("norm", self.norm, tuple(NORMS))
        self._set("dropout", check_number("dropout", self.dropout, low=0, high=1, high_open=True))

    def _check_unit(self) -> None:
        """A single unit takes none of an MLP's settings, and trains with its own loss."""
        unset = {"hidden": None, "activation": None, "norm": "none", "dropout": 0.0}
        for name, value in unset.items():
            if getattr(self, name) != value:
                raise ConfigError(
                    f"model {self.model!r} is a single unit and takes no {name}; use model "
                    "'mlp' for hidden layers",
                    setting=name,
                )
        fixed = FIXED_LOSS[self.model]
        if self.loss not in (None, fixed):
            raise ConfigError(
                f"model {self.model!r} trains with the loss {fixed!r}, not {self.loss!r}; "
                "leave the loss unset or use model 'mlp'",
                setting="loss",
            )

    def _check_training(self) -> None:
        """Optimizer, learning rate, epochs, batch size, weight decay, seed."""
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        choice = OPTIMIZERS[self.optimizer]
        lr = choice.default_lr if self.lr is None else self.lr
        self._set("lr", check_number("lr", lr, low=0, low_open=True))
        self._set("epochs", check_number("epochs", self.epochs, integer=True, low=1,
                                         high=MAX_EPOCHS))  # fmt: skip
        if self.batch_size is not None:
            self._set("batch_size", check_number("batch_size", self.batch_size, integer=True,
                                                 low=1))  # fmt: skip
            if choice.full_batch:
                raise ConfigError(
                    f"optimizer {self.optimizer!r} is full-batch gradient descent; use 'sgd' "
                    "(or another optimizer) for minibatches, or leave the batch size unset",
                    setting="batch_size",
                )
        self._set("weight_decay", check_number("weight_decay", self.weight_decay, low=0))
        self._set("seed", check_number("seed", self.seed, integer=True, low=0, high=2**32 - 1))

    def _check_aids(self) -> None:
        """The schedule and its parameters (those it does not read keep their defaults),
        early stopping, gradient clipping; and what L-BFGS refuses of them."""
        fields = {f.name: f.default for f in dataclasses.fields(self)}
        spec = self.schedule_spec()
        uses = {SCHEDULE_SETTINGS[k] for k in SCHEDULE_USES[spec.name]}
        for field, setting in SCHEDULE_SETTINGS.items():
            if getattr(self, setting) is not None:
                self._set(setting, getattr(spec, field))
            if setting not in uses and getattr(self, setting) != fields[setting]:
                users = [n for n, u in SCHEDULE_USES.items() if field in u]
                raise ConfigError(
                    f"{setting} is a parameter of the {' and '.join(users)} schedule"
                    f"{'s' if len(users) > 1 else ''}, not of {spec.name!r}; choose that "
                    f"schedule, or leave {setting} unset",
                    setting=setting,
                )
        spec.check_base(self.lr)
        stopper = self.stopper()
        self._set("early_stopping", None if stopper is None else stopper.patience)
        self._set("min_delta", check_number("min_delta", self.min_delta, low=0))
        if stopper is None and self.min_delta:
            raise ConfigError(
                "min_delta is early stopping's; set early_stopping (a patience in epochs) "
                "too, or leave min_delta unset",
                setting="min_delta",
            )
        if self.clip_grad is not None:
            self._set("clip_grad", check_number("clip_grad", self.clip_grad, low=0, low_open=True))
        if self.optimizer == "lbfgs":
            self._check_lbfgs()

    def _check_lbfgs(self) -> None:
        """L-BFGS chooses its own steps from the whole data's loss and gradient."""
        refused = (
            (self.schedule != "constant", "schedule", "its line search chooses each step's "
             "length; use the constant schedule"),
            (self.clip_grad is not None, "clip_grad", "its line search needs the true "
             "gradient; leave clipping off"),
            (self.dropout > 0, "dropout", "its line search needs the same loss at every "
             "evaluation; train without dropout"),
        )  # fmt: skip
        for bad, setting, why in refused:
            if bad:
                raise ConfigError(f"optimizer 'lbfgs' takes no {setting.replace('_', ' ')}: "
                                  f"{why}", setting=setting)  # fmt: skip

    def schedule_spec(self) -> Schedule:
        """The learning-rate schedule this config sets (:class:`model.schedules.Schedule`);
        a cosine period left unset is the run's epochs."""
        _check_choice("schedule", self.schedule, SCHEDULES)
        values = {f: getattr(self, s) for f, s in SCHEDULE_SETTINGS.items()}
        if self.schedule == "cosine" and values["period"] is None:
            values["period"] = self.epochs
        return Schedule(self.schedule, **values)

    def stopper(self) -> EarlyStopping | None:
        """Early stopping as this config sets it, or None."""
        if self.early_stopping is None:
            return None
        return EarlyStopping(self.early_stopping, self.min_delta)

    def _check_data(self) -> None:
        """A bundled dataset or a data file, standardization, the validation split."""
        if self.data is not None and self.dataset is not None:
            raise ConfigError("give a dataset or a data file, not both", setting="data")
        if self.data is not None:
            if not isinstance(self.data, str | os.PathLike):
                raise ConfigError(
                    f"data must be a file path, got {type(self.data).__name__}", setting="data"
                )
            if not str(self.data).strip():
                raise ConfigError("the data file path is empty", setting="data")
            self._set("data", str(Path(self.data).resolve()))
        else:
            self._set("dataset", self.dataset or "digits")
            _check_choice("dataset", self.dataset, DATASETS)
        if not isinstance(self.standardize, bool):
            raise ConfigError(
                f"standardize must be True or False, got {self.standardize!r}",
                setting="standardize",
            )
        vs = check_number("val_split", self.val_split, low=0)
        if vs >= 1:
            raise ConfigError(f"val_split must be in [0, 1), got {vs!r}", setting="val_split")
        self._set("val_split", vs)

    def to_json(self) -> dict:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_json(cls, data, source) -> RunConfig:
        """Rebuild a stored config, as a CheckpointError if it does not fit. A setting
        that an older version did not store takes its default (what that version did)."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: its run config is missing")
        unknown = sorted(set(data) - names)
        if unknown:
            raise CheckpointError(
                f"{source}: its run config has settings this version does not know "
                f"({', '.join(unknown)}); it was written by a newer handgrad: upgrade handgrad"
            )
        if isinstance(data.get("hidden"), list):
            data = {**data, "hidden": tuple(data["hidden"])}
        try:
            return cls(**data)
        except HandgradError as exc:
            raise CheckpointError(f"{source}: its run config is invalid: {exc}") from None


# ---------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedData:
    """Host arrays ready for training: features (standardized when asked) and targets
    (class indices or float columns), split into training and validation rows. Streamed
    data has X and X_val as :class:`backends.transfer.HostRows` of a memory-mapped file."""

    X: np.ndarray | HostRows
    y: np.ndarray
    X_val: np.ndarray | HostRows | None
    y_val: np.ndarray | None
    targets: Targets
    standardizer: Standardizer | None
    source: str
    fingerprint: str  # of the loaded X and y: a resumed run checks it is the same data
    largest: float = 0.0  # the largest magnitude in X and X_val as trained (standardized)

    @property
    def streamed(self) -> bool:
        return isinstance(self.X, HostRows)

    @property
    def unscaled(self) -> bool:
        """Whether the features are not standardized and exceed :data:`LARGE_FEATURES`."""
        return self.standardizer is None and self.largest > LARGE_FEATURES


def prepare_data(
    config: RunConfig,
    *,
    labels: LabelEncoder | None = None,
    standardizer: Standardizer | None = None,
    stream: bool | None = None,
    comm=None,
    fingerprint: str | None = None,
) -> PreparedData:
    """Load, check, split and scale the data of ``config`` on the host; decide the loss
    and the output width. ``labels`` / ``standardizer`` fix those of a resumed run, and
    ``fingerprint`` the data it trained on: other data is refused as soon as it is loaded,
    before its targets are read against the run's loss.

    ``stream``: memory-map the data file's X and read it batch by batch while training
    instead of loading it (an uncompressed ``.npz`` or a ``.npy``; other formats are
    loaded): True whenever the format allows, False never, None (default) when X takes
    :data:`STREAM_BYTES` or more. Streamed or not, the same rows train to the same
    parameters: the split is the same rows, standardized with the same statistics.

    ``comm`` (several ranks, each calling this): rank 0 alone makes the passes over a
    streamed file (finiteness, fingerprint, statistics, range) and sends the results to
    the others, which then read only their rows of each batch while training."""
    X, y, mapped = _load(config, stream, comm)
    expected, fingerprint = fingerprint, on_root(comm, lambda: _sha256(X) + _sha256(y))
    if expected not in (None, fingerprint):
        raise CheckpointError(
            f"the data of {config.data or config.dataset} changed since the run was made "
            "(its fingerprint differs), so the run cannot continue bit for bit; restore "
            "the data (or give the path it moved to), or start a new run on the new data",
            setting="data",
        )
    with about("loss" if config.model == "mlp" else "model"):  # a single unit fixes its loss
        fixed = FIXED_LOSS.get(config.model)
        reason = f"fixed by the model {config.model!r}" if fixed else "as set"
        targets = resolve_targets(y, fixed or config.loss, labels, reason)
    if config.model == "neuron" and (targets.y.min() < 0 or targets.y.max() > 1):
        raise DataError(
            "model 'neuron' outputs sigma(z) in (0, 1): its targets must lie in [0, 1]; "
            "use model 'mlp' with the loss 'mse' for other targets",
            setting="model",
        )
    classes = targets.labels is not None
    stratify = classes and targets.y.ndim == 1  # not a multi-label matrix
    train, val = split_rows(targets.y, config.val_split, config.seed, stratify=stratify)
    y_tr, y_va = (targets.y, None) if train is None else (targets.y[train], targets.y[val])
    if mapped:
        X_tr, X_va = HostRows(X, train), None if val is None else HostRows(X, val)
    else:
        X_tr, X_va = (X, None) if train is None else (X[train], X[val])
    if config.standardize:
        with about("data"):
            standardizer = standardizer or on_root(comm, lambda: Standardizer.fit(X_tr))
        X_tr, X_va = (None if a is None else standardizer.transform(a) for a in (X_tr, X_va))
    else:
        standardizer = None
    checks = (("X", X_tr), ("X", X_va), ("y", None if classes else y_tr))
    tops = on_root(comm, lambda: [check_range(name, a, config.dtype) for name, a in checks])
    data = PreparedData(X_tr, y_tr, X_va, y_va, targets, standardizer,
                        config.data or config.dataset, fingerprint, max(tops[:2]))  # fmt: skip
    _warn_if_unscaled(data, comm)
    return data


def _warn_if_unscaled(data: PreparedData, comm) -> None:
    """A warning line (rank 0's), not an error (large raw features can be meant), for
    features too large to train on unstandardized (:attr:`PreparedData.unscaled`)."""
    if data.unscaled and (comm is None or comm.rank == 0):
        logger.warning(
            "warning: the features are not standardized and reach %.3g (over %g): gradient "
            "steps on values this large saturate or overflow, so the loss stalls or "
            "diverges whatever the learning rate; standardize them",
            data.largest,
            LARGE_FEATURES,
            extra={"setting": "standardize"},
        )


def _load(config: RunConfig, stream, comm):
    """``(X, y, mapped)``: the data of ``config``, X memory-mapped (``mapped``) when
    ``stream`` and the file allow (see :func:`prepare_data`), else loaded."""
    root = comm is None or comm.rank == 0
    with about("data"):
        least = STREAM_BYTES if stream is None else 0
        maps = config.data is not None and stream is not False
        mapped = map_data(config.data, least, read=root) if maps else None
        if maps:  # rank 0's y, the same on every rank (None: rank 0 could not map it)
            y_root = on_root(comm, lambda: None if mapped is None else mapped[1])
            mapped = None if mapped is None or y_root is None else (mapped[0], y_root)
        if mapped is not None:
            if Path(config.data).suffix.lower() == ".npy":  # as load_file says it
                logger.info("data %s: a .npy table, the target in the last column", config.data)
            return mapped[0], mapped[1], True
        X, y = load_file(config.data) if config.data else load_dataset(config.dataset)
        return X, y, False


def _sha256(a) -> str:
    """The first 16 hex digits of the SHA-256 of ``a``'s bytes in row order, as float64
    for a float64 or memory-mapped X (read a block at a time)."""
    digest = hashlib.sha256()
    if isinstance(a, np.memmap) or a.dtype == np.float64:
        for chunk in row_chunks(a):
            digest.update(np.ascontiguousarray(chunk))
    else:
        digest.update(np.ascontiguousarray(a))
    return digest.hexdigest()[:16]


def build_model(config: RunConfig, n_features: int, targets: Targets) -> Sequential:
    """The network ``config`` describes, for ``n_features`` inputs and the targets' width."""
    if config.model == "neuron":
        return single_neuron(n_features)
    if config.model == "relu-neuron":
        return relu_neuron(n_features)
    if config.model == "logistic":
        return logistic_regression(n_features)
    sizes = (n_features, *config.hidden, targets.outputs)
    return MLP(sizes, activation=config.activation, loss=targets.loss, norm=config.norm,
               dropout=config.dropout)  # fmt: skip


def estimate_bytes(
    model: Sequential, config: RunConfig, n_rows: int, replicas: int = 1, *, streamed: bool = False
) -> int:
    """A lower bound on the device memory a run of ``replicas`` networks needs: parameters
    with their gradients, snapshot and optimizer buffers (and early stopping's copy of
    the best parameters), the data (unless ``streamed``
    from a file), and one batch's activations (forward cache and backward temporaries),
    all but the data per replica."""
    itemsize = 4 if config.dtype == "float32" else 8
    n_params = sum(math.prod(s) for s in model.param_shapes().values())
    buffers = OPTIMIZERS[config.optimizer].buffer_count()
    buffers += config.early_stopping is not None  # the best epoch's parameters, kept
    batch = min(config.batch_size or n_rows, n_rows)
    data = 0 if streamed else n_rows * (model.sizes[0] + model.sizes[-1])
    per_replica = n_params * (3 + 2 * buffers) + 3 * batch * sum(model.sizes)
    return itemsize * (data + replicas * per_replica)


def check_memory(
    model: Sequential, config: RunConfig, n_rows: int, replicas: int = 1, *, streamed: bool = False
) -> None:
    """A ConfigError when :func:`estimate_bytes` exceeds this machine's memory."""
    need = estimate_bytes(model, config, n_rows, replicas, streamed=streamed)
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: let allocation tell
        return
    if need > have:
        nets = f"{replicas} x {model.sizes}" if replicas > 1 else f"{model.sizes}"
        raise ConfigError(
            f"this run needs at least {need / 2**30:.1f} GiB ({nets}, "
            f"{n_rows} rows, {config.dtype}), more than this machine's "
            f"{have / 2**30:.1f} GiB; use narrower layers, a smaller batch or less data",
            setting="hidden" if config.model == "mlp" else "data",
        )
