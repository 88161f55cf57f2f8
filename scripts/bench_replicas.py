"""Replica cases: R networks with their own seeds and learning rates (lr log-spaced over
[0.01, 1]), trained in one batched pass (model.fit.fit on replica-stacked parameters)
against the same R trained one after another, each replica's shuffles and initial weights
drawn from its own seed, measured interleaved; accuracy is the mean training accuracy
over the R replicas (the same for both: the results agree). CPU: R = 64 digits 64-64-10,
sigmoid, softmax cross-entropy, SGD batch 64, float64 and float32, 10 epochs. GPU (with
the GPU cases, :mod:`bench_gpu`): R = 256 xor 3-4-1 (sigmoid, bce, full batch of 4, 200
epochs) and digits 64-64-10 (as on the CPU, float32, 5 epochs). ms / epoch is for all R
replicas; vs handgrad is the speedup.
"""

from __future__ import annotations

import statistics

import numpy as np
from bench_common import Results, Settings, _measure_together, _with_ratios, other_load

from backends import get_backend, host_rng
from model import MLP, SGD, fit
from model.data import load_dataset
from model.replicas import init_replicas, per_replica, replica


def run(settings: Settings, results: Results) -> None:
    """The CPU replica cases, float64 and float32 (--quick: float64 only, tiny)."""
    for dtype in ("float64",) if settings.quick else ("float64", "float32"):
        cpu = get_backend("cpu", dtype)
        for spec in replica_cases(cpu, settings.quick, gpu=False):
            results.rows += replica_case(*spec, cpu, settings.repeats)


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
