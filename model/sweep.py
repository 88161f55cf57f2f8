"""Sweeps: the cartesian product of learning rates, seeds and weight decays, trained as
replicas (:mod:`model.replicas`) in one batched pass by one :class:`model.run.Run`.

    run = Run.start(RunConfig(epochs=50), sweep={"lr": [0.01, 0.1, 1], "seed": [0, 1, 2]})
    summary = run.train(get_backend("auto", run.config.dtype))   # 9 replicas at once
    run = Run.resume(run.dir, epochs=100)                         # continues all 9

Replica r trains with the run's config but for its own values of the swept settings
(``grid[r]``), and is the single run with those settings: its initial weights and its
shuffles come from its own generator seeded with its seed. Every replica sees the same
data split (the one ``config.seed`` draws), so all are scored on the same validation rows.

Only what keeps the networks' shapes and steps alike can share a pass: ``lr``, ``seed``,
``weight_decay``, and the per-epoch decisions of each replica (its learning-rate
``schedule`` and that schedule's parameters, ``early_stopping`` and ``min_delta``,
``clip_grad``): a replica that early stopping stops is held still, like a diverged one,
and its model is its best epoch's. A replica that diverges is frozen at its last finite epoch and
marked; the others go on. The run folder holds ``checkpoint.npz`` (every replica, see
:mod:`model.files`), ``metrics.json`` (per replica: its values, history, final training
loss, validation scores; and the best replica by validation accuracy, else validation
loss, else training loss) and ``loss.png`` (every training curve, the best highlighted,
the diverged marked). ``save`` writes the best replica's model file, ``save_all`` a
folder with every replica's.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from backends.errors import ConfigError, about
from model.checkpoint import CheckpointError
from model.config import RunConfig
from model.files import SWEEP_FORMAT_1, read_meta, read_model_file
from model.folders import check_output_file, checkpoint_path
from model.report import draw_plot
from model.trained import TrainedModel

__all__ = [
    "SWEEPABLE",
    "SweepModels",
    "best_replica",
    "check_save_all",
    "choose_replica",
    "describe_grid",
    "is_sweep",
    "load_model",
    "load_sweep",
    "load_sweep_checkpoint",
    "model_epochs",
    "parse_sweep",
    "plot_sweep",
    "replica_history",
    "save_replicas",
    "sweep_grid",
    "sweep_results",
    "value_text",
]

SWEEPABLE = {
    "lr": float,
    "seed": int,
    "weight_decay": float,
    "schedule": str,
    "lr_step_size": int,
    "lr_factor": float,
    "lr_patience": int,
    "lr_threshold": float,
    "lr_power": float,
    "lr_min": float,
    "lr_period": int,
    "early_stopping": int,
    "min_delta": float,
    "clip_grad": float,
}


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
    try:
        meta = read_meta(checkpoint_path(path)) or {}
    except CheckpointError:
        return False
    return meta.get("format") == SWEEP_FORMAT_1 or bool(meta.get("replicas"))


def describe_grid(sweep: dict) -> str:
    """``lr 0.01, 0.1 x seed 0, 1``: a sweep's values, for the log."""
    return " x ".join(f"{k} {', '.join(map(value_text, vs))}" for k, vs in sweep.items())


def value_text(value) -> str:
    """A swept value as text: numbers as ``:g`` writes them, names as they are."""
    return value if isinstance(value, str) else f"{value:g}"


def _label(values: dict) -> str:
    return ", ".join(f"{k}={value_text(v)}" for k, v in values.items())


def model_epochs(config: RunConfig, grid: list, history: dict) -> list:
    """Per replica the epoch (from 1) whose parameters its model holds: early stopping's
    best epoch (monitoring ``val_loss`` where the history has it, else ``loss``), None
    (its last epoch) without early stopping."""
    monitor = "val_loss" if "val_loss" in history else "loss"
    epochs = []
    for r, values in enumerate(grid):
        stopper = dataclasses.replace(config, **values).stopper()
        best = None
        if stopper is not None:
            best = stopper.scan(replica_history(history, r).get(monitor, [])).best_epoch
        epochs.append(None if best is None else best + 1)
    return epochs


def _at(values: list, epoch: int | None):
    """The value of epoch ``epoch`` (from 1; None: the last)."""
    return values[-1] if epoch is None else values[epoch - 1]


def sweep_results(grid, diverged, history, by: str, models, paths: dict, *, save, save_all,
                  folder: Path, loss: str, epochs=None) -> dict:  # fmt: skip
    """A sweep's part of its summary, per replica (values, status, history, scores) and
    the best; with ``models`` (one per replica: the sweep completed) the best replica's
    model file written to ``save`` and every replica's to ``save_all``, and the plot
    written, their paths added to ``paths``. ``epochs``: per replica the epoch its model
    holds (:func:`model_epochs`; its scores are that epoch's), None for its last."""
    epochs = epochs or [None] * len(grid)
    best = best_replica(history, diverged, epochs)
    replicas = []
    for r, values in enumerate(grid):
        h = replica_history(history, r)
        at = epochs[r]
        replicas.append(
            {
                "replica": r,
                **values,
                "status": "diverged" if diverged[r] is not None else "trained",
                "diverged_at_epoch": diverged[r],
                "final_train_loss": _at(h["loss"], at) if h.get("loss") else None,
                "validation": {k[4:]: _at(v, at) for k, v in h.items() if k.startswith("val_")},
                "history": h,
                **({} if at is None else {"best_epoch": at}),
            }
        )
    if models is not None and best is not None:
        if save is not None:
            with about("save"):
                paths["model"] = str(models[best].save(save))
        if save_all is not None:
            with about("save_all"):
                paths["models"] = save_replicas(models, save_all)
    if any(r["history"] for r in replicas):
        with about("run_dir"):
            paths["plot"] = str(plot_sweep(folder / "loss.png", replicas, best, loss))
    return {
        "sweep": {k: list(dict.fromkeys(v[k] for v in grid)) for k in grid[0]},
        "best": None if best is None else {"replica": best, "by": by, **grid[best]},
        "diverged": sum(d is not None for d in diverged),
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


def best_replica(history: dict, diverged: list, epochs=None) -> int | None:
    """The replica with the best final validation accuracy, else validation loss, else
    training loss, among those that did not diverge (ties: the first); None when none
    has a finite epoch. ``epochs``: per replica the epoch its model holds (early
    stopping's best; None: its last), whose scores count."""
    scores = []
    for r, gone in enumerate(diverged):
        h = replica_history(history, r)
        at = None if epochs is None else epochs[r]
        if gone is None and h.get("loss"):
            key = (-_at(h["val_accuracy"], at),) if "val_accuracy" in h else ()
            key += (_at(h["val_loss"], at),) if "val_loss" in h else (_at(h["loss"], at),)
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
    grid, diverged = info["grid"], info["diverged"]
    models = [
        dataclasses.replace(stacked, params={k: v[r] for k, v in stacked.params.items()})
        for r in range(len(grid))
    ]
    config = RunConfig.from_json(info["config"], path)
    best = best_replica(info["history"], diverged, model_epochs(config, grid, info["history"]))
    return SweepModels(models, grid, best, diverged, info["epoch"], config.epochs)


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
    f = read_model_file(path)
    info = f.training
    if f.replicas is None:
        raise CheckpointError(
            f"{path} is not a sweep checkpoint; resume a single run without a sweep"
        )
    if not isinstance(info, dict) or not {"config", "epoch", "rng", "history"} <= set(info):
        raise CheckpointError(f"{path}: its training state is missing or damaged")
    grid, diverged = info.get("grid"), info.get("diverged")
    if not isinstance(grid, list) or not isinstance(diverged, list) or len(grid) != f.replicas:
        raise CheckpointError(f"{path}: its sweep grid is missing")
    trained = TrainedModel(f.network, f.model_params, f.dtype, f.standardizer, f.labels)
    return trained, info, f.state


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
