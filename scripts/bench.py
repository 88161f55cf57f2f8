"""Side-by-side training-speed benchmark: handgrad against what users would pick instead.

    python scripts/bench.py                 # CPU, data-pipeline and (with a GPU) GPU cases
    python scripts/bench.py --json out.json --repeats 7
    python scripts/bench.py --quick         # tiny sizes: checks that every contender runs
    python scripts/bench.py --cases none --memmap-gb 4   # a manual check, never in CI
    python scripts/bench.py --cases replicas             # R models in one pass vs R runs

Every contender trains the same model on the same data, dtype, batch size and optimizer.
Times are medians over --repeats runs after a warm-up run, with device synchronization
around each; run i uses seed i, and accuracy is the mean over those runs' seeds. Ratios
are contender time / handgrad time (> 1: handgrad is faster); where the contenders run
interleaved (CPU and replica cases: round i runs each once), the median over the rounds
of that ratio within one round, since this machine's speed drifts within a minute.

CPU cases: digits (bundled, X/16), one hidden layer of 64 or 512, logistic activation,
softmax cross-entropy, SGD lr 0.1 (no momentum, no penalty), batch 64, 50 epochs, float64
and float32. Contenders: handgrad numpy, scikit-learn MLPClassifier (solver sgd, same
layers, shuffled batches, no early stopping), PyTorch eager and JAX (the whole epoch
compiled, jit over lax.scan; float32 only) when installed.

Data-pipeline cases: 10k and 100k synthetic rows, 784-256-10, logistic, float64, batch
128, 3 epochs; each contender in a fresh subprocess that makes the data, then trains:
time, and peak memory above the process's size with the data loaded (VmHWM after
resetting it). handgrad trains on the caller's NumPy array as it is.

MPI cases (--cases mpi): data-parallel handgrad on P = 1 and 2 ranks (mpiexec -n P; P = 1
is the plain single process), 784-256-10 sigmoid, float32, global batch 128, SGD lr 0.1,
100k synthetic rows (every rank makes the same data); one epoch timed after a warm-up
epoch: samples/s, and the time per step spent in the gradient allreduce (the call,
including the wait for the slower rank), the mean over the ranks.

--memmap-gb G: writes a G GB float64 .npy (784 columns) to --memmap-dir piece by piece,
then trains one epoch on it memory-mapped in a subprocess and reports its peak RSS.

GPU cases: sigmoid layers, mse loss, float32, plain SGD lr 0.1, batches in order: xor
3-4-1 batch 4, digits 64-64-10 full batch (1797), mnist-shape 784-512-512-10 batch 512
(synthetic), wide 4096-4096-4096-4096 batch 8192 (synthetic). Contenders: handgrad cupy,
PyTorch eager with autograd, PyTorch with hand-written gradients, and the GEMM floor (the
step's matrix products alone, cuBLAS sgemm through CuPy); each row shows the fraction of
that floor it reaches.

Replica cases: R networks with their own seeds and learning rates (lr log-spaced over
[0.01, 1]), trained in one batched pass (model.fit.fit on replica-stacked parameters)
against the same R trained one after another, each replica's shuffles and initial weights
drawn from its own seed; accuracy is the mean training accuracy over the R replicas
(the same for both: the results agree). CPU: R = 64 digits 64-64-10, sigmoid, softmax
cross-entropy, SGD batch 64, float64 and float32, 10 epochs. GPU (with the GPU cases): R = 256 xor
3-4-1 (sigmoid, bce, full batch of 4, 200 epochs) and digits 64-64-10 (as on the CPU,
float32, 5 epochs). ms / epoch is for all R replicas; vs handgrad is the speedup.

The machine's state is part of every number: the header records the BLAS library and
its threads, os.getloadavg() before and after, and for every case the CPU time other
processes used while it ran (in cores). When that exceeds BUSY_CORES the row is marked
and a warning is printed: re-measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import _cli
import numpy as np

from backends import HandgradError, get_backend, host_rng, probe_cuda
from backends.blas import blas_info, blas_threads
from backends.errors import check_number
from model import MLP, SGD, evaluate, fit
from model.checkpoint import atomic_write
from model.data import load_dataset
from model.fit import run_epoch
from model.folders import check_creatable, check_output_file, refuse_replacing
from model.replicas import init_replicas, per_replica, replica
from model.streaming import open_memmap

BUSY_CORES = 0.25  # other processes' average CPU use above which a case is marked busy


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
    times = {name: [] for name in names}
    accuracies = {name: [] for name in names}
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


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds all processes used, CPU seconds this one and its children used)."""
    ours = os.times()
    ours = ours.user + ours.system + ours.children_user + ours.children_system
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


# --------------------------------------------------------------------------- CPU cases


def cpu_digits(hidden: int, dtype: str, epochs: int, repeats: int, rows: int | None) -> list:
    """One CPU case: rows for every available contender (time per epoch and per step,
    training accuracy as the mean over the runs' seeds), measured interleaved
    (:func:`_measure_together`)."""
    X, y = load_dataset("digits")
    X, y = X[:rows].astype(dtype), y[:rows]
    batch, lr = 64, 0.1
    steps = -(-len(X) // batch) * epochs
    case = f"digits 64-{hidden}-10 {dtype}"
    out = []

    def row(name, measured):
        seconds, accuracy, rounds = measured
        out.append(
            {
                "case": case,
                "contender": name,
                "epoch_ms": 1e3 * seconds / epochs,
                "step_ms": 1e3 * seconds / steps,
                "accuracy": accuracy,
                "round_s": rounds,
            }
        )

    backend = get_backend("cpu", dtype)
    model = MLP((X.shape[1], hidden, 10), activation="sigmoid", loss="cross_entropy")
    Xd = backend.asarray(X, copy=False)
    yd = backend.asarray(y, dtype=backend.xp.int64, copy=False)

    def handgrad(seed):
        return _handgrad_accuracy(model, backend, Xd, yd, batch, lr, epochs, seed)

    def sklearn(seed):
        return _sklearn_accuracy(X, y, (hidden,), batch, lr, epochs, seed)

    def unsynced(run):
        return run, lambda: None

    runs = {"handgrad numpy": (handgrad, backend.synchronize),
            "scikit-learn MLPClassifier": unsynced(sklearn)}  # fmt: skip
    torch = _torch()
    if torch is not None:
        runs[f"PyTorch {torch.__version__} CPU eager"] = unsynced(
            _torch_digits(torch, X, y, hidden, dtype, batch, lr, epochs)
        )
    jax = _jax()
    if jax is not None and dtype == "float32":
        runs[f"JAX {jax.__version__} jit+scan"] = unsynced(
            _jax_digits(jax, X, y, hidden, batch, lr, epochs)
        )
    with other_load({}) as load:
        measured = _measure_together(runs, repeats)
    for name, result in measured.items():
        row(name, result)
    out[0]["blas_threads"] = blas_threads(batch * X.shape[1] * hidden) or blas_info()["threads"]
    for r in out:
        r["other_cores"] = load["other_cores"]
    return _with_ratios(out)


def _torch_digits(torch, X, y, hidden, dtype, batch, lr, epochs):
    """PyTorch eager, the usual loop: a shuffled copy per epoch, autograd, optim.SGD:
    ``run(seed)``, which trains and returns the training accuracy."""
    tdtype = getattr(torch, dtype)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)

    def pytorch(seed):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(X.shape[1], hidden), torch.nn.Sigmoid(), torch.nn.Linear(hidden, 10)
        ).to(tdtype)
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        for _ in range(epochs):
            order = torch.randperm(len(Xt))
            Xe, ye = Xt[order], yt[order]
            for s in range(0, len(Xt), batch):
                opt.zero_grad(set_to_none=True)
                loss_fn(net(Xe[s : s + batch]), ye[s : s + batch]).backward()
                opt.step()
        with torch.no_grad():
            return float((net(Xt).argmax(1) == yt).double().mean())

    return pytorch


def _jax():
    try:
        import jax
    except ImportError:
        return None
    return jax


def _jax_digits(jax, X, y, hidden, batch, lr, epochs):
    """JAX, float32: one compiled epoch (a shuffle, then lax.scan over the full batches
    and one step on the short last batch), gradients by jax.grad; handgrad's init:
    ``run(seed)``, which trains and returns the training accuracy."""
    jnp = jax.numpy
    n, full = len(X), len(X) // batch * batch
    Xj, Yj = jnp.asarray(X), jax.nn.one_hot(jnp.asarray(y), 10, dtype=jnp.float32)
    model = MLP((X.shape[1], hidden, 10), activation="sigmoid", loss="cross_entropy")
    cpu = get_backend("cpu", "float32")

    def loss(p, xb, yb):
        z = jax.nn.sigmoid(xb @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        return -jnp.mean(jnp.sum(yb * jax.nn.log_softmax(z), axis=1))

    def step(p, batch_xy):
        g = jax.grad(loss)(p, *batch_xy)
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g), None

    @jax.jit
    def epoch(p, key):
        order = jax.random.permutation(key, n)
        Xe, Ye = Xj[order], Yj[order]
        shape = (full // batch, batch)
        p, _ = jax.lax.scan(step, p, (Xe[:full].reshape(*shape, -1), Ye[:full].reshape(*shape, -1)))
        if full < n:
            p, _ = step(p, (Xe[full:], Ye[full:]))
        return p

    def run(seed):
        p = {k: jnp.asarray(v) for k, v in model.init_params(cpu, host_rng(seed)).items()}
        key = jax.random.PRNGKey(seed)
        for _ in range(epochs):
            key, sub = jax.random.split(key)
            p = epoch(p, sub)
        z = jax.nn.sigmoid(Xj @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        return float(jnp.mean(jnp.argmax(z, axis=1) == jnp.asarray(y)))

    return run


# --------------------------------------------------------------------------- data pipeline


PIPELINE = {"sizes": (784, 256, 10), "batch": 128, "lr": 0.1}


def pipeline_contenders() -> list[str]:
    """The data-pipeline contenders installed here."""
    names = ["handgrad numpy", "scikit-learn MLPClassifier"]
    if _torch() is not None:
        names.append("PyTorch CPU eager")
    return names


def _synthetic(rows: int, dtype: str, seed: int = 0):
    """Host (X (rows, 784) uniform on [-1/2, 1/2), labels of a random linear teacher),
    made without temporaries the size of X."""
    d, _, k = PIPELINE["sizes"]
    rng = np.random.default_rng(seed)
    X = rng.random((rows, d), dtype=dtype)
    X -= 0.5
    teacher = rng.normal(size=(d, k)).astype(dtype)
    return X, np.argmax(X @ teacher, axis=1)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _train_contender(name: str, X, y, epochs: int, seed: int) -> float:
    """Train ``name`` on host (X, y) as the pipeline cases do; returns training accuracy."""
    sizes, batch, lr = PIPELINE["sizes"], PIPELINE["batch"], PIPELINE["lr"]
    if name.startswith("handgrad"):
        backend = get_backend("cpu", str(X.dtype))
        model = MLP(sizes, activation="sigmoid", loss="cross_entropy")
        if not isinstance(X, np.memmap):  # a memmap is passed as it is: fit streams it
            X, y = backend.asarray(X, copy=False), backend.asarray(y, dtype=np.int64, copy=False)
        return _handgrad_accuracy(model, backend, X, y, batch, lr, epochs, seed)
    if name.startswith("scikit-learn"):
        return _sklearn_accuracy(X, y, sizes[1:-1], batch, lr, epochs, seed)
    train = _torch_digits(_torch(), X, y, sizes[1], str(X.dtype), batch, lr, epochs)
    return train(seed)


def pipeline_worker(spec: dict) -> dict:
    """In this (fresh) process: get the data, reset the peak-RSS mark, train, and report
    seconds, peak memory above the data-loaded size (MiB), peak RSS and accuracy."""
    if spec.get("memmap"):
        X, y = open_memmap(spec["memmap"]), open_memmap(spec["memmap_labels"])
    else:
        X, y = _synthetic(spec["rows"], spec["dtype"])
    blas_info()  # imports threadpoolctl: libraries load before the baseline, not in the peak
    if spec["contender"].startswith("scikit-learn"):
        import sklearn.neural_network  # noqa: F401
    if spec["contender"].startswith("PyTorch"):
        _torch()  # as above: the library's own size is not the pipeline's
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS (Linux)
    base = _rss_kib("VmRSS")
    start = time.perf_counter()
    accuracy = _train_contender(spec["contender"], X, y, spec["epochs"], spec.get("seed", 0))
    seconds = time.perf_counter() - start
    peak = _rss_kib("VmHWM")
    return {
        "seconds": seconds,
        "peak_extra_mib": (peak - base) / 1024,
        "peak_rss_mib": peak / 1024,
        "data_mib": X.nbytes / 2**20,
        "accuracy": accuracy,
    }


def _in_subprocess(spec: dict, flag: str = "--worker", launcher=()) -> dict:
    """The JSON line a worker prints last, run as ``launcher python bench.py flag spec``."""
    done = subprocess.run(
        [*launcher, sys.executable, __file__, flag, json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"benchmark worker {spec} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pipeline_cases(row_counts, epochs: int) -> list:
    """Every pipeline contender at every row count, each in its own subprocess."""
    out = []
    for rows in row_counts:
        case = f"pipeline {rows} x 784-256-10 float64 b128"
        for name in pipeline_contenders():
            spec = {"contender": name, "rows": rows, "dtype": "float64", "epochs": epochs}
            with other_load({}) as load:
                r = _in_subprocess(spec)
            steps = -(-rows // PIPELINE["batch"]) * epochs
            out.append(
                {
                    "case": case,
                    "contender": name,
                    "rows": rows,
                    "epoch_ms": 1e3 * r["seconds"] / epochs,
                    "step_ms": 1e3 * r["seconds"] / steps,
                    **r,
                    "other_cores": load["other_cores"],
                }
            )
        _with_ratios(out[-len(pipeline_contenders()) :])
    return out


def memmap_case(gigabytes: float, folder: str) -> dict:
    """Write a ``gigabytes`` GB float64 .npy (784 columns, labels beside it) to ``folder``
    in pieces, train handgrad one epoch on it memory-mapped in a subprocess."""
    d = PIPELINE["sizes"][0]
    rows = int(gigabytes * 1e9 / (8 * d))
    path = Path(folder) / "handgrad-bench-X.npy"
    labels = Path(folder) / "handgrad-bench-y.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(rows, d))
    y = np.lib.format.open_memmap(labels, mode="w+", dtype=np.int64, shape=(rows,))
    for start in range(0, rows, 65536):
        Xc, yc = _synthetic(min(65536, rows - start), "float64", seed=start)
        X[start : start + len(Xc)], y[start : start + len(Xc)] = Xc, yc
    X.flush()
    y.flush()
    del X, y
    try:
        spec = {
            "contender": "handgrad numpy",
            "memmap": str(path),
            "memmap_labels": str(labels),
            "epochs": 1,
        }
        with other_load({}) as load:
            r = _in_subprocess(spec)
    finally:
        path.unlink()
        labels.unlink()
    return {
        "case": f"memmap {rows} x 784 float64 ({gigabytes:g} GB) b128, 1 epoch",
        "contender": "handgrad numpy, memmap",
        **r,
        "other_cores": load["other_cores"],
    }


# --------------------------------------------------------------------------- MPI cases


def mpi_worker(spec: dict) -> dict:
    """In a rank of ``mpiexec -n P`` (or alone, P = 1): train the MPI case one warm-up and
    one timed epoch; seconds and seconds per step in the allreduce, means over the ranks
    (rank 0 returns them, the others None)."""
    from backends.comm import connect

    comm = connect(required=spec["ranks"] > 1)
    calls = []
    if comm is not None:
        allreduce = comm.allreduce_sum

        def timed(buffer):
            start = time.perf_counter()
            allreduce(buffer)
            calls.append(time.perf_counter() - start)
            return buffer

        comm.allreduce_sum = timed
    sizes, batch, lr = PIPELINE["sizes"], PIPELINE["batch"], PIPELINE["lr"]
    X, y = _synthetic(spec["rows"], "float32")
    backend = get_backend("cpu", "float32")
    model = MLP(sizes, activation="sigmoid", loss="cross_entropy")
    params = model.init_params(backend, host_rng(0))
    Xd, yd = backend.asarray(X, copy=False), backend.asarray(y, dtype=np.int64, copy=False)
    opt = SGD(lr)

    def epoch(first: int):
        fit(model, params, Xd, yd, optimizer=opt, epochs=first + 1, start_epoch=first,
            batch_size=batch, rng=host_rng(first), comm=comm)  # fmt: skip

    epoch(0)
    calls.clear()
    start = time.perf_counter()
    epoch(1)
    seconds = time.perf_counter() - start
    steps = -(-spec["rows"] // batch)
    in_allreduce = sum(calls[:steps]) / steps  # the epoch's loss sum is not a step
    if comm is not None:  # means over the ranks; rank 0 reports them
        times = {"s": np.array(seconds), "reduce": np.array(in_allreduce)}
        times = comm.sum_arrays(times, like=times, weight=1 / comm.size)
        seconds, in_allreduce = float(times["s"]), float(times["reduce"])
        if comm.rank:
            return None
    n_params = sum(int(np.prod(p.shape)) for p in params.values())
    return {"seconds": seconds, "steps": steps, "allreduce_ms": 1e3 * in_allreduce,
            "params": n_params}  # fmt: skip


def mpi_cases(rows: int) -> list:
    """The MPI case on 1 and 2 ranks (each in fresh processes)."""
    out = []
    for ranks in (1, 2):
        spec = {"rows": rows, "ranks": ranks}
        launcher = [] if ranks == 1 else [_mpiexec(), "-n", str(ranks)]
        with other_load({}) as load:
            r = _in_subprocess(spec, "--mpi-worker", launcher)
        out.append(
            {
                "case": f"mpi {rows} x 784-256-10 float32 b128",
                "contender": f"handgrad numpy, {ranks} rank(s)",
                "ranks": ranks,
                **r,
                "samples_per_s": rows / r["seconds"],
                "other_cores": load["other_cores"],
            }
        )
    for r in out:
        r["speedup"] = r["samples_per_s"] / out[0]["samples_per_s"]
    return out


def _mpiexec() -> str:
    beside = Path(sys.executable).with_name("mpiexec")
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise HandgradError("the mpi cases need mpiexec: pip install -e '.[mpi]'")
    return found


def format_mpi(rows: list) -> str:
    """The MPI rows as a Markdown table."""
    lines = _header("samples / s", "speedup", "s / epoch", "allreduce ms / step", "other load")
    for r in rows:
        reduce = f"{r['allreduce_ms']:.3f}" if r["ranks"] > 1 else ""
        lines.append(
            f"| {r['case']} | {r['contender']} | {r['samples_per_s']:.0f} | "
            f"{r['speedup']:.2f}x | {r['seconds']:.2f} | {reduce} | "
            f"{r['other_cores']:.2f}{_busy(r)} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- replica cases


def replica_cases(backend, quick: bool, gpu: bool) -> list[tuple]:
    """(case, sizes, activation, loss, R, batch, epochs, data) of the replica cases."""
    X, y = load_dataset("digits")
    digits = (X, y)  # load_dataset scales digits to [0, 1]
    xor = (np.array([[0, 0, 1], [1, 1, 1], [1, 0, 1], [0, 1, 1]], float), np.array([0, 1, 1, 0]))
    if quick:
        return [("digits 64-16-10 x4", (64, 16, 10), "sigmoid", "cross_entropy", 4, 64, 1,
                 (digits[0][:200], digits[1][:200]))]  # fmt: skip
    if not gpu:
        return [("digits 64-64-10 x64", (64, 64, 10), "sigmoid", "cross_entropy", 64, 64, 10,
                 digits)]  # fmt: skip
    return [
        ("xor 3-4-1 x256", (3, 4, 1), "sigmoid", "bce", 256, None, 200, xor),
        ("digits 64-64-10 x256", (64, 64, 10), "sigmoid", "cross_entropy", 256, 64, 5, digits),
    ]


def replica_case(case, sizes, activation, loss, count, batch, epochs, data, backend, repeats):
    """One pass of ``count`` replicas against ``count`` fits one after another: rows with
    the time per epoch of all replicas and their mean training accuracy."""
    model = MLP(sizes, activation=activation, loss=loss)
    Xd = backend.asarray(data[0], copy=False)
    yd = backend.asarray(data[1], dtype=backend.xp.int64, copy=False)
    lrs = np.geomspace(0.01, 1.0, count).tolist()
    steps = epochs * (1 if batch is None else -(-len(data[0]) // batch))

    def accuracy(params):
        return float(np.mean(backend.to_numpy(model.predict_class(params, Xd) == yd)))

    def one_pass(seed):
        rngs = [host_rng(seed + r) for r in range(count)]
        params = init_replicas(model, backend, rngs)
        opt = per_replica(SGD(0.1), lr=lrs, like=params["W1"])
        fit(model, params, Xd, yd, optimizer=opt, epochs=epochs, batch_size=batch, rng=rngs,
            divergence="freeze")  # fmt: skip
        return statistics.fmean(accuracy(replica(params, r)) for r in range(count))

    def one_by_one(seed):
        accuracies = []
        for r, lr in enumerate(lrs):
            rng = host_rng(seed + r)
            params = model.init_params(backend, rng)
            fit(model, params, Xd, yd, optimizer=SGD(lr), epochs=epochs, batch_size=batch, rng=rng)
            accuracies.append(accuracy(params))
        return statistics.fmean(accuracies)

    sync = backend.synchronize
    runs = {f"handgrad {backend.name}: one pass": (one_pass, sync),
            f"handgrad {backend.name}: {count} runs in turn": (one_by_one, sync)}  # fmt: skip
    with other_load({}) as load:
        measured = _measure_together(runs, repeats)
    out = [{"case": f"replicas {case} {backend.dtype_name}", "contender": name,
            "epoch_ms": 1e3 * seconds / epochs, "step_ms": 1e3 * seconds / steps,
            "accuracy": acc, "other_cores": load["other_cores"], "round_s": rounds}
           for name, (seconds, acc, rounds) in measured.items()]  # fmt: skip
    return _with_ratios(out)


# --------------------------------------------------------------------------- GPU cases


def gpu_shapes(quick: bool) -> list[tuple[str, tuple[int, ...], int, int]]:
    """(case, layer sizes, rows, batch) of the GPU cases; --quick shrinks them."""
    if quick:
        return [("xor 3-4-1 b4", (3, 4, 1), 4, 4), ("mlp 16-8-8-4 b32", (16, 8, 8, 4), 32, 32)]
    return [
        ("xor 3-4-1 b4", (3, 4, 1), 4, 4),
        ("digits 64-64-10 b1797", (64, 64, 10), 1797, 1797),
        ("mnist-shape 784-512-512-10 b512", (784, 512, 512, 10), 512, 512),
        ("wide 4096x4 b8192", (4096, 4096, 4096, 4096), 8192, 8192),
    ]


def _gpu_data(case: str, sizes, rows: int):
    """Host float32 (X, one-hot or 0/1 targets) for a GPU case."""
    rng = np.random.default_rng(0)
    if case.startswith("xor"):
        X = np.array([[0, 0, 1], [1, 1, 1], [1, 0, 1], [0, 1, 1]], dtype=np.float32)
        return X, np.array([[0], [1], [1], [0]], dtype=np.float32)
    if case.startswith("digits"):
        X, y = load_dataset("digits")
        return X.astype(np.float32), np.eye(10, dtype=np.float32)[y]
    X = rng.random((rows, sizes[0]), dtype=np.float32)
    return X, np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], rows)]


def gpu_case(case, sizes, rows, batch, backend, steps: int, repeats: int) -> list:
    """One GPU case on ``backend``: time per training step of every contender."""
    lr = 0.1
    X, Y = _gpu_data(case, sizes, rows)
    model = MLP(sizes, activation="sigmoid", output="sigmoid", loss="mse")
    xp = backend.xp
    Xd, Yd = backend.asarray(X), backend.asarray(Y)
    params = model.init_params(backend, host_rng(0))
    start = {k: backend.xp.asarray(v, copy=True) for k, v in params.items()}
    opt = SGD(lr)
    state = opt.init(params)
    epochs = max(1, steps * batch // rows)
    n_steps = epochs * -(-rows // batch)
    out = []

    def row(name, seconds):
        out.append({"case": case, "contender": name, "step_ms": 1e3 * seconds / n_steps})

    def handgrad():
        for _ in range(epochs):
            run_epoch(model, params, state, Xd, Yd, opt, batch_size=batch, xp=xp)

    row(f"handgrad {backend.name}", _median_time(handgrad, repeats, backend.synchronize))

    weights = [params[f"W{l}"] for l in range(1, len(sizes))]
    shapes = []  # (a, b) operand pairs of every GEMM in one step
    for l in range(1, len(sizes)):
        a_prev = xp.ones((batch, sizes[l - 1]), dtype=backend.dtype, device=backend.device)
        dz = xp.ones((batch, sizes[l]), dtype=backend.dtype, device=backend.device)
        shapes += [(a_prev, weights[l - 1]), (a_prev.T, dz)]
        if l > 1:
            shapes.append((dz, weights[l - 1].T))

    def gemm_floor():
        for _ in range(n_steps):
            for a, b in shapes:
                a @ b

    floor = _median_time(gemm_floor, repeats, backend.synchronize)
    row("GEMM floor (sgemm only)", floor)

    torch = _torch()
    if torch is not None and (torch.cuda.is_available() or not backend.is_gpu):
        dev = torch.device("cuda" if backend.is_gpu else "cpu")  # side by side with handgrad
        host_params = [backend.to_numpy(v) for v in start.values()]
        out += _torch_rows(torch, dev, case, host_params, X, Y, batch, lr, epochs, n_steps, repeats)
    for r in out:
        r["floor_fraction"] = 1e3 * floor / n_steps / r["step_ms"]
    return _with_ratios(out)


def _torch_rows(torch, dev, case, host_params, X, Y, batch, lr, epochs, n_steps, repeats) -> list:
    """PyTorch eager on ``dev``, from handgrad's initial parameters (W1, b1, W2, ... on the
    host): autograd, and the same step with hand-written gradients."""
    Ws = [torch.as_tensor(W, device=dev) for W in host_params[0::2]]
    bs = [torch.as_tensor(b, device=dev) for b in host_params[1::2]]
    Xt, Yt = torch.as_tensor(X, device=dev), torch.as_tensor(Y, device=dev)
    rows = len(Xt)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    results = []

    params = [p.clone().requires_grad_(True) for p in (*Ws, *bs)]
    opt = torch.optim.SGD(params, lr=lr)
    L = len(Ws)

    def autograd():
        for _ in range(epochs):
            for s in range(0, rows, batch):
                a = Xt[s : s + batch]
                for W, b in zip(params[:L], params[L:], strict=True):
                    a = torch.sigmoid(a @ W + b)
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.mse_loss(a, Yt[s : s + batch]).backward()
                opt.step()

    results.append(
        (
            f"PyTorch {torch.__version__} {dev.type} eager autograd",
            _median_time(autograd, repeats, sync),
        )
    )
    Wh, bh = [W.clone() for W in Ws], [b.clone() for b in bs]

    @torch.no_grad()
    def by_hand():
        for _ in range(epochs):
            for s in range(0, rows, batch):
                acts = [Xt[s : s + batch]]
                for W, b in zip(Wh, bh, strict=True):
                    acts.append(torch.sigmoid(torch.addmm(b, acts[-1], W)))
                a = acts[-1]
                dz = (a - Yt[s : s + batch]) * (2.0 / a.numel()) * a * (1 - a)
                for l in range(L - 1, -1, -1):
                    dw, db = acts[l].T @ dz, dz.sum(0)
                    if l:
                        dz = (dz @ Wh[l].T) * acts[l] * (1 - acts[l])
                    Wh[l].sub_(dw, alpha=lr)
                    bh[l].sub_(db, alpha=lr)

    results.append(
        (
            f"PyTorch {torch.__version__} {dev.type} hand-written gradients",
            _median_time(by_hand, repeats, sync),
        )
    )
    return [{"case": case, "contender": n, "step_ms": 1e3 * t / n_steps} for n, t in results]


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


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def environment() -> dict:
    """Machine, date, library versions, BLAS and load, for the record."""
    import array_api_compat
    import sklearn

    blas = blas_info()
    env = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_name()}, {os.cpu_count()} cores, {platform.machine()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "array_api_compat": array_api_compat.__version__,
        "scikit_learn": sklearn.__version__,
        "blas": f"{blas['library']} {blas['version']}, {blas['threads']} threads by default",
    }
    torch, jax = _torch(), _jax()
    env["torch"] = torch.__version__ if torch else "not installed"
    env["jax"] = jax.__version__ if jax else "not installed"
    cupy, count, reason = probe_cuda()
    env["cupy"] = cupy.__version__ if cupy else "not installed"
    if count:
        env["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    else:
        env["gpu"] = f"none ({reason})"
    return env


def _header(*numbers: str) -> list[str]:
    """A Markdown table's first two lines: case, contender, then right-aligned ``numbers``."""
    return [
        "| case | contender | " + " | ".join(numbers) + " |",
        "| --- | --- |" + " ---: |" * len(numbers),
    ]


def _busy(r) -> str:
    return " (BUSY)" if r.get("other_cores", 0.0) > BUSY_CORES else ""


def format_table(rows: list) -> str:
    """The CPU and GPU rows as a Markdown table (BUSY: other processes used the CPU; after
    a paired ratio, its quartiles over the rounds)."""
    lines = _header("ms / epoch", "ms / step", "vs handgrad", "accuracy / floor", "other load")
    for r in rows:
        epoch = f"{r['epoch_ms']:.2f}" if "epoch_ms" in r else ""
        extra = f"{r['accuracy']:.4f}" if "accuracy" in r else f"{r['floor_fraction']:.0%}"
        threads = f" ({r['blas_threads']} BLAS thr.)" if "blas_threads" in r else ""
        spread = r.get("vs_handgrad_quartiles")
        spread = f" ({spread[0]:.2f}-{spread[1]:.2f})" if spread else ""
        lines.append(
            f"| {r['case']} | {r['contender']}{threads} | {epoch} | {r['step_ms']:.4f} | "
            f"{r['vs_handgrad']:.2f}x{spread} | {extra} | "
            f"{r.get('other_cores', 0.0):.2f}{_busy(r)} |"
        )
    return "\n".join(lines)


def format_pipeline(rows: list) -> str:
    """The data-pipeline (and memmap) rows as a Markdown table, then time ratios."""
    lines = [
        "| case | contender | s | ms / step | vs handgrad | peak extra MiB | x data | "
        "peak RSS MiB | accuracy | other load |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = f"{r['vs_handgrad']:.2f}x" if "vs_handgrad" in r else ""
        step = f"{r['step_ms']:.3f}" if "step_ms" in r else ""
        lines.append(
            f"| {r['case']} | {r['contender']} | {r['seconds']:.2f} | {step} | {ratio} | "
            f"{r['peak_extra_mib']:.0f} | {r['peak_extra_mib'] / r['data_mib']:.2f} | "
            f"{r['peak_rss_mib']:.0f} | {r['accuracy']:.4f} | {r['other_cores']:.2f}{_busy(r)} |"
        )
    sizes = sorted({r["rows"] for r in rows if "rows" in r})
    if len(sizes) == 2:
        for name in dict.fromkeys(r["contender"] for r in rows if "rows" in r):
            t = {r["rows"]: r["seconds"] for r in rows if r["contender"] == name and "rows" in r}
            lines.append(
                f"\n{name}: time at {sizes[1]} rows / at {sizes[0]} rows = "
                f"{t[sizes[1]] / t[sizes[0]]:.2f} (rows x{sizes[1] / sizes[0]:g})"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = _cli.parser(__doc__)
    p.add_argument(
        "--cases",
        choices=("all", "cpu", "pipeline", "mpi", "gpu", "replicas", "none"),
        default="all",
        help="which cases (default: all but mpi; GPU cases need a usable GPU, mpi cases mpiexec)",
    )
    p.add_argument("--repeats", type=int, help="timed runs per contender (default: 5)")
    p.add_argument("--epochs", type=int, help="CPU-case epochs (default: 50)")
    p.add_argument("--gpu-device", default="cuda", help="device of the GPU cases (default: cuda)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, 2 epochs, 1 run: checks every contender, measures nothing",
    )
    p.add_argument(
        "--memmap-gb", type=float, help="also train on a memory-mapped file of this size"
    )
    p.add_argument(
        "--memmap-dir", default=tempfile.gettempdir(), help="where --memmap-gb writes its file"
    )
    p.add_argument("--json", metavar="PATH", help="also write the rows and environment as JSON")
    p.add_argument("--overwrite", action="store_true", help="allow --json to replace a file")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # one pipeline run, in a subprocess
    p.add_argument("--mpi-worker", help=argparse.SUPPRESS)  # a rank of an MPI case
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(pipeline_worker(json.loads(args.worker))))
        return 0
    if args.mpi_worker:
        result = mpi_worker(json.loads(args.mpi_worker))
        if result is not None:
            print(json.dumps(result))
        return 0
    given = [f"--{name}" for name in ("repeats", "epochs") if getattr(args, name) is not None]
    if args.quick and given:
        p.error(f"--quick sets its own tiny sizes, 2 epochs and 1 run; leave out {given[0]}")
    for name in ("repeats", "epochs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.json is not None:  # before an hour of benchmarking, not after it
        refuse_replacing(check_output_file(args.json, "json"), (), args.overwrite, "json")
    if args.memmap_gb is not None:
        check_number("memmap_gb", args.memmap_gb, low=0, low_open=True)
        check_creatable(args.memmap_dir, "memmap_dir")
    epochs = 2 if args.quick else 50 if args.epochs is None else args.epochs
    repeats = 1 if args.quick else 5 if args.repeats is None else args.repeats
    load_before = os.getloadavg()
    rows, pipeline = [], []
    if args.cases in ("all", "cpu"):
        for hidden in (64, 512):
            for dtype in ("float64", "float32"):
                rows += cpu_digits(hidden, dtype, epochs, repeats, 200 if args.quick else None)
    if args.cases in ("all", "pipeline"):
        pipeline += pipeline_cases(
            (100, 1000) if args.quick else (10_000, 100_000), 1 if args.quick else 3
        )
    if args.memmap_gb:
        pipeline.append(memmap_case(args.memmap_gb, args.memmap_dir))
    mpi = mpi_cases(2000 if args.quick else 100_000) if args.cases == "mpi" else []
    if args.cases in ("all", "replicas"):
        for dtype in ("float64",) if args.quick else ("float64", "float32"):
            cpu = get_backend("cpu", dtype)
            for spec in replica_cases(cpu, args.quick, gpu=False):
                rows += replica_case(*spec, cpu, repeats)
    gpu_wanted = args.cases == "gpu" or (args.cases == "all" and probe_cuda()[1])
    if gpu_wanted:
        backend = get_backend(args.gpu_device, "float32")
        for case, sizes, n, batch in gpu_shapes(args.quick):
            steps = 2 if args.quick else (20 if sizes[0] >= 4096 else 200)
            with other_load({}) as load:
                case_rows = gpu_case(case, sizes, n, batch, backend, steps, repeats)
            rows += [{**r, "other_cores": load["other_cores"]} for r in case_rows]
        for spec in replica_cases(backend, args.quick, gpu=True):
            rows += replica_case(*spec, backend, repeats)
    env = environment()
    env["loadavg_before"], env["loadavg_after"] = load_before, os.getloadavg()
    print(
        f"handgrad benchmark, {env['date']}: {env['machine']}, Python {env['python']}, "
        f"NumPy {env['numpy']} ({env['blas']}), scikit-learn {env['scikit_learn']}, "
        f"PyTorch {env['torch']}, JAX {env['jax']}, CuPy {env['cupy']}, GPU {env['gpu']}\n"
        f"load average (1, 5, 15 min) before {_loads(load_before)}, after "
        f"{_loads(env['loadavg_after'])}; other load = cores other processes kept busy"
    )
    busy = [r for r in rows + pipeline + mpi if _busy(r)]
    warning = (
        f"WARNING: the machine was busy during {len(busy)} case(s) (marked BUSY: other "
        f"processes used more than {BUSY_CORES} cores): those timings are not comparable; "
        "re-measure on a quiet machine"
    )
    if busy:
        print(warning, file=sys.stderr)
    if rows:
        print(format_table(rows))
    if pipeline:
        print(format_pipeline(pipeline))
    if mpi:
        print(format_mpi(mpi))
    if busy:
        print(warning)
    if args.json:
        data = {"environment": env, "rows": rows, "pipeline": pipeline, "mpi": mpi}
        text = json.dumps(data, indent=2)
        atomic_write(args.json, lambda f: f.write(text.encode()))
    return 0


def _loads(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    sys.exit(_cli.run(main))
