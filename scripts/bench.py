"""Side-by-side training-speed benchmark: handgrad against what users would pick instead.

    python scripts/bench.py                 # CPU, data-pipeline and (with a GPU) GPU cases
    python scripts/bench.py --json out.json --repeats 7
    python scripts/bench.py --quick         # tiny sizes: checks that every contender runs
    python scripts/bench.py --cases none --memmap-gb 4   # a manual check, never in CI
    python scripts/bench.py --cases replicas             # R models in one pass vs R runs
    python scripts/bench_versions.py OTHER_CHECKOUT      # CPU ratios of two versions

Every contender trains the same model on the same data, dtype, batch size and optimizer.
Times are medians over --repeats runs after a warm-up run, with device synchronization
around each; run i uses seed i, and accuracy is the mean over those runs' seeds. Ratios
are contender time / handgrad time (> 1: handgrad is faster); where the contenders run
interleaved (CPU and replica cases: round i runs each once), the median over the rounds
of that ratio within one round, since this machine's speed drifts within a minute.

One module per case family, each with its cases' description: bench_cpu.py (digits
against scikit-learn, handgrad on PyTorch tensors, PyTorch and JAX), bench_pipeline.py
(10k and 100k rows in fresh processes: time and peak memory; --memmap-gb), bench_mpi.py
(--cases mpi: 1 and 2 ranks), bench_replicas.py (R models in one pass against R runs in
turn), bench_gpu.py (four shapes against PyTorch and the GEMM floor; --gpu-device);
bench_common.py holds the interleaved timing, the paired ratios and the load records.
Contenders missing here are left out with a note that says why; --skip leaves one out.

The machine's state is part of every number: the header records the BLAS library and
its threads, os.getloadavg() before and after, and for every case the CPU time other
processes used while it ran (in cores). When that exceeds BUSY_CORES the row is marked
and a warning is printed: re-measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone

import _cli
import bench_common
import bench_cpu
import bench_gpu
import bench_mpi
import bench_pipeline
import bench_replicas
import numpy as np
from bench_common import BUSY_CORES, Results, Settings, _busy, _header, _jax, _torch

from backends import probe_cuda
from backends.blas import blas_info
from backends.errors import check_number
from model.checkpoint import atomic_write
from model.folders import check_creatable, check_output_file, refuse_replacing

# The case families in the order they run and print: --cases NAME runs one, --cases all
# those marked True ("gpu" where a GPU is usable), --memmap-gb adds "memmap".
CASES = {
    "cpu": (bench_cpu.run, True),
    "pipeline": (bench_pipeline.run, True),
    "memmap": (bench_pipeline.run_memmap, False),
    "mpi": (bench_mpi.run, False),
    "replicas": (bench_replicas.run, True),
    "gpu": (bench_gpu.run, None),
}
# The subprocess entry points: `bench.py --worker SPEC` and `bench.py --mpi-worker SPEC`.
WORKERS = {"worker": bench_pipeline.pipeline_worker, "mpi_worker": bench_mpi.mpi_worker}
FAMILIES = (bench_cpu, bench_pipeline, bench_mpi, bench_replicas, bench_gpu)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _cli.parser("\n".join([__doc__ or "", *(m.__doc__ or "" for m in FAMILIES)]))
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
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="CONTENDER",
        help="leave out the CPU cases' contenders whose name starts with this, e.g. "
        "'handgrad torch' or 'JAX' (repeatable; handgrad numpy, the reference, stays; in the "
        "GPU cases it can leave out 'handgrad torch:cuda')",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        help="PyTorch's CPU threads in this process (torch.set_num_threads; default: "
        "PyTorch's own, one per core; the pipeline cases' workers keep the default)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the rows and environment as JSON")
    p.add_argument("--overwrite", action="store_true", help="allow --json to replace a file")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # one pipeline run, in a subprocess
    p.add_argument("--mpi-worker", help=argparse.SUPPRESS)  # a rank of an MPI case
    args = p.parse_args(argv)
    if not (args.worker or args.mpi_worker):
        _check_counts(p, args)
    return args


def _check_counts(p: argparse.ArgumentParser, args) -> None:
    given = [f"--{name}" for name in ("repeats", "epochs") if getattr(args, name) is not None]
    if args.quick and given:
        p.error(f"--quick sets its own tiny sizes, 2 epochs and 1 run; leave out {given[0]}")
    for name in ("repeats", "epochs", "torch_threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")


def _check_outputs(args) -> None:
    """Refuse unwritable outputs before an hour of benchmarking, not after it."""
    if args.json is not None:
        refuse_replacing(check_output_file(args.json, "json"), (), args.overwrite, "json")
    if args.memmap_gb is not None:
        check_number("memmap_gb", args.memmap_gb, low=0, low_open=True)
        check_creatable(args.memmap_dir, "memmap_dir")


def settings(args) -> Settings:
    """The run's settings: --quick's tiny sizes, or the flags with their defaults."""
    epochs = 2 if args.quick else 50 if args.epochs is None else args.epochs
    repeats = 1 if args.quick else 5 if args.repeats is None else args.repeats
    return Settings(quick=args.quick, epochs=epochs, repeats=repeats,
                    gpu_device=args.gpu_device, memmap_gb=args.memmap_gb,
                    memmap_dir=args.memmap_dir, skip=tuple(args.skip))  # fmt: skip


def selected(args) -> list[str]:
    """The case families to run, in :data:`CASES` order."""
    chosen = {args.cases} - {"all", "none"}
    if args.cases == "all":
        chosen = {n for n, (_, in_all) in CASES.items() if in_all} | {"gpu"} * bool(probe_cuda()[1])
    if args.memmap_gb:
        chosen.add("memmap")
    return [name for name in CASES if name in chosen]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    for flag, worker in WORKERS.items():
        if getattr(args, flag):
            result = worker(json.loads(getattr(args, flag)))
            if result is not None:
                print(json.dumps(result))
            return 0
    _check_outputs(args)
    load_before = os.getloadavg()
    results, run = Results(), settings(args)
    _torch_threads(args.torch_threads, results)
    for name in selected(args):
        CASES[name][0](run, results)
    env = environment()
    env["loadavg_before"], env["loadavg_after"] = load_before, os.getloadavg()
    report(env, results)
    if args.json:
        data = {"environment": env, "rows": results.rows, "pipeline": results.pipeline,
                "mpi": results.mpi, "notes": results.notes}  # fmt: skip
        text = json.dumps(data, indent=2)
        atomic_write(args.json, lambda f: f.write(text.encode()))
    return 0


def _torch_threads(count: int | None, results: Results) -> None:
    """Run PyTorch's CPU ops on ``count`` threads (None: PyTorch's default)."""
    torch = _torch()
    if count is not None and torch is None:
        results.note("--torch-threads has nothing to set: PyTorch is not installed")
    elif count is not None:
        torch.set_num_threads(count)


def report(env: dict, results: Results) -> None:
    """The environment header, the tables, the notes and (on a busy machine) the warning."""
    print(
        f"handgrad benchmark, {env['date']}: {env['machine']}, Python {env['python']}, "
        f"NumPy {env['numpy']} ({env['blas']}), scikit-learn {env['scikit_learn']}, "
        f"PyTorch {env['torch']}, JAX {env['jax']}, CuPy {env['cupy']}, GPU {env['gpu']}\n"
        f"load average (1, 5, 15 min) before {_loads(env['loadavg_before'])}, after "
        f"{_loads(env['loadavg_after'])}; other load = cores other processes kept busy"
    )
    busy = [r for r in results.rows + results.pipeline + results.mpi if _busy(r)]
    warning = (
        f"WARNING: the machine was busy during {len(busy)} case(s) (marked BUSY: other "
        f"processes used more than {BUSY_CORES} cores): those timings are not comparable; "
        "re-measure on a quiet machine"
    )
    if busy:
        print(warning, file=sys.stderr)
    tables = ((results.rows, format_table), (results.pipeline, bench_pipeline.format_pipeline),
              (results.mpi, bench_mpi.format_mpi))  # fmt: skip
    for rows, format_rows in tables:
        if rows:
            print(format_rows(rows))
    for note in results.notes:
        print(f"note: {note}")
    if busy:
        print(warning)


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


def format_table(rows: list) -> str:
    """The CPU and GPU rows as a Markdown table (BUSY: other processes used the CPU; after
    a paired ratio, its quartiles over the rounds)."""
    lines = _header("ms / epoch", "ms / step", "vs handgrad", "accuracy / floor", "other load")
    for r in rows:
        epoch = f"{r['epoch_ms']:.2f}" if "epoch_ms" in r else ""
        extra = f"{r['accuracy']:.4f}" if "accuracy" in r else f"{r['floor_fraction']:.0%}"
        spread = r.get("vs_handgrad_quartiles")
        spread = f" ({spread[0]:.2f}-{spread[1]:.2f})" if spread else ""
        lines.append(
            f"| {r['case']} | {r['contender']}{_threads(r)} | {epoch} | {r['step_ms']:.4f} | "
            f"{r['vs_handgrad']:.2f}x{spread} | {extra} | "
            f"{r.get('other_cores', 0.0):.2f}{_busy(r)} |"
        )
    return "\n".join(lines)


def _threads(r) -> str:
    """After a contender's name, the threads its arithmetic ran on, where recorded."""
    if "blas_threads" in r:
        return f" ({r['blas_threads']} BLAS thr.)"
    if "torch_threads" in r:
        return f" ({r['torch_threads']} torch thr.)"
    return ""


def _loads(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


__all__ = ["CASES", "bench_common", "environment", "format_table", "main"]

if __name__ == "__main__":
    sys.exit(_cli.run(main))
