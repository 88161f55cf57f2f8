"""A whole training run as library code: config, data, model, checkpoints, resume, metrics.

    run = Run.start(RunConfig(dataset="digits", epochs=50), "runs/a")   # checks, no device yet
    result = run.train(get_backend("auto", run.config.dtype))          # writes runs/a/...
    run = Run.resume("runs/a", epochs=100, lr=1e-3)                     # continues it exactly
    sweep = Run.start(RunConfig(epochs=50), "runs/s", sweep={"lr": [0.01, 0.1], "seed": [0, 1]})

A run's grid has one point, or many: ``sweep`` (see :mod:`model.sweep`) makes one point
per combination of its values, each trained as a replica of one batched pass
(:mod:`model.replicas`), replica r being the single run with those values. Everything
else is the same code: checks, data, folder, checkpoints, interrupts, resume.

Order of work: every setting and output path is checked, then the data is loaded and
checked on the host, then the run folder is created (atomically, and claimed: two runs
never share one, see :mod:`model.folders`), and only then does anything reach a device.
A run folder holds ``checkpoint.npz`` (a model file with the training state, see
:mod:`model.files`), ``metrics.json`` and ``loss.png``; the checkpoint is written every
``checkpoint_every`` epochs and when the run ends, is interrupted (Ctrl-C, or SIGTERM
inside :func:`model.signals.sigterm_as_interrupt`) or diverges, so a killed process loses
at most ``checkpoint_every`` epochs.

Between checkpoints nothing is copied to the host but the epoch's values: the last
completed epoch's parameters and optimizer state are kept on the device, in buffers
allocated once, for an interrupt or a divergence to save.

Data-parallel (``comm``, a :class:`backends.comm.Communicator`): every rank makes the
same Run and trains it with :func:`model.fit.fit`'s ``comm``; rank 0 alone creates the
run folder (its name is broadcast) and writes every file. A checkpoint holds nothing
about the ranks, so a run resumes with any number of them. A sweep trains in one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
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
from backends.errors import ConfigError, DataError, HandgradError, about, check_number
from model.checkpoint import CheckpointError, WriteError, atomic_write, host_copy
from model.config import PreparedData, RunConfig, build_model, check_memory, prepare_data
from model.data import not_a_file
from model.files import (
    ModelFile,
    load_host_params,
    read_meta,
    read_model_file,
    write_model_file,
)
from model.fit import DivergenceError, evaluate, fit
from model.folders import (
    check_creatable,
    check_run_dir,
    check_save,
    checkpoint_source,
    make_run_dir,
    release_run_dir,
    remove_if_unused,
)
from model.network import Sequential
from model.optimizers import make_optimizer
from model.replicas import per_replica, stack_params
from model.report import plot_history, progress_bar, score_text, strict_json
from model.signals import deferred_interrupts
from model.sweep import (
    check_save_all,
    describe_grid,
    model_epochs,
    replica_history,
    sweep_grid,
    sweep_results,
    value_text,
)
from model.trained import TrainedModel
from model.variants import ENV_VAR as FAST_ENV
from model.variants import fast_enabled, step_name

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
        self.params = {k: _into(self.params[k], p) for k, p in params.items()}
        for key, value in state.items():
            kept = self.state.get(key)
            if isinstance(value, dict) and isinstance(kept, dict) and kept.keys() == value.keys():
                self.state[key] = {k: _into(kept[k], v) for k, v in value.items()}
            else:  # a host value, or a buffer that appeared (early stopping's best)
                self.state[key] = _copy_tree(value)
        self.epoch, self.rng_state = epoch, _rng_state(self.rng)
        for k, v in record.items():
            self.history.setdefault(k, []).append(v)


def _copy(a):
    return array_namespace(a).asarray(a, copy=True)


def _into(buffer, value):
    """``value`` copied into ``buffer`` where arrays can be written, else a new copy."""
    try:
        buffer[...] = value
    except (TypeError, ValueError):  # immutable arrays (JAX)
        return _copy(value)
    return buffer


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


# Keywords people write for a setting by another name (the CLI's --out, say).
_ALIASES = {"out": "run_dir", "output": "run_dir", "out_dir": "run_dir",
            "output_dir": "run_dir", "folder": "run_dir", "learning_rate": "lr"}  # fmt: skip


def _check_keywords(method: str, given: dict, valid, config_fields=()) -> None:
    """A ConfigError for a keyword ``method`` does not take, naming the valid one meant
    (an alias, the closest name, or a RunConfig field among ``config_fields``, which
    belongs in the config): raised before any work, never as a TypeError after the data
    has loaded."""
    for name in given:
        meant = _ALIASES.get(name, name)
        close = difflib.get_close_matches(name, list(valid), n=1)
        fields = [meant] if meant in config_fields else (
            difflib.get_close_matches(name, list(config_fields), n=1))  # fmt: skip
        hint = ""
        if meant in valid:
            hint = f"; did you mean {meant!r}?"
        elif fields and (fields[0] == meant or not close):
            hint = f"; {fields[0]!r} is a setting of the RunConfig: RunConfig(..., {fields[0]}=...)"
        elif close:
            hint = f"; did you mean {close[0]!r}?"
        raise ConfigError(
            f"{method}() has no setting {name!r}{hint} (it takes: {', '.join(valid)})"
        )


_START_KEYWORDS = ("run_dir", "sweep", "init", "save", "save_all", "overwrite",
                   "checkpoint_every", "root", "comm")  # fmt: skip


@dataclasses.dataclass(eq=False)
class Run:
    """A training run in its folder. Make one with :meth:`start` or :meth:`resume` (both
    check everything and touch no device), then call :meth:`train`.

    ``epoch`` counts completed epochs; ``changes`` lists the settings changed on resume
    (as recorded in metrics.json), ``resumed`` being this resume's entry of it, if it made
    one; ``params`` / ``state`` are host arrays to start from (None: drawn from ``rng`` /
    fresh). A sweep has ``grid`` (one dict of swept values per replica; None for one
    network), ``rng`` one generator per replica, ``diverged`` per replica the epoch (from
    1) it diverged in, or None, and ``save_all`` a folder for every replica's model file.
    """

    config: RunConfig
    dir: Path
    data: PreparedData
    model: Sequential
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
    grid: list | None = None
    diverged: list = dataclasses.field(default_factory=list)
    save_all: Path | None = None

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files: rank 0, or the only process."""
        return _root(self.comm)

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint.npz"

    @property
    def replicas(self) -> int | None:
        """How many networks a sweep trains; None for one network."""
        return None if self.grid is None else len(self.grid)

    def replica_config(self, r: int) -> RunConfig:
        """The RunConfig of replica r of a sweep: ``config`` with its swept values."""
        return dataclasses.replace(self.config, **(self.grid or [{}])[r])

    # ------------------------------------------------------------------ making a run

    @classmethod
    def start(
        cls,
        config: RunConfig,
        run_dir=None,
        *,
        sweep: dict | None = None,
        init=None,
        save=None,
        save_all=None,
        overwrite: bool = False,
        checkpoint_every: int = CHECKPOINT_EVERY,
        root="runs",
        comm=None,
        **unknown,
    ) -> Run:
        """Check ``config`` and every path, load and check the data on the host, then
        create the run folder (``run_dir``, or ``root/<timestamp>``; an existing one is an
        error unless ``overwrite``). ``sweep``: setting -> values (lr, seed,
        weight_decay), trained as replicas in one pass. ``init``: a parameter file, model
        file or checkpoint to start from (every replica of a sweep). ``save``: also write
        the final model file there (a sweep's best replica); ``save_all``: a folder for
        every replica's model file.

        ``checkpoint_every`` (epochs, default 10): a checkpoint costs one device-to-host
        copy of the parameters and optimizer state plus an fsync'd file, ~1 ms for a
        small net but up to seconds for a large one; every 10 epochs keeps that under a
        few percent of a small run and bounds what a kill -9 loses to 10 epochs.

        ``comm``: every rank calls this; rank 0 creates the folder, the others get its
        name."""
        _check_keywords("Run.start", unknown, _START_KEYWORDS, RunConfig.__dataclass_fields__)
        if not isinstance(config, RunConfig):
            raise ConfigError(f"config must be a RunConfig, got {type(config).__name__}")
        check_number("checkpoint_every", checkpoint_every, integer=True, low=1)
        _check_environment()
        grid = None if sweep is None else sweep_grid(config, sweep)
        _check_one_process(grid, comm)
        if save_all is not None and grid is None:
            raise ConfigError(
                "save_all saves the replicas of a sweep; give a sweep", setting="save_all"
            )
        save, save_all = _check_outputs(
            config, run_dir, init, save, save_all, overwrite, root, comm
        )
        data = prepare_data(config, stream=_stream(comm, grid), comm=comm)
        model = build_model(config, data.X.shape[1], data.targets)
        params = None
        if init is not None:
            with about("init"):
                source = checkpoint_source(init)  # a run folder too
                params = load_host_params(source, model)
                if _root(comm):  # one voice: rank 0's
                    _warn_if_init_differs(source, data)
            if grid is not None:
                params = stack_params([params] * len(grid))
        rows = data.X.shape[0] + _rows(data.X_val)
        check_memory(model, config, rows, 1 if grid is None else len(grid), streamed=data.streamed)
        _log_setup(config, data, model, swept=tuple(sweep or ()))
        if grid is not None:
            logger.info("sweep: %d replicas in one pass: %s", len(grid), describe_grid(sweep))
        run_dir = on_root(comm, lambda: make_run_dir(run_dir, overwrite=overwrite, root=root))
        seeds = (
            [config.seed] if grid is None else [dataclasses.replace(config, **g).seed for g in grid]
        )
        rng = [host_rng(s) for s in seeds]
        return cls(
            config, run_dir, data, model, rng[0] if grid is None else rng, params=params,
            save_path=save, checkpoint_every=checkpoint_every, comm=comm, grid=grid,
            diverged=[None] * (1 if grid is None else len(grid)), save_all=save_all,
        )  # fmt: skip

    @classmethod
    def resume(
        cls,
        path,
        *,
        epochs: int | None = None,
        lr: float | None = None,
        run_dir=None,
        save=None,
        save_all=None,
        overwrite: bool = False,
        checkpoint_every: int = CHECKPOINT_EVERY,
        comm=None,
        **fixed,
    ) -> Run:
        """Continue the run whose folder (or checkpoint file) is ``path`` up to ``epochs``
        in total, bit for bit as if it had not stopped. ``epochs`` and ``lr`` (not a
        sweep's) may change (the change is recorded); any other RunConfig field given in
        ``fixed`` must equal the stored one, since a resumed run continues the same model
        on the same data; but a data file that moved may be given at its new path
        (``data``), and is accepted when its fingerprint is the run's (the move is
        recorded). A run whose checkpoint holds all its epochs but whose metrics.json or
        loss.png a kill left unwritten is finished: those are written, nothing trains.
        ``comm``: as in :meth:`start`; the number of ranks may differ from the run's."""
        source = checkpoint_source(path)
        unknown = {k: v for k, v in fixed.items() if k not in _FIXABLE}
        _check_keywords("Run.resume", unknown, _resume_keywords())
        check_number("checkpoint_every", checkpoint_every, integer=True, low=1)
        _check_environment()
        with about("resume"):
            stored = read_model_file(source)
            info = _training_of(stored, source)
            config = RunConfig.from_json(info["config"], source)
            grid = _grid_of(info, stored.replicas, source)
        _check_resumed_outputs(grid, comm, lr, save_all, path)
        if save is not None:
            inputs = (config.data, fixed.get("data"), source)  # the data, where it moved to too
            save = check_save(save, inputs, run_dir or source.parent, overwrite)
        save_all = check_save_all(save_all, save, overwrite)
        moved = _fixed_settings(config, stored.network, fixed)
        done = info["epoch"]
        config, changes = _resumed_config(config, done, epochs, lr, moved, source)
        in_place = run_dir is None  # the run's own folder: errors about it name --resume
        run_dir = source.parent if in_place else run_dir
        overwrite = overwrite or Path(run_dir).resolve() == source.parent.resolve()
        setting = "resume" if in_place else "run_dir"
        if _root(comm):
            check_run_dir(run_dir, overwrite, setting)
        data = _resumed_data(config, stored, info, comm, grid)
        model = build_model(config, data.X.shape[1], data.targets)
        if model != stored.network:
            raise CheckpointError(
                f"{source}: its model {stored.network.sizes} does not fit the data "
                f"({model.sizes}); the data file changed since the run was made"
            )
        resumed = {"at_epoch": done, **changes} if changes else None
        rows = data.X.shape[0] + _rows(data.X_val)
        count = 1 if grid is None else len(grid)
        check_memory(model, config, rows, count, streamed=data.streamed)
        _log_setup(config, data, model, swept=tuple(grid[0]) if grid else ())
        run_dir = on_root(comm, lambda: make_run_dir(run_dir, overwrite=overwrite, setting=setting))
        return cls(
            config, run_dir, data, model, _restore_rng(info["rng"], source),
            params=stored.params, state=stored.state, epoch=done,
            history={k: list(v) for k, v in info["history"].items()}, save_path=save,
            checkpoint_every=checkpoint_every,
            changes=[*info.get("changes", []), *([resumed] if resumed else [])],
            resumed=resumed, comm=comm, step=info.get("step"), grid=grid,
            diverged=list(info.get("diverged") or [None] * count), save_all=save_all,
            saved_epoch=done if in_place else None,  # the checkpoint on disk, until replaced
        )  # fmt: skip

    # ------------------------------------------------------------------ training

    def train(self, backend=None, *, progress: bool = False) -> dict:
        """Train on ``backend`` up to ``config.epochs``; returns the summary that is also
        written to metrics.json. An interrupt or divergence saves the last completed
        epoch (checkpoint, metrics.json, loss.png) and is re-raised."""
        backend = self._backend(backend)
        config, model, data = self.config, self.model, self.data
        params, optimizer, state = self._start_training(backend)
        label_dtype = backend.xp.int64 if model.is_classifier else None

        def put(X, y):  # read only: data already in place is not copied again
            if data.streamed:  # fit reads it from the file batch by batch
                return X, y
            return backend.asarray(X, copy=False), backend.asarray(y, label_dtype, copy=False)

        X, Y = put(data.X, data.y)
        validation = None if data.X_val is None else put(data.X_val, data.y_val)
        self._on_device = (X, Y, validation)  # for the final scores
        snap = _DeviceSnapshot(params, state, self.rng, self.epoch, self.history)
        self.backend, self._snap = backend, snap
        bar = None
        if progress and self.writes:
            bar = progress_bar(config.epochs, initial=self.epoch, desc=backend.spec)

        def on_epoch(epoch, params, state, record):
            if self.grid is not None:
                record = self._per_key(epoch, record)
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
                fit(
                    model, params, X, Y, optimizer=optimizer, epochs=config.epochs,
                    batch_size=config.batch_size, rng=self.rng, state=state,
                    validation=validation, start_epoch=self.epoch, callback=on_epoch,
                    comm=self.comm, divergence="raise" if self.grid is None else "freeze",
                    diverged=None if self.grid is None else list(self.diverged),
                    **self._fit_options(),
                )  # fmt: skip
            self._check_some_replica_trained()
            backend.synchronize()
            self.status = "completed"
        except KeyboardInterrupt:
            self.status = "interrupted"
            raise
        except DivergenceError as exc:
            self.status = "diverged"
            _blame_scale(exc, self.data)
            raise
        finally:
            if bar is not None:
                bar.close()
            self.wall_seconds = time.perf_counter() - start
            self._close()
        return self.summary

    def _close(self) -> None:
        """After training (however it ended): save what there is to save, and free the
        folder; a folder this run made and never wrote into is removed."""
        try:
            if self.status != "running":  # a bug's traceback is not covered by saving
                with deferred_interrupts():  # a second Ctrl-C waits for the save
                    self.summary = self._finish()
        finally:
            release_run_dir(self.dir)  # training here is over: the folder is free to resume
            if self.writes and self.saved_epoch is None:  # no checkpoint: a failed first write
                remove_if_unused(self.dir)

    def _backend(self, backend) -> Backend:
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
        return backend

    def _start_training(self, backend):
        """(params, optimizer, state) on ``backend``: the run's own, or drawn fresh; the
        step it takes, recorded when a resume switches it."""
        config, model = self.config, self.model
        if self.params is not None:
            params = {k: backend.asarray(v) for k, v in self.params.items()}
        elif self.grid is None:
            params = model.init_params(backend, self.rng)
        else:
            params = stack_params([model.init_params(backend, g) for g in self.rng])
        optimizer = make_optimizer(config.optimizer, config.lr, weight_decay=config.weight_decay)
        if self.grid is not None:
            configs = [self.replica_config(r) for r in range(len(self.grid))]
            like = params[next(iter(model.trained))]
            optimizer = per_replica(
                optimizer,
                lr=[c.lr for c in configs],
                weight_decay=[c.weight_decay for c in configs],
                like=like,
            )
        step = step_name(backend.xp)
        if step == "in-place":
            logger.info("step: in-place variants (%s=0 runs the portable code)", FAST_ENV)
        if self.step is not None and step != self.step:  # the same math, to rounding
            if self.resumed is None:  # else one entry with this resume's other changes
                self.resumed = {"at_epoch": self.epoch}
                self.changes.append(self.resumed)
            self.resumed["step"] = [self.step, step]
            logger.info("step: %s -> %s", self.step, step)
        self.step = step
        if self.state is None:
            state = optimizer.init({k: params[k] for k in model.trained})
        else:
            state = {
                k: {n: backend.asarray(a) for n, a in v.items()} if isinstance(v, dict) else v
                for k, v in self.state.items()
            }
        return params, optimizer, state

    def _fit_options(self) -> dict:
        """fit's schedule, early stopping, clipping (one per replica for a sweep) and the
        history they continue from."""
        configs = [self.replica_config(r) for r in range(self.replicas or 1)]
        options = {
            "schedule": [c.schedule_spec() for c in configs],
            "early_stopping": [c.stopper() for c in configs],
            "clip_grad": [c.clip_grad for c in configs],
        }
        if self.grid is None:
            options = {k: v[0] for k, v in options.items()}
            return {**options, "history": self.history}
        histories = [replica_history(self.history, r) for r in range(len(configs))]
        return {**options, "history": histories}

    def _per_key(self, epoch: int, records: list) -> dict:
        """A sweep's epoch records (one per replica, None once diverged) as one record of
        per-replica lists; a newly diverged replica is marked before a checkpoint can
        record the epoch."""
        for r, rec in enumerate(records):
            if rec is None and self.diverged[r] is None and not self._stopped(r):
                self.diverged[r] = epoch + 1
        keys = dict.fromkeys(k for rec in records if rec for k in rec)
        return {k: [rec and rec[k] for rec in records] for k in keys}

    @property
    def monitor(self) -> str:
        """The loss early stopping and the plateau schedule watch."""
        return "loss" if self.data.X_val is None else "val_loss"

    def _stopping(self, r: int | None = None):
        """Early stopping's account of the run (replica r of a sweep) after the epochs its
        history holds (:class:`model.schedules.Progress`), or None without it."""
        stopper = self.replica_config(r or 0).stopper()
        if stopper is None:
            return None
        snap = getattr(self, "_snap", None)
        history = self.history if snap is None else snap.history
        if r is not None:
            history = replica_history(history, r)
        return stopper.scan(history.get(self.monitor, []))

    def _stopped(self, r: int) -> bool:
        progress = self._stopping(r)
        return progress is not None and progress.stopped

    def _check_some_replica_trained(self) -> None:
        """A sweep whose every replica diverged is a DivergenceError, naming the sweep."""
        if self.grid is None or any(d is None for d in self.diverged):
            return
        lr = min(self.replica_config(r).lr for r in range(len(self.grid)))
        error = DivergenceError(max(self.diverged), math.nan, lr)
        error.setting, error.suggestion = "sweep", f"lr={lr / 10:g},..."  # not --lr
        raise error

    def _progress(self, record: dict) -> dict:
        if self.grid is None:
            return {k: f"{v:.4g}" for k, v in record.items()}
        losses = [v for v in record.get("loss", []) if v is not None]
        out = {"best loss": f"{min(losses):.4g}"} if losses else {}
        return {**out, "diverged": sum(d is not None for d in self.diverged)}

    # ------------------------------------------------------------------ reporting

    def describe(self, summary: dict) -> str:
        """The summary of :meth:`train` as one line: device, epochs (and early stopping's
        best epoch), wall time, training loss (a sweep: its best replica's values) and
        validation score (the model's: with early stopping, its best epoch's), run
        folder."""
        head = f"{summary['device']} | "
        if self.grid is None:
            stopping = summary.get("early_stopping")
            best = "" if stopping is None else (
                f" (stopped early, best epoch {stopping['best_epoch']})" if stopping["stopped"]
                else f" (best epoch {stopping['best_epoch']})")  # fmt: skip
            return (
                f"{head}{summary['epochs']} epochs{best} | {summary['wall_seconds']:.2f} s | "
                f"training loss {summary['final_train_loss']:.4g} | "
                f"{score_text(summary['metrics']['validation'])} | {self.dir}"
            )
        best = summary["best"]  # the sweep completed: some replica did not diverge
        values = ", ".join(f"{k}={value_text(best[k])}" for k in self.grid[0])
        validation = summary["replicas"][best["replica"]]["validation"]
        return (
            f"{head}{len(summary['replicas'])} replicas | {summary['epochs']} epochs | "
            f"{summary['wall_seconds']:.2f} s | best {values}: {score_text(validation)} | "
            f"{summary['diverged']} diverged | {self.dir}"
        )

    def unwritten(self) -> dict:
        """The model files asked for (setting -> path) that a run writes only when it
        completes, if this one did not: a resume writes them only when asked again."""
        if self.status == "completed":
            return {}
        asked = {"save": self.save_path, "save_all": self.save_all}
        return {k: v for k, v in asked.items() if v is not None}

    def kept(self) -> str:
        """What a diverged run's checkpoint holds, for its message; when that epoch's loss
        is already over 100 times the first epoch's, or its validation loss is not finite
        (the step after the loss was taken blew the parameters up), that resuming it will
        not help."""
        if self.grid is not None:
            return "every replica's last finite epoch"
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

    def best(self) -> int | None:
        """A sweep's best replica (:func:`model.sweep.best_replica`)."""
        from model.sweep import best_replica

        history = self._snap.history
        return best_replica(history, self.diverged, model_epochs(self.config, self.grid, history))

    def trained_model(self, r: int | None = None) -> TrainedModel:
        """The model as last checkpointed (after :meth:`train`: its last completed epoch),
        with its preprocessing, as host arrays; for a sweep replica r's (default: the
        best)."""
        if self.params is None:
            raise HandgradError("the run has no parameters yet; call train() first")
        best = (self.state or {}).get("best")  # early stopping's best epoch
        params = self.params if best is None else best
        if self.grid is not None:
            r = self.best() if r is None else r
            if r is None:
                raise ConfigError("the sweep has no trained replica yet; call train() first")
            params = {k: v[r] for k, v in params.items()}
        return TrainedModel(self.model, params, self.config.dtype, self.data.standardizer,
                            self.data.targets.labels)  # fmt: skip

    # ------------------------------------------------------------------ files

    def _write_checkpoint(self, *, collective: bool = True) -> str:
        """Copy the snapshot to the host (the only copies between epochs) and save it (on
        the rank that writes); the host copies become this Run's ``params`` and ``state``.
        ``collective``: every rank calls this at the same epoch, so the writing rank's file
        is the one each rank can report as saved (``saved_epoch``)."""
        self.params = host_copy(self._snap.params, self.backend)
        self.state = host_copy(self._snap.state, self.backend)
        if self.writes:
            with about("run_dir"):
                try:
                    write_model_file(self.checkpoint, self._checkpoint_file())
                except WriteError as exc:
                    raise WriteError(f"{exc}; {self._on_disk()}") from None
        if self.writes or collective:
            self.saved_epoch = self._snap.epoch
        return str(self.checkpoint)

    def _on_disk(self) -> str:
        """What the run's folder keeps when a write fails: its checkpoint's epoch."""
        if self.saved_epoch is None:
            return "no checkpoint was saved"
        return f"the checkpoint on disk holds epoch {self.saved_epoch}"

    @contextlib.contextmanager
    def _after_checkpoint(self):
        """The files written after the checkpoint (model files, loss.png, metrics.json):
        a WriteError says what the checkpoint holds; for a completed run, that resuming it
        with the same epochs writes the files it lacks (:func:`_unfinished`)."""
        try:
            yield
        except WriteError as exc:
            if self.status != "completed":
                raise WriteError(f"{exc}; {self._on_disk()}", setting=exc.setting) from None
            again = " (with the model file's path again)" if exc.setting != "run_dir" else ""
            raise WriteError(
                f"{exc}; the checkpoint on disk holds all {self.saved_epoch} epochs: once there "
                f"is space, resume the run with the same epochs{again} to write the rest",
                setting="resume",
                suggestion=str(self.dir),
            ) from None

    def _checkpoint_file(self) -> ModelFile:
        """The run's checkpoint: the model with the training meta a resume needs."""
        snap = self._snap
        training = {
            "config": self.config.to_json(),
            "epoch": snap.epoch,
            "rng": snap.rng_state,
            "history": snap.history,
            "changes": self.changes,
            "data_sha256": self.data.fingerprint,
            "step": self.step,
        }
        if self.grid is not None:
            training.update(grid=self.grid, diverged=self.diverged)
        return ModelFile(
            self.model, self.params, self.config.dtype, self.data.standardizer,
            self.data.targets.labels, self.replicas, training, self.state,
        )  # fmt: skip

    def _finish(self) -> dict:
        """Write checkpoint, model file (when asked, on completion), loss.png and
        metrics.json for the last completed epoch; the summary. A write that fails
        (a full disk) raises a WriteError saying what the checkpoint on disk holds."""
        snap = self._snap
        self.epoch, self.history = snap.epoch, snap.history
        _set_rng_state(self.rng, snap.rng_state)  # train() again continues exactly
        # An interrupt may reach one rank only; completion and divergence reach them all.
        collective = self.status in ("completed", "diverged")
        if self.status == "completed" and self.writes and self.grid is None:
            _warn_if_not_learning(snap.history.get("loss", []), self.data)
        paths = {"checkpoint": self._write_checkpoint(collective=collective)}
        with self._after_checkpoint():
            return self._summarize(paths)

    def _summarize(self, paths: dict) -> dict:
        """Write the files that follow the checkpoint (model files, loss.png,
        metrics.json), adding their paths to ``paths``; the summary."""
        snap = self._snap
        results = self._results(paths) if self.grid is None else self._sweep_results(paths)
        paths["metrics"] = str(self.dir / "metrics.json")
        summary = {
            "status": self.status,
            "config": self.config.to_json(),
            "device": self.backend.spec,
            "dtype": self.backend.dtype_name,
            "step": self.step,
            "data": self._data_summary(),
            "loss": self._loss_summary(),
            "model": list(self.model.sizes),
            "epochs": snap.epoch,
            **results,
            "changes": self.changes,
            "wall_seconds": self.wall_seconds,
            "paths": paths,
        }
        text = strict_json(summary, indent=2).encode()
        if self.writes:
            with about("run_dir"):
                atomic_write(paths["metrics"], lambda f: f.write(text))
        return summary

    def _data_summary(self) -> dict:
        data = self.data
        return {
            "source": data.source,
            "rows": int(data.X.shape[0]),
            "validation_rows": _rows(data.X_val),
            "features": int(data.X.shape[1]),
            "standardized": data.standardizer is not None,
            "streamed": data.streamed,
        }

    def _loss_summary(self) -> dict:
        targets = self.data.targets
        return {
            "name": targets.loss,
            "chosen": targets.reason,
            "outputs": targets.outputs,
            "classes": None if targets.labels is None else targets.labels.to_json(),
        }

    def _results(self, paths: dict) -> dict:
        """Write the model file (when asked, on completion) and loss.png, adding their
        paths to ``paths``; the summary's training results. Only on the writing rank."""
        history = self._snap.history
        if self.writes and self.save_path is not None and self.status == "completed":
            with about("save"):
                paths["model"] = str(self.trained_model().save(self.save_path))
        if self.writes and history.get("loss"):
            with about("run_dir"):
                path = plot_history(self.dir / "loss.png", history, self.model.loss)
            paths["plot"] = str(path)
        progress = self._stopping()
        at = -1 if progress is None or progress.best_epoch is None else progress.best_epoch
        validation = {k[4:]: v[at] for k, v in history.items() if k.startswith("val_") and v}
        metrics: dict = {"validation": validation, "history": history}
        if self.status == "completed":  # every rank is here: the scores are collective
            training, extra = self._final_scores()
            metrics["training"] = training
            validation.update(extra)
        results = {
            "final_train_loss": history["loss"][at] if history.get("loss") else None,
            "metrics": metrics,
        }
        if progress is not None:
            results["early_stopping"] = self._stopping_summary(progress)
        return results

    def _stopping_summary(self, progress) -> dict:
        """What early stopping did: the loss it watched, its settings, the best epoch (the
        model's) and whether it stopped the run."""
        return {
            "monitor": self.monitor,
            "patience": self.config.early_stopping,
            "min_delta": self.config.min_delta,
            "best_epoch": None if progress.best_epoch is None else progress.best_epoch + 1,
            "stopped": progress.stopped,
        }

    def _final_scores(self) -> tuple[dict, dict]:
        """The model's scores (:func:`model.fit.evaluate`) on the training rows, and what
        the validation rows add to their history's (R^2; per-label accuracy)."""
        X, Y, validation = self._on_device
        params = self._snap.state.get("best", self._snap.params)
        training = evaluate(self.model, params, X, Y, comm=self.comm)
        extra = {}
        if validation is not None:
            scores = evaluate(self.model, params, *validation, comm=self.comm)
            extra = {k: v for k, v in scores.items() if k not in ("loss", "accuracy")}
        return training, extra

    def _sweep_results(self, paths: dict) -> dict:
        """A sweep's results (:func:`model.sweep.sweep_results`), its model files written
        when it completed."""
        by = (
            "val_accuracy"
            if self.model.is_classifier and self.data.X_val is not None
            else ("val_loss" if self.data.X_val is not None else "loss")
        )
        models = None
        if self.status == "completed":
            models = [self.trained_model(r) for r in range(len(self.grid))]
        history = self._snap.history
        return sweep_results(
            self.grid, self.diverged, history, by, models, paths, save=self.save_path,
            save_all=self.save_all, folder=self.dir, loss=self.model.loss,
            epochs=model_epochs(self.config, self.grid, history),
        )  # fmt: skip


def _resume_keywords():
    return ("epochs", "lr", "run_dir", "save", "save_all", "overwrite", "checkpoint_every",
            "comm", *_FIXABLE)  # fmt: skip


def _check_outputs(config, run_dir, init, save, save_all, overwrite, root, comm):
    """The paths a new run reads and writes, checked before any work: ``(save,
    save_all)``."""
    if init is not None and not str(init).strip():
        raise ConfigError("the init path is empty", setting="init")
    if save is not None:
        save = check_save(save, (config.data, init), run_dir, overwrite)
    save_all = check_save_all(save_all, save, overwrite)
    if run_dir is not None and _root(comm):
        check_run_dir(run_dir, overwrite)
    elif _root(comm):
        check_creatable(root, "run_dir")  # runs/<timestamp> goes there
    return save, save_all


_FIXABLE = tuple(f for f in RunConfig.__dataclass_fields__ if f not in RESUMABLE)


def _check_resumed_outputs(grid, comm, lr, save_all, path) -> None:
    """What a resume may ask of the run it continues: a sweep in one process, and with its
    own learning rates when it sweeps them (else a new one is every replica's); every
    replica's model files of a sweep alone."""
    _check_one_process(grid, comm)
    if grid is not None and lr is not None and "lr" in grid[0]:
        raise ConfigError(
            "this sweep is over lr: its replicas' learning rates cannot change on resume; "
            "start a new sweep",
            setting="lr",
        )
    if save_all is not None and grid is None:
        raise ConfigError(
            f"save_all saves a sweep's replicas; {path} is not a sweep", setting="save_all"
        )


def _resumed_config(config: RunConfig, done: int, epochs, lr, moved, source):
    """The config a resume continues with (``epochs``, ``lr`` and a moved data file
    applied, re-checked), and the changes made (setting -> [old, new]), logged. A run
    that trained all its epochs may resume only to finish its outputs
    (:func:`_unfinished`)."""
    asked = {"epochs": epochs, "lr": lr, "data": moved}
    changes = {
        k: [getattr(config, k), v]
        for k, v in asked.items()
        if v is not None and v != getattr(config, k)
    }
    pinned = {}
    if config.schedule == "cosine" and config.lr_period is None and "epochs" in changes:
        pinned["lr_period"] = config.epochs  # the period stays the run's first epochs
    config = dataclasses.replace(config, **{k: v for k, (_, v) in changes.items()}, **pinned)
    if config.epochs <= done:
        if not _unfinished(source, done, config.epochs):
            raise ConfigError(
                f"the run has already trained {done} epochs; to continue it, ask for more "
                f"epochs in total than that (e.g. {2 * done})",
                setting="epochs",
                suggestion=2 * done,
            )
        logger.info("the run has trained all its %d epochs: writing the files it lacks", done)
    if changes:
        said = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())
        logger.info("resuming at epoch %d with %s", done, said)
    return config, changes


def _training_of(stored: ModelFile, source) -> dict:
    """The training meta of a checkpoint; a CheckpointError for a model file without it."""
    info = stored.training
    if not isinstance(info, dict) or not {"config", "epoch", "rng", "history"} <= set(info):
        raise CheckpointError(
            f"{source} is a model file without training state; it can be used for prediction "
            "or to start a new run (init), not resumed"
        )
    return info


def _grid_of(info: dict, replicas: int | None, source) -> list | None:
    """A sweep checkpoint's grid (one dict of swept values per replica); None for one
    network's checkpoint."""
    if replicas is None:
        return None
    grid, diverged = info.get("grid"), info.get("diverged")
    if not isinstance(grid, list) or not isinstance(diverged, list) or len(grid) != replicas:
        raise CheckpointError(f"{source}: its sweep grid is missing")
    return grid


def _fixed_settings(config: RunConfig, network, fixed: dict) -> str | None:
    """Check that the settings a resume names (``fixed``) are the run's own; returns the
    data file's new path when it moved (its fingerprint is checked later), else None."""
    moved = None
    # what the run used: the inferred loss, the data file where no dataset was set
    used = {"loss": network.loss, "dataset": config.data, "data": config.dataset}
    for name, value in fixed.items():
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
                f"{_shown(name, stored)}, not {_shown(name, value)}); only "
                f"{' and '.join(RESUMABLE)} can, and the data file's path when it moved (the "
                "device and the outputs are chosen anew), so start a new run for this",
                setting=name,
            )
    return moved


def _shown(name: str, value) -> str:
    """A setting's value as a user gives it: a full batch for no batch size, a list of
    widths as 64,32, a name without quotes."""
    if value is None:
        return "full batch" if name == "batch_size" else "none"
    if isinstance(value, tuple | list):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _unfinished(source: Path, done: int, epochs: int) -> bool:
    """Whether a run that trained all its epochs (``done`` >= ``epochs``) lacks what it
    writes last: metrics.json of a completed run, or loss.png (a kill between the final
    checkpoint and those files). Resuming it then writes them."""
    import json

    folder = source.parent
    try:
        status = json.loads((folder / "metrics.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    return done == epochs and (status != "completed" or not (folder / "loss.png").is_file())


def _resumed_data(config, stored: ModelFile, info: dict, comm, grid) -> PreparedData:
    """The resumed run's data, prepared with its classes and standardization, and checked
    to be the data it trained on (present, and the same fingerprint: :func:`prepare_data`)."""
    if config.data is not None and not Path(config.data).is_file():
        why = not_a_file(Path(config.data))
        said = "is gone; if it moved, give its new path" if why == "no such file" else (
            f"is {why}; give the path of the file the run trained on")  # fmt: skip
        raise DataError(
            f"the run's data file {config.data} {said} (the run checks that it holds the "
            "same data)",
            setting="data",
        )
    return prepare_data(config, labels=stored.labels, standardizer=stored.standardizer,
                        stream=_stream(comm, grid), comm=comm,
                        fingerprint=info.get("data_sha256"))  # fmt: skip


def _blame_scale(error: DivergenceError, data: PreparedData) -> None:
    """A divergence on features too large to train on (:attr:`PreparedData.unscaled`)
    names standardizing them as the fix: a smaller learning rate only delays it."""
    if not data.unscaled:
        return
    error.args = (
        f"training diverged: loss is {error.loss} at epoch {error.epoch}; the features are "
        f"not standardized and reach {data.largest:.3g}, too large for gradient steps "
        "whatever the learning rate: standardize them",
    )
    error.setting, error.suggestion = "standardize", None


def _warn_if_init_differs(path, data: PreparedData) -> None:
    """Warnings when the model file that starts a run (init) was trained on other inputs
    or classes than the run's: its weights expect standardized (or raw) features, or its
    output unit k stood for another class than the run's k-th. A file of parameters alone
    records neither."""
    meta = read_meta(path) or {}
    pre = meta.get("preprocessing")
    if isinstance(pre, dict) and "standardize" in pre:
        was, now = pre["standardize"] is not None, data.standardizer is not None
        if was != now:
            logger.warning(
                "warning: %s was trained on %s features and this run's are %s: its weights "
                "expect %s inputs; %s",
                path,
                "standardized" if was else "raw",
                "not standardized" if was else "standardized",
                "standardized" if was else "raw",
                "standardize them" if was else "train without standardizing",
                extra={"setting": "standardize"},
            )
    classes, labels = meta.get("classes"), data.targets.labels
    if isinstance(classes, list) and labels is not None and classes != labels.to_json():
        logger.warning(
            "warning: %s's output units stand for the classes %s and this run's for %s: "
            "unit k now stands for this run's k-th class",
            path,
            ", ".join(map(str, classes)),
            ", ".join(map(str, labels.to_json())),
            extra={"setting": "init"},
        )


STALLED = 5  # epochs of exactly the same training loss that make a run stalled
LEARNED = 0.5  # a loss below this share of the first epoch's: the network has learned
ROSE = 2.0  # a last loss above this multiple of the first epoch's: the steps are too large
SCALED = 10.0  # raw features beyond this magnitude: a stall names --standardize


def _warn_if_not_learning(losses: list, data: PreparedData) -> None:
    """A warning when a completed run did not learn: its training loss was exactly the
    same over its last :data:`STALLED` epochs while still above :data:`LEARNED` times the
    first epoch's (saturated or dead units, or steps too small to change a parameter; a
    loss that fell that far and stopped has converged), or it ended above :data:`ROSE`
    times the first epoch's (steps too large, bouncing without overflowing). The fix it
    names: standardizing raw features beyond :data:`SCALED`, else the learning rate."""
    if len(losses) < 2 or not all(math.isfinite(v) for v in (losses[0], losses[-1])):
        return
    first, last = losses[0], losses[-1]
    stalled = len(losses) >= STALLED and len(set(losses[-STALLED:])) == 1
    if stalled and last >= LEARNED * first and last > 0:
        what = f"stayed at {last:.6g} over the last {STALLED} epochs"
        fix, setting = "try another learning rate", "lr"
    elif last > ROSE * first:
        what = f"rose from {first:.6g} (epoch 1) to {last:.6g} (epoch {len(losses)})"
        fix, setting = "the steps are too large: try a smaller learning rate", "lr"
    else:
        return
    if data.standardizer is None and data.largest > SCALED:
        setting = "standardize"
        fix = f"the features are not standardized (values up to {data.largest:.3g}): "
        fix += "standardize them"
    logger.warning(
        "warning: the training loss %s: the network does not learn; %s",
        what,
        fix,
        extra={"setting": setting},
    )


def _check_one_process(grid, comm) -> None:
    if grid is not None and comm is not None:
        raise ConfigError(
            "a sweep trains its replicas in one process; run it without mpiexec",
            setting="sweep",
        )


def _stream(comm, grid) -> bool | None:
    """``prepare_data``'s ``stream``: never for a sweep (replicas train on data held on
    their device); by size alone for one process; whenever the file allows for several
    ranks, so that each reads only its own rows of each batch."""
    if grid is not None:
        return False
    return True if comm is not None and comm.size > 1 else None


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


def _log_setup(config: RunConfig, data: PreparedData, model: Sequential, swept=()) -> None:
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
    extras = "".join(
        f", {text}"
        for text, on in ((f"{config.norm} norm", config.norm != "none"),
                         (f"dropout {config.dropout:g}", config.dropout > 0))
        if on
    )  # fmt: skip
    logger.info(
        "model: %s, %s%s, optimizer %s lr %s, %s, %s",
        "-".join(map(str, model.sizes)),
        "/".join(model.layer_activations),
        extras,
        config.optimizer,
        "swept" if "lr" in swept else f"{config.lr:g}",
        config.dtype,
        _batch_text(config.batch_size, data.X.shape[0]),
    )
    aids = _aids_text(config, data, swept)
    if aids:
        logger.info("training: %s", aids)


def _aids_text(config: RunConfig, data: PreparedData, swept=()) -> str:
    """The schedule, early stopping and clipping a run uses, for the log ("" for none)."""
    parts = []
    if config.schedule != "constant" or "schedule" in swept:
        parts.append(f"lr schedule {'swept' if 'schedule' in swept else config.schedule}")
    if config.early_stopping is not None or "early_stopping" in swept:
        watched = "validation loss" if data.X_val is not None else "training loss"
        parts.append(f"early stopping on the {watched}")
    if config.clip_grad is not None or "clip_grad" in swept:
        parts.append("gradient clipping" + ("" if "clip_grad" in swept else
                                             f" to norm {config.clip_grad:g}"))  # fmt: skip
    return ", ".join(parts)


def _batch_text(batch: int | None, rows: int) -> str:
    """The batch size as trained: a size of at least the training rows is full batch."""
    if batch is None:
        return "full batch"
    return f"batch {batch}" if batch < rows else f"batch {batch} >= the {rows} rows: full batch"


def _short(values: list) -> str:
    return ", ".join(map(str, values)) if len(values) <= 12 else f"{values[0]}..{values[-1]}"
