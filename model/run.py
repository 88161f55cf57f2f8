"""A whole training run as library code: config, data, model, checkpoints, resume, metrics.

    run = Run.start(RunConfig(dataset="digits", epochs=50), "runs/a")   # checks, no device yet
    result = run.train(get_backend("auto", run.config.dtype))          # writes runs/a/...
    run = Run.resume("runs/a", epochs=100, lr=1e-3)                     # continues it exactly

Order of work: every setting and output path is checked, then the data is loaded and
checked on the host, then the run folder is created (atomically, and claimed: two runs
never share one, see :mod:`model.folders`), and only then does anything reach a device.
A run folder holds ``checkpoint.npz`` (a model file with the training state, see
:mod:`model.trained`), ``metrics.json`` and ``loss.png``; the checkpoint is written every
``checkpoint_every`` epochs and when the run ends, is interrupted (Ctrl-C, or SIGTERM
inside :func:`model.signals.sigterm_as_interrupt`) or diverges, so a killed process loses
at most ``checkpoint_every`` epochs.

Between checkpoints nothing is copied to the host but the epoch's loss: the last
completed epoch's parameters and optimizer state are kept on the device, in buffers
allocated once, for an interrupt or a divergence to save.

Data-parallel (``comm``, a :class:`backends.comm.Communicator`): every rank makes the
same Run and trains it with :func:`model.fit.fit`'s ``comm``; rank 0 alone creates the
run folder (its name is broadcast) and writes every file. A checkpoint holds nothing
about the ranks, so a run resumes with any number of them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from backends import Backend, get_backend, host_rng
from backends.blas import blas_threads
from backends.comm import on_root
from backends.errors import ConfigError, HandgradError, about, check_number
from model.checkpoint import (
    CheckpointError,
    atomic_write,
    host_copy,
    load_host_params,
)
from model.config import (
    PreparedData,
    RunConfig,
    build_model,
    check_memory,
    prepare_data,
)
from model.data import DataError
from model.fast import ENV_VAR as FAST_ENV
from model.fast import fast_enabled, uses_fast_step
from model.fit import DivergenceError, fit
from model.folders import (
    check_creatable,
    check_run_dir,
    check_save,
    checkpoint_source,
    make_run_dir,
    release_run_dir,
)
from model.mlp import MLP
from model.optimizers import make_optimizer
from model.report import plot_history, progress_bar, score_text, strict_json
from model.signals import deferred_interrupts
from model.trained import TrainedModel, load_checkpoint

__all__ = ["CHECKPOINT_EVERY", "RESUMABLE", "Run"]

logger = logging.getLogger("handgrad")

RESUMABLE = ("epochs", "lr")  # the settings a resumed run may change; the rest define it
CHECKPOINT_EVERY = 10  # epochs; see Run.start


# ---------------------------------------------------------------------------- the run


class _DeviceSnapshot:
    """Parameters, optimizer state, host RNG state and history at the end of the last
    completed epoch. Arrays stay on the device, copied into buffers allocated once."""

    def __init__(self, params, state, rng, epoch: int, history: dict):
        self.params = {k: _copy(v) for k, v in params.items()}
        self.state = {k: _copy_tree(v) for k, v in state.items()}
        self.rng, self.epoch = rng, epoch
        self.rng_state = _rng_state(rng)
        self.history = {k: list(v) for k, v in history.items()}

    def take(self, params, state, epoch: int, record: dict) -> None:
        for k, p in params.items():
            self.params[k][...] = p
        for key, value in state.items():
            if isinstance(value, dict):
                for k, v in value.items():
                    self.state[key][k][...] = v
            else:
                self.state[key] = value
        self.epoch, self.rng_state = epoch, _rng_state(self.rng)
        for k, v in record.items():
            self.history.setdefault(k, []).append(v)


def _copy(a):
    return array_namespace(a).asarray(a, copy=True)


def _copy_tree(value):
    return {k: _copy(v) for k, v in value.items()} if isinstance(value, dict) else value


def _rng_state(rng):
    """The state to store of the host generator ``rng``, or of each of a list of them."""
    return (
        [g.bit_generator.state for g in rng] if isinstance(rng, list) else rng.bit_generator.state
    )


def _set_rng_state(rng, state) -> None:
    """Put ``rng`` (one generator, or a list) back in a state from :func:`_rng_state`."""
    for g, st in zip(rng, state, strict=True) if isinstance(rng, list) else [(rng, state)]:
        g.bit_generator.state = st


def _restore_rng(state, source):
    """A generator (or a list of them, for a list of states) in a stored state."""
    rng = [host_rng(None) for _ in state] if isinstance(state, list) else host_rng(None)
    try:
        _set_rng_state(rng, state)
    except (TypeError, ValueError, KeyError):
        raise CheckpointError(f"{source}: its random generator state is damaged") from None
    return rng


@dataclasses.dataclass(eq=False)
class Run:
    """A training run in its folder. Make one with :meth:`start` or :meth:`resume` (both
    check everything and touch no device), then call :meth:`train`.

    ``epoch`` counts completed epochs; ``changes`` lists the settings changed on resume
    (as recorded in metrics.json), ``resumed`` being this resume's entry of it, if it made
    one; ``params`` / ``state`` are host arrays to start from (None: drawn from ``rng`` /
    fresh).
    """

    config: RunConfig
    dir: Path
    data: PreparedData
    model: MLP
    rng: Any
    params: dict | None = None
    state: dict | None = None
    epoch: int = 0
    history: dict = dataclasses.field(default_factory=dict)
    save_path: Path | None = None
    checkpoint_every: int = CHECKPOINT_EVERY
    changes: list = dataclasses.field(default_factory=list)
    resumed: dict | None = None
    status: str = "created"
    saved_epoch: int | None = None  # the epoch in the checkpoint on disk, once written
    comm: Any = None
    step: str | None = None  # the training step, "in-place" or "portable", once chosen
    summary: dict | None = None  # what train() returned and metrics.json holds, once written

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files: rank 0, or the only process."""
        return _root(self.comm)

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint.npz"

    # ------------------------------------------------------------------ making a run

    @classmethod
    def start(
        cls,
        config: RunConfig,
        run_dir=None,
        *,
        init=None,
        save=None,
        overwrite: bool = False,
        checkpoint_every: int = CHECKPOINT_EVERY,
        root="runs",
        comm=None,
        **fields,
    ) -> Run:
        """Check ``config`` and every path, load and check the data on the host, then
        create the run folder (``run_dir``, or ``root/<timestamp>``; an existing one is an
        error unless ``overwrite``). ``init``: a parameter file, model file or checkpoint
        to start from. ``save``: also write the final model file there.

        ``checkpoint_every`` (epochs, default 10): a checkpoint costs one device-to-host
        copy of the parameters and optimizer state plus an fsync'd file, ~1 ms for a
        small net but up to seconds for a large one; every 10 epochs keeps that under a
        few percent of a small run and bounds what a kill -9 loses to 10 epochs.

        ``comm``: every rank calls this; rank 0 creates the folder, the others get its
        name. ``fields``: the further fields of a subclass (a :class:`model.sweep.Sweep`'s)."""
        if not isinstance(config, RunConfig):
            raise ConfigError(f"config must be a RunConfig, got {type(config).__name__}")
        check_number("checkpoint_every", checkpoint_every, integer=True, low=1)
        _check_environment()
        if init is not None and not str(init).strip():
            raise ConfigError("the init path is empty", setting="init")
        if save is not None:
            save = check_save(save, (config.data, init), run_dir, overwrite)
        if run_dir is not None and _root(comm):
            check_run_dir(run_dir, overwrite)
        elif _root(comm):
            check_creatable(root, "run_dir")  # runs/<timestamp> goes there
        data = prepare_data(config, stream=cls._stream(comm), comm=comm)
        model = build_model(config, data.X.shape[1], data.targets)
        params = None
        if init is not None:
            with about("init"):
                params = load_host_params(checkpoint_source(init), model)  # a folder too
        rows = data.X.shape[0] + _rows(data.X_val)
        check_memory(model, config, rows, cls._replica_count(fields), streamed=data.streamed)
        _log_setup(config, data, model, swept=cls._swept(fields))
        run_dir = on_root(comm, lambda: make_run_dir(run_dir, overwrite=overwrite, root=root))
        return cls(
            config,
            run_dir,
            data,
            model,
            host_rng(config.seed),
            params=params,
            save_path=save,
            checkpoint_every=checkpoint_every,
            comm=comm,
            **fields,
        )

    @classmethod
    def resume(
        cls,
        path,
        *,
        epochs: int | None = None,
        lr: float | None = None,
        run_dir=None,
        save=None,
        overwrite: bool = False,
        checkpoint_every: int = CHECKPOINT_EVERY,
        comm=None,
        **fixed,
    ) -> Run:
        """Continue the run whose folder (or checkpoint file) is ``path`` up to ``epochs``
        in total, bit for bit as if it had not stopped. ``epochs`` and ``lr`` may change
        (the change is recorded); any other RunConfig field given in ``fixed`` must equal
        the stored one, since a resumed run continues the same model on the same data; but
        a data file that moved may be given at its new path (``data``), and is accepted when
        its fingerprint is the run's (the move is recorded).
        ``comm``: as in :meth:`start`; the number of ranks may differ from the run's."""
        source = checkpoint_source(path)
        check_number("checkpoint_every", checkpoint_every, integer=True, low=1)
        _check_environment()
        with about("resume"):
            trained, info, state = cls._load_checkpoint(source)
            config = RunConfig.from_json(info["config"], source)
        if save is not None:
            inputs = (config.data, fixed.get("data"), source)  # the data, where it moved to too
            save = check_save(save, inputs, run_dir or source.parent, overwrite)
        names = {f.name for f in dataclasses.fields(RunConfig)}
        moved = None  # the data file's new path, when it moved: its fingerprint must match
        for name, value in fixed.items():
            if name not in names or name in RESUMABLE:
                raise TypeError(f"Run.resume() got an unexpected keyword argument {name!r}")
            # what the run used: the inferred loss, the data file where no dataset was set
            used = {"loss": trained.model.loss, "dataset": config.data, "data": config.dataset}
            stored = getattr(config, name)
            if stored is None:
                stored = used.get(name)
            same_file = name == "data" and Path(str(value)).resolve() == Path(str(stored))
            if name == "data" and config.data is not None and value and not same_file:
                moved = str(Path(str(value)).resolve())
                continue
            if value is not None and value != stored and not same_file:
                raise ConfigError(
                    f"{name} cannot change when resuming (the run was made with "
                    f"{stored!r}, not {value!r}); only {' and '.join(RESUMABLE)} can (the "
                    "device and the outputs are chosen anew), so start a new run for this",
                    setting=name,
                )
        done = info["epoch"]
        changes = {"epochs": [config.epochs, epochs], "lr": [config.lr, lr]}
        changes["data"] = [config.data, moved]  # the same data, checked by its fingerprint
        new = {k: v for k, (old, v) in changes.items() if v is not None and v != old}
        config = dataclasses.replace(config, **new)  # re-checked by __post_init__
        if config.epochs <= done:
            raise ConfigError(
                f"the run has already trained {done} epochs; to continue it, ask for more "
                f"epochs in total than that (e.g. {2 * done})",
                setting="epochs",
                suggestion=2 * done,
            )
        in_place = run_dir is None  # the run's own folder: errors about it name --resume
        if in_place:
            run_dir = source.parent
        if Path(run_dir).resolve() == source.parent.resolve():
            overwrite = True
        if _root(comm):
            check_run_dir(run_dir, overwrite, "resume" if in_place else "run_dir")
        if config.data is not None and not Path(config.data).is_file():
            raise DataError(
                f"the run's data file {config.data} is gone; if it moved, give its new path "
                "(the run checks that it holds the same data)",
                setting="data",
            )
        data = prepare_data(
            config,
            labels=trained.labels,
            standardizer=trained.standardizer,
            stream=cls._stream(comm),
            comm=comm,
        )
        if info.get("data_sha256") not in (None, data.fingerprint):
            raise CheckpointError(
                f"the data of {config.data or config.dataset} changed since the run was made "
                "(its fingerprint differs), so the run cannot continue bit for bit; restore "
                "the data (or give the path it moved to), or start a new run on the new data",
                setting="data",
            )
        model = build_model(config, data.X.shape[1], data.targets)
        if model != trained.model:
            raise CheckpointError(
                f"{source}: its model {trained.model.sizes} does not fit the data "
                f"({model.sizes}); the data file changed since the run was made"
            )
        rng = _restore_rng(info["rng"], source)
        history = {k: list(v) for k, v in info["history"].items()}
        changes_made = list(info.get("changes", []))
        resumed = {"at_epoch": done, **{k: changes[k] for k in new}} if new else None
        if new:
            changes_made.append(resumed)
            logger.info(
                "resuming at epoch %d with %s",
                done,
                ", ".join(f"{k} {changes[k][0]} -> {changes[k][1]}" for k in new),
            )
        fields = cls._fields_from(info, source)
        rows = data.X.shape[0] + _rows(data.X_val)
        check_memory(model, config, rows, cls._replica_count(fields), streamed=data.streamed)
        _log_setup(config, data, model, swept=cls._swept(fields))
        setting = "resume" if in_place else "run_dir"
        run_dir = on_root(comm, lambda: make_run_dir(run_dir, overwrite=overwrite, setting=setting))
        return cls(
            config,
            run_dir,
            data,
            model,
            rng,
            params=trained.params,
            state=state,
            epoch=done,
            history=history,
            save_path=save,
            checkpoint_every=checkpoint_every,
            changes=changes_made,
            resumed=resumed,
            comm=comm,
            step=info.get("step"),
            **fields,
        )

    # Hooks a subclass (model.sweep.Sweep) overrides: whether it streams its data, what a
    # run's checkpoint holds, how many networks it trains, how they start, step and report.

    @staticmethod
    def _swept(fields: dict) -> tuple:
        """The settings that vary between the networks trained: none for one run."""
        return ()

    @staticmethod
    def _stream(comm) -> bool | None:
        """``prepare_data``'s ``stream``: by size alone, and whenever the file allows when
        there are several ranks, so that each reads only its own rows of each batch."""
        return True if comm is not None and comm.size > 1 else None

    @staticmethod
    def _load_checkpoint(source):
        return load_checkpoint(source)

    @staticmethod
    def _fields_from(info: dict, source) -> dict:
        return {}

    @staticmethod
    def _replica_count(fields: dict) -> int:
        return 1

    def _init_params(self, backend) -> dict:
        return self.model.init_params(backend, self.rng)

    def _optimizer(self, params):
        config = self.config
        return make_optimizer(config.optimizer, config.lr, weight_decay=config.weight_decay)

    def _fit(self, *args, **kwargs):
        return fit(*args, **kwargs)

    def _progress(self, record: dict) -> dict:
        return {k: f"{v:.4g}" for k, v in record.items()}

    # ------------------------------------------------------------------ training

    def train(self, backend=None, *, progress: bool = False) -> dict:
        """Train on ``backend`` up to ``config.epochs``; returns the summary that is also
        written to metrics.json. An interrupt or divergence saves the last completed
        epoch (checkpoint, metrics.json, loss.png) and is re-raised."""
        if backend is None or isinstance(backend, str):
            backend = get_backend(backend, self.config.dtype)
        if not isinstance(backend, Backend):
            raise ConfigError(
                f"train() takes a Backend (get_backend(device, dtype)) or a device string, "
                f"got {type(backend).__name__}",
                setting="device",
            )
        if backend.dtype_name != self.config.dtype:
            raise ConfigError(
                f"the backend's dtype is {backend.dtype_name} but the run trains in "
                f"{self.config.dtype}; use get_backend(device, {self.config.dtype!r})",
                setting="dtype",
            )
        config, model, data = self.config, self.model, self.data
        if self.params is None:
            params = self._init_params(backend)
        else:
            params = {k: backend.asarray(v) for k, v in self.params.items()}
        optimizer = self._optimizer(params)
        step = (
            "in-place"
            if uses_fast_step(model, optimizer, params, xp=backend.xp, comm=self.comm)
            else "portable"
        )
        if step == "in-place":
            logger.info(
                "step: in-place %s step (%s=0 runs the portable one)", config.optimizer, FAST_ENV
            )
        if self.step is not None and step != self.step:  # the same math, to rounding
            if self.resumed is None:  # else one entry with this resume's other changes
                self.resumed = {"at_epoch": self.epoch}
                self.changes.append(self.resumed)
            self.resumed["step"] = [self.step, step]
            logger.info("step: %s -> %s", self.step, step)
        self.step = step
        if self.state is None:
            state = optimizer.init(params)
        else:
            state = {
                k: v if isinstance(v, int) else {n: backend.asarray(a) for n, a in v.items()}
                for k, v in self.state.items()
            }
        label_dtype = backend.xp.int64 if model.is_classifier else None

        def put(X, y):  # read only: data already in place is not copied again
            if data.streamed:  # fit reads it from the file batch by batch
                return X, y
            return backend.asarray(X, copy=False), backend.asarray(y, label_dtype, copy=False)

        X, Y = put(data.X, data.y)
        validation = None if data.X_val is None else put(data.X_val, data.y_val)
        snap = _DeviceSnapshot(params, state, self.rng, self.epoch, self.history)
        self.backend, self._snap = backend, snap
        bar = (
            progress_bar(config.epochs, initial=self.epoch, desc=backend.spec)
            if progress and self.writes
            else None
        )

        def on_epoch(epoch, params, state, record):
            snap.take(params, state, epoch + 1, record)
            if (epoch + 1) % self.checkpoint_every == 0 and epoch + 1 < config.epochs:
                self._write_checkpoint()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(self._progress(record))

        start = time.perf_counter()
        self.status = "running"
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # divergence is raised below
                self._fit(
                    model,
                    params,
                    X,
                    Y,
                    optimizer=optimizer,
                    epochs=config.epochs,
                    batch_size=config.batch_size,
                    rng=self.rng,
                    state=state,
                    validation=validation,
                    start_epoch=self.epoch,
                    callback=on_epoch,
                    comm=self.comm,
                )
            backend.synchronize()
            self.status = "completed"
        except KeyboardInterrupt:
            self.status = "interrupted"
            raise
        except DivergenceError:
            self.status = "diverged"
            raise
        finally:
            if bar is not None:
                bar.close()
            self.wall_seconds = time.perf_counter() - start
            try:
                if self.status != "running":  # a bug's traceback is not covered by saving
                    with deferred_interrupts():  # a second Ctrl-C waits for the save
                        self.summary = self._finish()
            finally:
                release_run_dir(self.dir)  # training here is over: the folder is free to resume
        return self.summary

    def describe(self, summary: dict) -> str:
        """The summary of :meth:`train` as one line: device, epochs, wall time, training
        loss, validation score, run folder."""
        return (
            f"{summary['device']} | {summary['epochs']} epochs | "
            f"{summary['wall_seconds']:.2f} s | training loss {summary['final_train_loss']:.4g}"
            f" | {score_text(summary['metrics']['validation'])} | {self.dir}"
        )

    def unwritten(self) -> dict:
        """The model files asked for (setting -> path) that a run writes only when it
        completes, if this one did not: a resume writes them only when asked again."""
        if self.status == "completed":
            return {}
        return {k: v for k, v in self._model_outputs().items() if v is not None}

    def _model_outputs(self) -> dict:
        return {"save": self.save_path}

    def kept(self) -> str:
        """What a diverged run's checkpoint holds, for its message; when that epoch's loss
        is already over 100 times the first epoch's, or its validation loss is not finite
        (the step after the loss was taken blew the parameters up), that resuming it will
        not help."""
        losses = self.history.get("loss", [])
        val = self.history.get("val_loss", [])
        if len(losses) > 1 and losses[-1] > 100 * abs(losses[0]):
            why = f"its loss {losses[-1]:.3g} against {losses[0]:.3g} in epoch 1"
        elif val and (val[-1] is None or not math.isfinite(val[-1])):
            why = f"its validation loss is {val[-1]}"
        else:
            return f"epoch {self.saved_epoch}, the last finite one,"
        return (
            f"epoch {self.saved_epoch}, the last finite one ({why}, so start a new run "
            "rather than resume it),"
        )

    def _write_checkpoint(self, *, collective: bool = True) -> str:
        """Copy the snapshot to the host (the only copies between epochs) and save it (on
        the rank that writes); the host copies become this Run's ``params`` and ``state``.
        ``collective``: every rank calls this at the same epoch, so the writing rank's file
        is the one each rank can report as saved (``saved_epoch``)."""
        self.params = host_copy(self._snap.params, self.backend)
        self.state = host_copy(self._snap.state, self.backend)
        path = self._write(self.checkpoint, self._save_checkpoint)
        if self.writes or collective:
            self.saved_epoch = self._snap.epoch
        return path

    def _save_checkpoint(self) -> None:
        """Write the host ``params`` and ``state`` with the training meta as the run's
        checkpoint (a model file that can resume)."""
        self.trained_model().save(self.checkpoint, training=self._training(), state=self.state)

    def _training(self) -> dict:
        """The checkpoint's ``training`` meta: what a resume needs beyond the arrays."""
        snap = self._snap
        return {
            "config": self.config.to_json(),
            "epoch": snap.epoch,
            "rng": snap.rng_state,
            "history": snap.history,
            "changes": self.changes,
            "data_sha256": self.data.fingerprint,
            "step": self.step,
        }

    def _write(self, path: Path, write) -> str:
        """``write()`` when this process writes the run's files; ``path`` as text."""
        if self.writes:
            write()
        return str(path)

    def trained_model(self) -> TrainedModel:
        """The model as last checkpointed (after :meth:`train`: its last completed epoch),
        with its preprocessing, as host arrays."""
        if self.params is None:
            raise HandgradError("the run has no parameters yet; call train() first")
        return TrainedModel(
            self.model,
            self.params,
            self.config.dtype,
            self.data.standardizer,
            self.data.targets.labels,
        )

    def _finish(self) -> dict:
        """Write checkpoint, model file (when asked, on completion), loss.png and
        metrics.json for the last completed epoch; the summary."""
        snap = self._snap
        self.epoch, self.history = snap.epoch, snap.history
        _set_rng_state(self.rng, snap.rng_state)  # train() again continues exactly
        # An interrupt may reach one rank only; completion and divergence reach them all.
        collective = self.status in ("completed", "diverged")
        paths = {"checkpoint": self._write_checkpoint(collective=collective)}
        results = self._results(paths)
        paths["metrics"] = str(self.dir / "metrics.json")
        targets = self.data.targets
        summary = {
            "status": self.status,
            "config": self.config.to_json(),
            "device": self.backend.spec,
            "dtype": self.backend.dtype_name,
            "step": self.step,
            "data": {
                "source": self.data.source,
                "rows": int(self.data.X.shape[0]),
                "validation_rows": _rows(self.data.X_val),
                "features": int(self.data.X.shape[1]),
                "standardized": self.data.standardizer is not None,
                "streamed": self.data.streamed,
            },
            "loss": {
                "name": targets.loss,
                "chosen": targets.reason,
                "outputs": targets.outputs,
                "classes": None if targets.labels is None else targets.labels.to_json(),
            },
            "model": list(self.model.sizes),
            "epochs": snap.epoch,
            **results,
            "changes": self.changes,
            "wall_seconds": self.wall_seconds,
            "paths": paths,
        }
        text = strict_json(summary, indent=2).encode()
        self._write(
            paths["metrics"], lambda: atomic_write(paths["metrics"], lambda f: f.write(text))
        )
        return summary

    def _results(self, paths: dict) -> dict:
        """Write the model file (when asked, on completion) and loss.png, adding their
        paths to ``paths``; the summary's training results. Only on the writing rank."""
        history = self._snap.history
        if self.writes and self.save_path is not None and self.status == "completed":
            paths["model"] = str(self.trained_model().save(self.save_path))
        if self.writes and history.get("loss"):
            paths["plot"] = str(plot_history(self.dir / "loss.png", history, self.model.loss))
        validation = {k[4:]: v[-1] for k, v in history.items() if k.startswith("val_") and v}
        return {
            "final_train_loss": history["loss"][-1] if history.get("loss") else None,
            "metrics": {"validation": validation, "history": history},
        }


def _check_environment() -> None:
    """The environment variables that change how training runs, checked before any work:
    a bad value would otherwise stop the run at its first epoch."""
    fast_enabled()
    blas_threads(0)


def _root(comm) -> bool:
    """True for rank 0 of ``comm``, and for the only process (``comm`` None)."""
    return comm is None or comm.rank == 0


def _rows(X) -> int:
    return 0 if X is None else int(X.shape[0])


def _log_setup(config: RunConfig, data: PreparedData, model: MLP, swept=()) -> None:
    """The data, loss and model lines; a setting in ``swept`` is said to be swept."""
    targets = data.targets
    classes = "" if targets.labels is None else f", classes {_short(targets.labels.to_json())}"
    logger.info(
        "data: %s, %d training + %d validation rows, %d features%s%s",
        data.source,
        data.X.shape[0],
        _rows(data.X_val),
        data.X.shape[1],
        ", standardized" if data.standardizer is not None else "",
        ", memory-mapped: streamed from disk batch by batch" if data.streamed else "",
    )
    logger.info(
        "loss: %s (%s), %d output(s)%s", targets.loss, targets.reason, targets.outputs, classes
    )
    logger.info(
        "model: %s, %s, optimizer %s lr %s, %s, %s",
        "-".join(map(str, model.sizes)),
        "/".join(model.layer_activations),
        config.optimizer,
        "swept" if "lr" in swept else f"{config.lr:g}",
        config.dtype,
        _batch_text(config.batch_size, data.X.shape[0]),
    )


def _batch_text(batch: int | None, rows: int) -> str:
    """The batch size as trained: a size of at least the training rows is full batch."""
    if batch is None:
        return "full batch"
    return f"batch {batch}" if batch < rows else f"batch {batch} >= the {rows} rows: full batch"


def _short(values: list) -> str:
    return ", ".join(map(str, values)) if len(values) <= 12 else f"{values[0]}..{values[-1]}"
