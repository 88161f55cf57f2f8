"""Learning-rate schedules and early stopping: per-epoch decisions, each a pure function
of the epoch, the settings and the monitored losses of the epochs before, so that a
resumed run recomputes them exactly from its stored history.

Schedules give the learning rate of epoch e (from 0), lr_0 being the run's ``lr``:

    constant     lr_e = lr_0
    step         lr_e = lr_0 factor^floor(e / step_size)             (PyTorch's StepLR)
    cosine       lr_e = lr_min + (lr_0 - lr_min) (1 + cos(pi min(e, T) / T)) / 2
                 over a period of T epochs (default: the run's epochs), lr_min after it
                                                        (PyTorch's CosineAnnealingLR)
    invscaling   lr_e = lr_0 / (e + 1)^power                         (scikit-learn's,
                 which counts samples where this counts epochs)
    plateau      lr_e = max(lr_0 factor^k_e, lr_min), k_e the reductions the monitored
                 losses v_0 .. v_{e-1} called for: after each v_j, v_j < best - threshold
                 makes v_j the best and the count of bad epochs 0, else that count grows
                 by one, and when it exceeds ``patience`` it is a reduction (k + 1) and
                 the count starts again from 0 (PyTorch's ReduceLROnPlateau in mode
                 "min" with an absolute threshold, no cooldown; scikit-learn's
                 "adaptive" is factor 0.2, patience 1, threshold its tol)

Defaults: step_size 10, factor 0.1, patience 10, threshold 0, power 0.5, lr_min 0.

Early stopping (Keras's ``EarlyStopping(restore_best_weights=True)``, scikit-learn's
``n_iter_no_change``) watches the same monitored loss: the validation loss, or the
training loss without a validation split. After epoch e, v_e < best - min_delta makes e
the best epoch (its parameters are kept) and the wait 0, else the wait grows by one;
training stops when the wait reaches ``patience``, and the network's final parameters
are those of its best epoch. The best epoch's parameters are the ones at the end of that
epoch, on which the validation loss was taken (the training loss of a minibatch epoch is
the mean over its steps, before each one: Keras's convention for ``monitor="loss"``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence

from array_api_compat import array_namespace, device

from backends.errors import ConfigError, check_number
from backends.transfer import to_numpy

__all__ = [
    "SCHEDULES",
    "Control",
    "EarlyStopping",
    "Progress",
    "Schedule",
    "plateau_reductions",
]

SCHEDULES = ("constant", "step", "cosine", "invscaling", "plateau")

# The parameters each schedule reads (the others keep their defaults).
USES = {
    "constant": (),
    "step": ("step_size", "factor"),
    "cosine": ("period", "lr_min"),
    "invscaling": ("power",),
    "plateau": ("factor", "patience", "threshold", "lr_min"),
}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule (see the module docstring); every value is checked."""

    name: str = "constant"
    step_size: int = 10
    factor: float = 0.1
    patience: int = 10
    threshold: float = 0.0
    power: float = 0.5
    lr_min: float = 0.0
    period: int | None = None

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ConfigError(
                f"unknown schedule {self.name!r}; use one of: {', '.join(SCHEDULES)}",
                setting="schedule",
            )
        checks = {
            "step_size": {"integer": True, "low": 1},
            "factor": {"low": 0, "low_open": True, "high": 1, "high_open": True},
            "patience": {"integer": True, "low": 0},
            "threshold": {"low": 0},
            "power": {"low": 0, "low_open": True},
            "lr_min": {"low": 0},
            "period": {"integer": True, "low": 1},
        }
        for name, limits in checks.items():
            value = getattr(self, name)
            if value is not None:
                setting = SETTINGS.get(name, name)
                object.__setattr__(self, name, check_number(setting, value, **limits))

    def lr(self, epoch: int, lr0: float, monitored: Sequence[float] = ()) -> float:
        """The learning rate of epoch ``epoch`` (from 0) for a base rate ``lr0``;
        ``monitored`` holds the monitored losses of the epochs before it (plateau)."""
        name = self.name
        if name == "step":
            return lr0 * self.factor ** (epoch // self.step_size)
        if name == "cosine":
            if self.period is None:
                raise ConfigError("the cosine schedule needs its period (epochs)",
                                  setting="lr_period")  # fmt: skip
            t = min(epoch, self.period) / self.period
            return self.lr_min + (lr0 - self.lr_min) * (1.0 + math.cos(math.pi * t)) / 2.0
        if name == "invscaling":
            return lr0 / (epoch + 1) ** self.power
        if name == "plateau":
            k = plateau_reductions(monitored, self.patience, self.threshold)
            return max(lr0 * self.factor**k, self.lr_min)
        return lr0

    def check_base(self, lr0: float) -> None:
        """A ConfigError when the floor ``lr_min`` is not below the base rate."""
        if self.name in ("cosine", "plateau") and self.lr_min >= lr0:
            raise ConfigError(
                f"the {self.name} schedule's floor lr_min ({self.lr_min:g}) must be below the "
                f"learning rate ({lr0:g})",
                setting="lr_min",
            )


# A Schedule field -> the RunConfig setting (and flag) that sets it.
SETTINGS = {
    "step_size": "lr_step_size",
    "factor": "lr_factor",
    "patience": "lr_patience",
    "threshold": "lr_threshold",
    "power": "lr_power",
    "lr_min": "lr_min",
    "period": "lr_period",
}


def plateau_reductions(values: Sequence[float], patience: int, threshold: float) -> int:
    """k: how many times the plateau schedule has reduced the rate after ``values``."""
    best, bad, k = math.inf, 0, 0
    for v in values:
        if v < best - threshold:
            best, bad = v, 0
        else:
            bad += 1
        if bad > patience:
            k, bad = k + 1, 0
    return k


@dataclasses.dataclass(frozen=True)
class Progress:
    """Early stopping's account after some epochs: the best epoch (from 0; None before
    any finite value), its value, the epochs waited since, and whether it stopped."""

    best_epoch: int | None = None
    best: float = math.inf
    wait: int = 0
    stopped: bool = False


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop after ``patience`` epochs without the monitored loss falling below its best
    by more than ``min_delta`` (see the module docstring)."""

    patience: int
    min_delta: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "patience", check_number(
            "early_stopping", self.patience, integer=True, low=1))  # fmt: skip
        object.__setattr__(self, "min_delta", check_number("min_delta", self.min_delta, low=0))

    def step(self, progress: Progress, epoch: int, value: float) -> tuple[Progress, bool]:
        """The account after epoch ``epoch`` whose monitored loss is ``value``, and whether
        that epoch is the new best."""
        if value < progress.best - self.min_delta:
            return Progress(epoch, value, 0, False), True
        wait = progress.wait + 1
        return Progress(progress.best_epoch, progress.best, wait, wait >= self.patience), False

    def scan(self, values: Sequence[float]) -> Progress:
        """The account after the epochs whose monitored losses are ``values``."""
        progress = Progress()
        for epoch, value in enumerate(values):
            if progress.stopped:
                break
            progress, _ = self.step(progress, epoch, value)
        return progress


def _each(value, count: int, kind: type, name: str) -> list:
    """One ``kind`` (or None) per network: ``value`` for all, or a sequence of ``count``."""
    if value is None or isinstance(value, kind):
        return [value] * count
    listed = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == count
    if listed and all(v is None or isinstance(v, kind) for v in value):
        return list(value)
    raise ConfigError(
        f"{name} must be a {kind.__name__}, None, or a sequence of one (or None) per "
        f"replica ({count}), got {value!r:.80}",
        setting=name,
    )


def _with_lr(optimizer, lr):
    """``optimizer`` with learning rate ``lr`` (a number or per-replica array, already
    checked: a schedule's rates are finite and >= 0, and may reach 0)."""
    out = copy.copy(optimizer)
    object.__setattr__(out, "lr", lr)
    return out


class Control:
    """:func:`model.fit.fit`'s per-network decisions, epoch by epoch: the learning rate
    each network's schedule gives (recorded in its history as ``lr``) and whether early
    stopping holds it. Built from the earlier epochs' ``history`` (as a FitResult holds
    it), from which every decision is recomputed (see the module docstring)."""

    def __init__(self, optimizer, count, schedule, early_stopping, history, monitor: str):
        n = 1 if count is None else count
        self.count, self.monitor = count, monitor
        self.schedules = _each(schedule, n, Schedule, "schedule")
        self.stoppers = _each(early_stopping, n, EarlyStopping, "early_stopping")
        lr = optimizer.lr
        base = [float(lr)] * n if isinstance(lr, int | float) else to_numpy(lr).tolist()
        self.base = [float(v) for v in base]
        for s, lr0 in zip(self.schedules, self.base, strict=True):
            if s is not None:
                s.check_base(lr0)
        histories = [history or {}] if count is None else (history or [{}] * n)
        if len(histories) != n or not all(isinstance(h, dict) for h in histories):
            raise ConfigError(f"history must hold one dict of lists per replica ({n})")
        self.monitored = [list(h.get(monitor, [])) for h in histories]
        self.progress = [
            None if s is None else s.scan(v)
            for s, v in zip(self.stoppers, self.monitored, strict=True)
        ]
        self.scheduled = any(s is not None and s.name != "constant" for s in self.schedules)

    @property
    def stopping(self) -> bool:
        """Whether any network stops early."""
        return any(s is not None for s in self.stoppers)

    @property
    def needs_history(self) -> bool:
        """Whether a decision reads the monitored losses (plateau, early stopping)."""
        return self.stopping or any(s is not None and s.name == "plateau" for s in self.schedules)

    @property
    def stopped(self) -> list[bool]:
        return [p is not None and p.stopped for p in self.progress]

    def best_epochs(self) -> list[int | None]:
        """Per network its best epoch (from 1), None without early stopping or a best."""
        return [None if p is None or p.best_epoch is None else p.best_epoch + 1
                for p in self.progress]  # fmt: skip

    def lrs(self, epoch: int) -> list[float]:
        """Each network's learning rate in epoch ``epoch`` (from 0)."""
        return [
            lr0 if s is None else s.lr(epoch, lr0, v)
            for s, lr0, v in zip(self.schedules, self.base, self.monitored, strict=True)
        ]

    def optimizer(self, optimizer, epoch: int, like):
        """``optimizer`` with epoch ``epoch``'s learning rates: itself without a schedule,
        so that a constant rate steps exactly as it always has."""
        if not self.scheduled:
            return optimizer
        lrs = self.lrs(epoch)
        if self.count is None or len(set(lrs)) == 1:
            return _with_lr(optimizer, lrs[0])
        xp = array_namespace(like)
        return _with_lr(optimizer, xp.asarray(lrs, dtype=like.dtype, device=device(like)))

    def observe(self, records: list) -> list[bool]:
        """Take the epoch's records (one per network, None for one held), and return per
        network whether its parameters are to be kept as its best: the epoch is its new
        best, or (a replica without early stopping beside some with it) it trained."""
        improved = [False] * len(records)
        for r, record in enumerate(records):
            if record is None:
                continue
            value = record.get(self.monitor, math.nan)
            self.monitored[r].append(value)
            stopper, progress = self.stoppers[r], self.progress[r]
            improved[r] = stopper is None
            if stopper is not None and progress is not None and not progress.stopped:
                epoch = len(self.monitored[r]) - 1
                self.progress[r], improved[r] = stopper.step(progress, epoch, value)
        return improved
