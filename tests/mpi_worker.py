"""Run under mpiexec by tests/test_mpi.py: trains cases of :func:`cases` data-parallel and
has rank 0 save each one's parameters and history to OUT_DIR/<case>@<device>.npz. The
single-process reference is the same function without a communicator (tests/test_mpi.py
calls it in the test process).

    mpiexec -n 3 python tests/mpi_worker.py OUT_DIR digits-adam@cpu digits-gd@strict ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends import get_backend, host_rng, probe_cuda
from backends.comm import rank_device
from model import MLP, fit, make_optimizer
from model.data import load_dataset

ROWS = 301  # not divisible by 2 or 3; batch 100 leaves a last batch of 1 row (empty parts)


def cases() -> dict:
    """name -> (dataset, loss, optimizer, lr, batch size or None for full batch)."""
    return {
        "digits-adam": ("digits", "cross_entropy", "adam", 0.05, 100),
        "digits-gd": ("digits", "cross_entropy", "gd", 0.5, None),
        "regression-sgd": ("regression", "mse", "sgd", 0.05, 64),
        "regression-sse-gd": ("regression", "sse", "gd", 0.001, None),
        "digits-lbfgs": ("digits", "cross_entropy", "lbfgs", 1.0, None),
        "regression-lbfgs": ("regression", "mse", "lbfgs", 1.0, None),
    }


def train(case: str, device: str, comm=None) -> dict:
    """Parameters (host) and history after 6 epochs of ``case`` in float64 on ``device``,
    with a validation set, data-parallel under ``comm``."""
    dataset, loss, optimizer, lr, batch = cases()[case]
    if comm is not None:
        device = rank_device(device, comm.local_rank, probe_cuda()[1])
    backend = get_backend(device, "float64")
    X, y = load_dataset(dataset)
    labels = loss == "cross_entropy"
    X, y = X[:ROWS], y[:ROWS] if labels else y[:ROWS, None]
    model = MLP((X.shape[1], 16, 10 if labels else 1), activation="tanh", loss=loss)
    params = model.init_params(backend, host_rng(0))

    def on_device(X, y):
        return backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64 if labels else None)

    result = fit(
        model, params, *on_device(X, y), optimizer=make_optimizer(optimizer, lr),
        epochs=6, batch_size=batch, rng=host_rng(1),
        validation=on_device(X[:50], y[:50]), comm=comm,
    )  # fmt: skip
    out = {k: backend.to_numpy(v) for k, v in params.items()}
    return out | {f"history_{k}": np.array(v) for k, v in result.history.items()}


def main(argv) -> None:
    from backends.comm import connect

    out, *runs = argv
    comm = connect(required=True)
    for name in runs:
        case, device = name.split("@")
        arrays = train(case, device, comm)
        if comm.rank == 0:
            np.savez(Path(out) / f"{name}.npz", **arrays)


if __name__ == "__main__":
    main(sys.argv[1:])
