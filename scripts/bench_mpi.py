"""MPI cases (--cases mpi): data-parallel handgrad on P = 1 and 2 ranks (mpiexec -n P; P
= 1 is the plain single process), 784-256-10 sigmoid, float32, global batch 128, SGD lr
0.1, 100k synthetic rows (every rank makes the same data); one epoch timed after a
warm-up epoch: samples/s, and the time per step spent in the gradient allreduce (the
call, including the wait for the slower rank), the mean over the ranks. Each rank runs
``bench.py --mpi-worker SPEC``.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import Results, Settings, _busy, _header, _in_subprocess, other_load
from bench_pipeline import PIPELINE, _synthetic

from backends import HandgradError, get_backend, host_rng
from model import MLP, SGD, fit


def run(settings: Settings, results: Results) -> None:
    """The MPI case on 1 and 2 ranks (--quick: 2000 rows)."""
    results.mpi += mpi_cases(2000 if settings.quick else 100_000)


def _timed_allreduce(comm, calls: list) -> None:
    """Make ``comm.allreduce_sum`` append the seconds of each call to ``calls``."""
    allreduce = comm.allreduce_sum

    def timed(buffer):
        start = time.perf_counter()
        allreduce(buffer)
        calls.append(time.perf_counter() - start)
        return buffer

    comm.allreduce_sum = timed


def mpi_worker(spec: dict) -> dict | None:
    """In a rank of ``mpiexec -n P`` (or alone, P = 1): train the MPI case one warm-up and
    one timed epoch; seconds and seconds per step in the allreduce, means over the ranks
    (rank 0 returns them, the others None)."""
    from backends.comm import connect

    comm = connect(required=spec["ranks"] > 1)
    calls: list = []
    if comm is not None:
        _timed_allreduce(comm, calls)
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
