"""A sweep: the cartesian product of learning rates, seeds and weight decays trained as
replicas (:mod:`model.replicas`) in one batched pass, in one run folder.

    sweep = Sweep.start(RunConfig(epochs=50), {"lr": [0.01, 0.1, 1], "seed": [0, 1, 2]})
    summary = sweep.train(get_backend("auto", sweep.config.dtype))   # 9 replicas at once
    sweep = Sweep.resume(sweep.dir, epochs=100)                      # continues all 9

A :class:`Sweep` is a :class:`model.run.Run` whose parameters carry a leading replica
axis: it checks, loads, checkpoints, is interrupted and resumes as a run does. Replica r
trains with ``config`` but for its own values of the swept settings (``grid[r]``), and is
the single run with those settings: its initial weights and its shuffles come from its own
generator seeded with its seed. Every replica sees the same data split (the one
``config.seed`` draws), so all are scored on the same validation rows.

Only what keeps the networks' shapes and steps alike can share a pass: ``lr``, ``seed``
and ``weight_decay``. A replica that diverges is frozen at its last finite epoch and
marked; the others go on. The run folder holds ``checkpoint.npz`` (every replica, format
``handgrad-sweep``), ``metrics.json`` (per replica: its values, history, final training
loss, validation scores; and the best replica by validation accuracy, else validation
loss, else training loss) and ``loss.png`` (every training curve, the best highlighted,
the diverged marked). ``save`` writes the best replica's model file, ``save_all`` a
folder with every replica's.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from backends import host_rng
from backends.errors import ConfigError
from model.checkpoint import (
    CheckpointError,
    from_file_names,
    read_meta,
    read_npz,
    write_npz,
)
from model.config import RunConfig
from model.fit import DivergenceError
from model.folders import check_output_file, checkpoint_path
from model.replicas import fit_replicas, init_replicas, per_replica
from model.report import draw_plot, score_text
from model.run import CHECKPOINT_EVERY, Run
from model.trained import FORMAT, FORMAT_VERSION, TrainedModel, _model_from_meta

__all__ = [
    "SWEEPABLE",
    "SWEEP_FORMAT",
    "Sweep",
    "SweepModels",
    "best_replica",
    "check_save_all",
    "choose_replica",
    "is_sweep",
    "load_model",
    "load_sweep",
    "load_sweep_checkpoint",
    "parse_sweep",
    "plot_sweep",
    "replica_history",
    "save_replicas",
    "sweep_grid",
]

logger = logging.getLogger("handgrad")

SWEEPABLE = {"lr": float, "seed": int, "weight_decay": float}
SWEEP_FORMAT, SWEEP_FORMAT_VERSION = "handgrad-sweep", 1


MAX_REPLICAS = 4096  # one pass holds every replica's parameters and activations at once


def parse_sweep(specs) -> dict[str, list]:
    """``["lr=0.01,0.1", "seed=0,1"]`` -> ``{"lr": [0.01, 0.1], "seed": [0, 1]}``; a
    ConfigError (setting ``sweep``) for text that is not ``key=value,value,...``."""
    sweep = {}
    for spec in specs:
        key, sep, text = str(spec).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(
                f"sweep {spec!r} is not key=value,value,... (e.g. lr=0.01,0.1)", setting="sweep"
            )
        if key in sweep:
            raise ConfigError(
                f"{key} is swept twice; give all its values in one list", setting="sweep"
            )
        _check_key(key)
        values = [t.strip() for t in text.split(",")] if text.strip() else []
        if "" in values:
            raise ConfigError(
                f"the sweep of {key} has an empty value in {text!r}; list values as {key}=a,b,c",
                setting="sweep",
            )
        try:
            sweep[key] = [SWEEPABLE[key](v) for v in values]
        except ValueError:
            kind = "an integer" if SWEEPABLE[key] is int else "a number"
            raise ConfigError(
                f"the sweep of {key} has a value that is not {kind}: {text!r}", setting="sweep"
            ) from None
    return sweep


def _check_key(key: str) -> None:
    if key in SWEEPABLE:
        return
    if key in RunConfig.__dataclass_fields__:
        raise ConfigError(
            f"{key} cannot be swept: the replicas of one pass share the network's shape, "
            f"data, dtype, optimizer, batch size and epochs; run one sweep per {key} value",
            setting="sweep",
        )
    raise ConfigError(
        f"unknown sweep setting {key!r}; sweep one of: {', '.join(SWEEPABLE)}", setting="sweep"
    )


def sweep_grid(config: RunConfig, sweep: dict) -> list[dict]:
    """The cartesian product of ``sweep``'s values, one dict per replica, in order (the
    last key varying fastest); each replica's config is checked as a RunConfig."""
    if not isinstance(sweep, dict) or not sweep:
        raise ConfigError("a sweep needs at least one setting with its values", setting="sweep")
    for key, values in sweep.items():
        _check_key(key)
        if isinstance(values, str) or not hasattr(values, "__len__") or not len(values):
            raise ConfigError(
                f"the sweep of {key} lists no values; give one or more (e.g. {key}="
                f"{'0,1' if key == 'seed' else '0.01,0.1'})",
                setting="sweep",
            )
        if len(set(values)) != len(values):
            raise ConfigError(
                f"the sweep of {key} lists a value twice ({list(values)}); its replicas would "
                "be the same run",
                setting="sweep",
            )
    size = math.prod(len(v) for v in sweep.values())
    if size > MAX_REPLICAS:
        raise ConfigError(
            f"the sweep has {size} replicas, more than the {MAX_REPLICAS} one pass may train; "
            "sweep fewer values, or split the sweep into several runs",
            setting="sweep",
        )
    grid = [dict(zip(sweep, combo, strict=True)) for combo in itertools.product(*sweep.values())]
    for values in grid:
        try:
            dataclasses.replace(config, **values)
        except ConfigError as exc:
            raise ConfigError(f"sweep: {exc}", setting="sweep") from None
    return grid


def check_save_all(save_all, save, overwrite: bool) -> Path | None:
    """The folder for every replica's model file: new or empty unless ``overwrite``, not
    the folder of the ``save`` file, and not named like a model file (``.npz``), which
    would make a folder called ``x.npz``."""
    if save_all is None:
        return None
    if not str(save_all).strip():
        raise ConfigError(
            "the folder for every replica's model file is empty; name a new or empty folder",
            setting="save_all",
        )
    if Path(save_all).exists() and not Path(save_all).is_dir():
        raise ConfigError(
            f"{save_all} is a file; every replica's model file goes into one folder: give a "
            "new or empty folder",
            setting="save_all",
        )
    if Path(save_all).suffix.lower() == ".npz" and not Path(save_all).is_dir():
        raise ConfigError(
            f"{save_all} names a model file, but every replica's model file goes into one "
            f"folder: give a folder, e.g. {Path(save_all).with_suffix('')}",
            setting="save_all",
        )
    folder = check_output_file(Path(save_all) / "replica-0.npz", "save_all").parent
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise ConfigError(
            f"{folder} already holds files; give a new or empty folder, or allow overwriting",
            setting="overwrite",
        )
    if save is not None and Path(save).resolve().parent == folder.resolve():
        raise ConfigError(
            f"{save} is inside {folder}, where every replica's model file goes; save the best "
            "elsewhere",
            setting="save",
        )
    return folder


def is_sweep(path) -> bool:
    """True when ``path`` (a run folder or checkpoint) holds a sweep's checkpoint; False
    for an empty path, which the caller refuses in its own terms."""
    if path is None or not str(path).strip():
        return False
    path = checkpoint_path(path)
    try:
        meta = read_meta(read_npz(path, ("meta",)), path) or {}
    except CheckpointError:
        return False
    return meta.get("format") == SWEEP_FORMAT


def _label(values: dict) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in values.items())


@dataclasses.dataclass(eq=False)
class Sweep(Run):
    """A run of ``len(grid)`` replicas; make one with :meth:`start` or :meth:`resume`,
    then call :meth:`train`. ``rng`` is one host generator per replica; ``diverged[r]`` the
    epoch (from 1) replica r diverged in, or None; ``save_all`` a folder for every
    replica's model file."""

    grid: list = dataclasses.field(default_factory=list)
    diverged: list = dataclasses.field(default_factory=list)
    save_all: Path | None = None

    @classmethod
    def start(
        cls,
        config: RunConfig,
        sweep: dict,
        run_dir=None,
        *,
        init=None,
        save=None,
        save_all=None,
        overwrite: bool = False,
        checkpoint_every: int = CHECKPOINT_EVERY,
        root="runs",
        comm=None,
    ) -> Sweep:
        """Check ``config``, the ``sweep`` (setting -> values) and every path, then start
        as :meth:`Run.start` does. ``init``: every replica starts from these parameters.
        ``save``: the best replica's model file; ``save_all``: a folder for all of them."""
        if not isinstance(config, RunConfig):
            raise ConfigError(f"config must be a RunConfig, got {type(config).__name__}")
        grid = sweep_grid(config, sweep)
        save_all = check_save_all(save_all, save, overwrite)
        run = super().start(
            config,
            run_dir,
            init=init,
            save=save,
            overwrite=overwrite,
            checkpoint_every=checkpoint_every,
            root=root,
            comm=comm,
            grid=grid,
            diverged=[None] * len(grid),
            save_all=save_all,
        )
        run.rng = [host_rng(run.replica_config(r).seed) for r in range(len(grid))]
        logger.info(
            "sweep: %d replicas in one pass: %s",
            len(grid),
            " x ".join(f"{k} {', '.join(f'{v:g}' for v in vs)}" for k, vs in sweep.items()),
        )
        if run.params is not None:
            run.params = {k: np.stack([v] * len(grid)) for k, v in run.params.items()}
        return run

    @classmethod
    def resume(
        cls, path, *, epochs=None, lr=None, save_all=None, save=None, overwrite=False, **kwargs
    ) -> Sweep:
        """Continue the sweep in ``path`` up to ``epochs`` in total, every replica exactly
        as if it had not stopped; the other keywords as for :meth:`Run.resume`."""
        if lr is not None:
            raise ConfigError(
                "a sweep's learning rates cannot change on resume; start a new sweep",
                setting="lr",
            )
        save_all = check_save_all(save_all, save, overwrite)
        run = super().resume(path, epochs=epochs, save=save, overwrite=overwrite, **kwargs)
        run.save_all = save_all
        return run

    def replica_config(self, r: int) -> RunConfig:
        """The RunConfig of replica r: ``config`` with its swept values."""
        return dataclasses.replace(self.config, **self.grid[r])

    # ------------------------------------------------------------------ Run's hooks

    @staticmethod
    def _swept(fields: dict) -> tuple:
        return tuple(fields["grid"][0])

    @staticmethod
    def _stream(comm) -> bool:
        """Never: replicas train on data held on their device (see fit_replicas)."""
        return False

    @staticmethod
    def _load_checkpoint(source):
        return load_sweep_checkpoint(source)

    @staticmethod
    def _fields_from(info: dict, source) -> dict:
        grid, diverged = info.get("grid"), info.get("diverged")
        if not isinstance(grid, list) or not isinstance(diverged, list):
            raise CheckpointError(f"{source}: its sweep grid is missing")
        return {"grid": grid, "diverged": diverged}

    @staticmethod
    def _replica_count(fields: dict) -> int:
        return len(fields["grid"])

    def _init_params(self, backend) -> dict:
        return init_replicas(self.model, backend, self.rng)

    def _optimizer(self, params):
        configs = [self.replica_config(r) for r in range(len(self.grid))]
        return per_replica(
            super()._optimizer(params),
            lr=[c.lr for c in configs],
            weight_decay=[c.weight_decay for c in configs],
            like=params["W1"],
        )

    def _fit(self, model, params, X, Y, *, rng, callback, **kwargs):
        """fit_replicas; each epoch's records become one record of per-replica lists (None
        for a frozen replica). Every replica diverged: a DivergenceError."""
        if kwargs.pop("comm", None) is not None:
            raise ConfigError(
                "a sweep trains its replicas in one process; run it without mpiexec",
                setting="sweep",
            )

        def on_epoch(epoch, params, state, records):
            for r, rec in enumerate(records):
                if rec is None and self.diverged[r] is None:
                    self.diverged[r] = epoch + 1  # before a checkpoint can record it
            keys = dict.fromkeys(k for rec in records if rec for k in rec)
            callback(epoch, params, state, {k: [rec and rec[k] for rec in records] for k in keys})

        result = fit_replicas(
            model, params, X, Y, rngs=rng, diverged=list(self.diverged), callback=on_epoch, **kwargs
        )
        if all(d is not None for d in self.diverged):
            lr = min(self.replica_config(r).lr for r in range(len(self.grid)))
            error = DivergenceError(max(self.diverged), math.nan, lr)
            error.setting, error.suggestion = "sweep", f"lr={lr / 10:g},..."  # not --lr
            raise error
        return result

    def describe(self, summary: dict) -> str:
        """The summary as one line: device, replicas, epochs, wall time, the best replica's
        values and validation score, how many diverged, run folder."""
        best = summary["best"]  # the sweep completed: some replica did not diverge
        values = ", ".join(f"{k}={best[k]:g}" for k in self.grid[0])
        validation = summary["replicas"][best["replica"]]["validation"]
        return (
            f"{summary['device']} | {len(summary['replicas'])} replicas | "
            f"{summary['epochs']} epochs | {summary['wall_seconds']:.2f} s | best {values}: "
            f"{score_text(validation)} | {summary['diverged']} diverged | {self.dir}"
        )

    def _model_outputs(self) -> dict:
        return {"save": self.save_path, "save_all": self.save_all}

    def kept(self) -> str:
        return "every replica's last finite epoch"

    def _progress(self, record: dict) -> dict:
        losses = [v for v in record.get("loss", []) if v is not None]
        out = {"best loss": f"{min(losses):.4g}"} if losses else {}
        return {**out, "diverged": sum(d is not None for d in self.diverged)}

    # ------------------------------------------------------------------ files

    def replica_history(self, r: int) -> dict:
        """Replica r's history: its finite epochs' host floats per key."""
        return replica_history(self._snap.history, r)

    def best(self) -> int | None:
        """The best replica (:func:`best_replica`)."""
        return best_replica(self._snap.history, self.diverged)

    def trained_model(self, r: int | None = None) -> TrainedModel:
        """Replica r's model (default: the best) as last checkpointed, as host arrays."""
        r = self.best() if r is None else r
        if self.params is None or r is None:
            raise ConfigError("the sweep has no trained replica yet; call train() first")
        single = {k: v[r] for k, v in self.params.items()}
        return dataclasses.replace(super().trained_model(), params=single)

    def _save_checkpoint(self) -> None:
        """The sweep's checkpoint: replica-stacked arrays, and a meta whose ``training``
        also holds the grid and which replicas diverged."""
        meta = TrainedModel(
            self.model, {}, self.config.dtype, self.data.standardizer, self.data.targets.labels
        ).meta()
        meta.update(format=SWEEP_FORMAT, format_version=SWEEP_FORMAT_VERSION)
        meta["training"] = {
            **self._training(),
            "grid": self.grid,
            "diverged": self.diverged,
            "optimizer_step": self.state.get("step", 0),
        }
        arrays = dict(self.params)
        for buffer, values in self.state.items():
            if isinstance(values, dict):
                arrays.update({f"opt.{buffer}.{k}": v for k, v in values.items()})
        arrays["meta"] = np.array(json.dumps(meta))
        write_npz(self.checkpoint, arrays)

    def _results(self, paths: dict) -> dict:
        best = self.best()
        replicas = []
        for r, values in enumerate(self.grid):
            h = self.replica_history(r)
            replicas.append(
                {
                    "replica": r,
                    **values,
                    "status": "diverged" if self.diverged[r] is not None else "trained",
                    "diverged_at_epoch": self.diverged[r],
                    "final_train_loss": h["loss"][-1] if h.get("loss") else None,
                    "validation": {k[4:]: v[-1] for k, v in h.items() if k.startswith("val_")},
                    "history": h,
                }
            )
        if self.status == "completed" and best is not None:
            if self.save_path is not None:
                paths["model"] = str(self.trained_model(best).save(self.save_path))
            if self.save_all is not None:
                models = [self.trained_model(r) for r in range(len(self.grid))]
                paths["models"] = save_replicas(models, self.save_all)
        if any(r["history"] for r in replicas):
            paths["plot"] = str(plot_sweep(self.dir / "loss.png", replicas, best, self.model.loss))
        by = (
            "val_accuracy"
            if self.model.is_classifier and self.data.X_val is not None
            else ("val_loss" if self.data.X_val is not None else "loss")
        )
        return {
            "sweep": {k: list(dict.fromkeys(v[k] for v in self.grid)) for k in self.grid[0]},
            "best": None if best is None else {"replica": best, "by": by, **self.grid[best]},
            "diverged": sum(d is not None for d in self.diverged),
            "replicas": replicas,
        }


def replica_history(history: dict, r: int) -> dict:
    """Replica r's part of a sweep's history (per key, one list of per-replica values
    per epoch): its finite epochs' values per key."""
    out = {}
    for k, rows in history.items():
        values = [row[r] for row in rows if row[r] is not None]
        if values:
            out[k] = values
    return out


def best_replica(history: dict, diverged: list) -> int | None:
    """The replica with the best final validation accuracy, else validation loss, else
    training loss, among those that did not diverge (ties: the first); None when none
    has a finite epoch."""
    scores = []
    for r, at in enumerate(diverged):
        h = replica_history(history, r)
        if at is None and h.get("loss"):
            key = (-h["val_accuracy"][-1],) if "val_accuracy" in h else ()
            key += (h["val_loss"][-1],) if "val_loss" in h else (h["loss"][-1],)
            scores.append((key, r))
    return min(scores)[1] if scores else None


class SweepModels(NamedTuple):
    """A sweep checkpoint as model files would hold it (see :func:`load_sweep`)."""

    models: list[TrainedModel]  # one per replica; models[r].save(file) exports replica r
    grid: list[dict]  # each replica's swept values
    best: int | None  # the best replica; None when every one diverged
    diverged: list  # per replica: the epoch it diverged in, or None
    epoch: int  # the epochs completed when the checkpoint was written
    epochs: int  # the epochs the sweep was to train


def load_sweep(path) -> SweepModels:
    """The sweep whose run folder or checkpoint is ``path``, one TrainedModel per
    replica, each as it was checkpointed (a diverged one at its last finite epoch)."""
    path = checkpoint_path(path)
    stacked, info, _ = load_sweep_checkpoint(path)
    fields = Sweep._fields_from(info, path)
    grid, diverged = fields["grid"], fields["diverged"]
    models = [
        dataclasses.replace(stacked, params={k: v[r] for k, v in stacked.params.items()})
        for r in range(len(grid))
    ]
    best = best_replica(info["history"], diverged)
    epochs = RunConfig.from_json(info["config"], path).epochs
    return SweepModels(models, grid, best, diverged, info["epoch"], epochs)


def choose_replica(replica, count: int, best: int | None) -> int:
    """The replica that ``replica`` names among ``count``: ``"best"`` (``best``, None
    when every replica diverged) or an index 0..count-1, as an int or its text."""
    if str(replica) == "best":
        if best is None:
            raise ConfigError(
                "every replica of this sweep diverged, so none is best; name one by its "
                "index to take its last finite epoch",
                setting="replica",
            )
        return best
    text = str(replica).strip()
    if not text.isdigit() or int(text) >= count:
        raise ConfigError(
            f"replica must be 'best' or an index from 0 to {count - 1}, got {replica!r}",
            setting="replica",
        )
    return int(text)


def load_model(path, replica=None) -> tuple[TrainedModel, str | None]:
    """The model in ``path`` (a model file, a checkpoint, or a run folder), and for a
    sweep a phrase naming which replica it is: ``replica`` (see :func:`choose_replica`;
    None: the best). For a single model ``replica`` must be None, and so is the phrase."""
    path = checkpoint_path(path)
    if not is_sweep(path):
        trained = TrainedModel.load(path)  # or why it cannot: no such file, damaged, ...
        if replica is not None:
            raise ConfigError(
                f"{path} holds one model, not a sweep; leave out the replica",
                setting="replica",
            )
        return trained, None
    sweep = load_sweep(path)
    r = choose_replica("best" if replica is None else replica, len(sweep.models), sweep.best)
    values = _label(sweep.grid[r]) + (", the best" if r == sweep.best else "")
    if sweep.diverged[r] is not None:
        state = f"diverged in epoch {sweep.diverged[r]}: its last finite epoch"
    else:
        state = f"epoch {sweep.epoch} of {sweep.epochs}"
    return sweep.models[r], f"replica {r} ({values}; {state})"


def save_replicas(models: list[TrainedModel], folder: Path) -> list[str]:
    """Write ``models`` as ``folder/replica-<r>.npz`` (r zero-padded to one width), then
    remove any other ``replica-*.npz`` there (an earlier sweep's, when overwriting), so
    that the folder holds this sweep's replicas alone."""
    folder.mkdir(parents=True, exist_ok=True)
    width = len(str(len(models) - 1))
    paths = [m.save(folder / f"replica-{r:0{width}d}.npz") for r, m in enumerate(models)]
    for stale in set(folder.glob("replica-*.npz")) - set(paths):
        stale.unlink()
    return [str(p) for p in paths]


def load_sweep_checkpoint(path):
    """Read a sweep checkpoint: ``(TrainedModel with replica-stacked host parameters,
    training meta, replica-stacked host optimizer state)``; every replica's parameters
    and buffers are checked as a model file's are."""
    arrays = read_npz(path)
    meta = read_meta(arrays, path) or {}
    if meta.get("format") != SWEEP_FORMAT or meta.get("format_version") != SWEEP_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is not a sweep checkpoint (format {meta.get('format')!r}); resume a "
            "single run without a sweep"
        )
    info = meta.get("training")
    if not isinstance(info, dict) or not {"config", "epoch", "rng", "history"} <= set(info):
        raise CheckpointError(f"{path}: its training state is missing or damaged")
    params = {k: v for k, v in arrays.items() if not k.startswith("opt.")}
    count = {v.shape[0] if v.ndim else 0 for v in params.values()}
    if len(count) != 1 or not count.pop():
        raise CheckpointError(f"{path}: its parameters have no common replica axis")
    single = {**meta, "format": FORMAT, "format_version": FORMAT_VERSION}
    replicas = [
        _model_from_meta(single, {k: v[r] for k, v in params.items()}, str(path))
        for r in range(next(iter(params.values())).shape[0])
    ]
    stacked = {k: np.stack([t.params[k] for t in replicas]) for k in replicas[0].params}
    state = {"step": info.get("optimizer_step", 0)}
    for key in [k for k in arrays if k.startswith("opt.")]:
        _, buffer, name = key.split(".", 2)
        state.setdefault(buffer, {})[name] = arrays[key]
    for buffer, values in list(state.items()):
        if buffer != "step":
            checked = [
                from_file_names(
                    replicas[0].model,
                    {k: v[r] for k, v in values.items()},
                    f"{path} (optimizer {buffer})",
                )
                for r in range(len(replicas))
            ]
            state[buffer] = {k: np.stack([c[k] for c in checked]) for k in checked[0]}
    return dataclasses.replace(replicas[0], params=stacked), info, state


def plot_sweep(path: Path, replicas: list, best: int | None, loss_name: str) -> Path:
    """Every replica's training loss per epoch on one figure: the best replica thick, the
    others thin, the diverged dashed with an x at the epoch they diverged in (at their last
    finite loss); written atomically as a PNG."""

    def draw(ax):
        finite = [v for r in replicas for v in r["history"].get("loss", [])]
        others = "other replicas"
        for r in replicas:
            losses = r["history"].get("loss", [])
            label = _label({k: r[k] for k in r if k in SWEEPABLE})
            epochs = np.arange(1, len(losses) + 1)
            if r["status"] == "diverged":
                ax.plot(epochs, losses, ls="--", lw=1, color="0.4")
                at, y = r["diverged_at_epoch"], losses[-1] if losses else max(finite, default=1)
                ax.plot([at], [y], "x", color="k", ms=8, label=f"diverged in {at}: {label}")
            elif r["replica"] == best:
                ax.plot(epochs, losses, lw=2.5, color="C3", zorder=3, label=f"best: {label}")
            else:
                ax.plot(epochs, losses, lw=0.8, alpha=0.6, label=others)
                others = None
        ax.set_yscale("log" if finite and min(finite) > 0 else "linear")
        ax.set_title(f"handgrad sweep: {len(replicas)} replicas in one pass")

    return draw_plot(path, draw, f"{loss_name} training loss")
