"""What every benchmark family shares: the run settings and results, interleaved timing,
paired ratios, the other processes' load, the contenders' training calls and the workers'
subprocess launcher (see bench.py for what is measured and how it is reported)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from backends import HandgradError, get_backend, host_rng
from model import SGD, evaluate, fit

BUSY_CORES = 0.25  # other processes' average CPU use above which a case is marked busy
ENTRY = Path(__file__).with_name("bench.py")  # the workers run as `python bench.py --worker`


@dataclasses.dataclass(frozen=True)
class Settings:
    """One benchmark run's settings, from bench.py's flags (--quick already applied)."""

    quick: bool = False
    epochs: int = 50
    repeats: int = 5
    gpu_device: str = "cuda"
    memmap_gb: float | None = None
    memmap_dir: str = ""
    skip: tuple[str, ...] = ()  # contenders left out (names as printed, or their start)

    def wanted(self, contender: str) -> bool:
        """Whether ``contender`` runs (--skip leaves out names that start with a given one)."""
        return not any(contender.startswith(s) for s in self.skip)


@dataclasses.dataclass
class Results:
    """Rows of the three tables, and notes on what was left out and why."""

    rows: list = dataclasses.field(default_factory=list)  # CPU, replica and GPU cases
    pipeline: list = dataclasses.field(default_factory=list)  # data pipeline and memmap
    mpi: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


# --------------------------------------------------------------------------- timing


def _median_time(run: Callable[[], None], repeats: int, sync: Callable[[], None]) -> float:
    """Median wall time of ``run()`` over ``repeats`` runs after one warm-up run."""
    return _measure(lambda seed: run(), repeats, sync)[0]


def _measure(run: Callable[[int], float | None], repeats: int, sync) -> tuple:
    """``(median seconds, mean accuracy)`` of ``run(seed)`` for seeds 0 .. repeats-1,
    after one warm-up run (seed 0); ``run`` returns its accuracy (or None)."""
    return _measure_together({"run": (run, sync)}, repeats)["run"][:2]


def _measure_together(runs: dict, repeats: int) -> dict:
    """``name -> (median seconds, mean accuracy, seconds of each round)`` for ``runs``
    (name -> (run(seed), sync)), measured interleaved: one warm-up run each, then round k
    runs every contender with seed k, in an order rotated each round. A machine whose
    speed drifts (here: 3.7 to 6.8 ms / epoch for the same case within a minute) then
    shifts every contender alike, and the ratios of one round's times
    (:func:`_with_ratios`) hold where back-to-back blocks would not."""
    names = list(runs)
    for run, sync in runs.values():
        run(0)
        sync()
    times: dict = {name: [] for name in names}
    accuracies: dict = {name: [] for name in names}
    for seed in range(repeats):
        for name in names[seed % len(names) :] + names[: seed % len(names)]:
            run, sync = runs[name]
            sync()
            start = time.perf_counter()
            accuracies[name].append(run(seed))
            sync()
            times[name].append(time.perf_counter() - start)
    return {
        name: (
            statistics.median(times[name]),
            None if accuracies[name][0] is None else statistics.fmean(accuracies[name]),
            times[name],
        )
        for name in names
    }


def _with_ratios(rows: list) -> list:
    """Add ``vs_handgrad`` = contender time / handgrad time (the case's first row): for
    contenders measured interleaved, the median over the rounds of the two times' ratio
    in that round (``round_s``), with its first and third quartiles
    (``vs_handgrad_quartiles``); otherwise the ratio of the medians."""
    key = "epoch_ms" if "epoch_ms" in rows[0] else "step_ms"
    first = rows[0]
    for r in rows:
        if "round_s" in r:
            paired = zip(r["round_s"], first["round_s"], strict=True)
            ratios = [t / t0 for t, t0 in paired]
            r["vs_handgrad"] = statistics.median(ratios)
            if len(ratios) > 1 and r is not first:  # the middle half of the rounds
                quartiles = statistics.quantiles(ratios, n=4, method="inclusive")
                r["vs_handgrad_quartiles"] = quartiles[::2]  # within the measured ratios
        else:
            r["vs_handgrad"] = r[key] / first[key]
    return rows


# --------------------------------------------------------------------------- load


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds all processes used, CPU seconds this one and its children used)."""
    t = os.times()
    ours = t.user + t.system + t.children_user + t.children_system
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return math.nan, ours
    busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK"), ours


@contextlib.contextmanager
def other_load(record: dict):
    """Set ``record["other_cores"]``: the average number of cores other processes kept
    busy while the body ran (/proc/stat minus this process and its children)."""
    start, (all0, ours0) = time.perf_counter(), _cpu_seconds()
    yield record
    all1, ours1 = _cpu_seconds()
    wall = time.perf_counter() - start
    record["other_cores"] = max(0.0, (all1 - all0) - (ours1 - ours0)) / wall


def _busy(r) -> str:
    return " (BUSY)" if r.get("other_cores", 0.0) > BUSY_CORES else ""


def _header(*numbers: str) -> list[str]:
    """A Markdown table's first two lines: case, contender, then right-aligned ``numbers``."""
    return [
        "| case | contender | " + " | ".join(numbers) + " |",
        "| --- | --- |" + " ---: |" * len(numbers),
    ]


# --------------------------------------------------------------------------- contenders


def _handgrad_accuracy(model, backend, X, y, batch: int, lr: float, epochs: int, seed: int):
    """Train handgrad as every CPU case does (init from ``seed``, plain SGD on batches
    shuffled from ``seed + 1000``); its training accuracy."""
    params = model.init_params(backend, host_rng(seed))
    fit(model, params, X, y, optimizer=SGD(lr), epochs=epochs, batch_size=batch,
        rng=host_rng(seed + 1000))  # fmt: skip
    return evaluate(model, params, X, y)["accuracy"]


def _sklearn_accuracy(X, y, hidden, batch: int, lr: float, epochs: int, seed: int) -> float:
    """Train scikit-learn's MLPClassifier as handgrad's CPU cases train (logistic layers,
    plain SGD on shuffled batches, no penalty, no early stop); its training accuracy."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        tuple(hidden),
        activation="logistic",
        solver="sgd",
        batch_size=batch,
        learning_rate_init=lr,
        momentum=0.0,
        alpha=0.0,
        max_iter=epochs,
        shuffle=True,
        early_stopping=False,
        n_iter_no_change=10**9,
        tol=0.0,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    return float(clf.score(X, y))


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _jax():
    try:
        import jax
    except ImportError:
        return None
    return jax


def torch_backend(device: str, dtype: str):
    """``(handgrad's backend on PyTorch tensors, None)``, or ``(None, why not)`` where
    PyTorch or the device is missing (the backend switch's own message)."""
    try:
        return get_backend(device, dtype), None
    except HandgradError as exc:
        return None, str(exc)


# --------------------------------------------------------------------------- workers


def _in_subprocess(spec: dict, flag: str = "--worker", launcher=()) -> dict:
    """The JSON line a worker prints last, run as ``launcher python bench.py flag spec``."""
    done = subprocess.run(
        [*launcher, sys.executable, str(ENTRY), flag, json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"benchmark worker {spec} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])
