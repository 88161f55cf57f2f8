"""Data-pipeline cases: 10k and 100k synthetic rows, 784-256-10, logistic, float64, batch
128, 3 epochs; each contender in a fresh subprocess (``bench.py --worker SPEC``) that
makes the data, then trains: time, and peak memory above the process's size with the
data loaded (VmHWM after resetting it). handgrad trains on the caller's NumPy array as
it is.

The memmap case (--memmap-gb G) writes a G GB float64 .npy (784 columns) piece by piece,
then trains handgrad one epoch on it memory-mapped in a subprocess: its peak RSS.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
from bench_common import (
    Results,
    Settings,
    _busy,
    _handgrad_accuracy,
    _in_subprocess,
    _sklearn_accuracy,
    _torch,
    _with_ratios,
    other_load,
)
from bench_cpu import _torch_digits

from backends import get_backend
from backends.blas import blas_info
from model import MLP
from model.streaming import open_memmap

PIPELINE = {"sizes": (784, 256, 10), "batch": 128, "lr": 0.1}


def run(settings: Settings, results: Results) -> None:
    """Every pipeline contender at 10k and 100k rows (--quick: 100 and 1000, 1 epoch)."""
    sizes = (100, 1000) if settings.quick else (10_000, 100_000)
    results.pipeline += pipeline_cases(sizes, 1 if settings.quick else 3)


def run_memmap(settings: Settings, results: Results) -> None:
    """The memmap case, of --memmap-gb GB in --memmap-dir."""
    assert settings.memmap_gb
    results.pipeline.append(memmap_case(settings.memmap_gb, settings.memmap_dir))


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


def _write_memmap(path: Path, labels: Path, rows: int) -> None:
    """A (rows, 784) float64 .npy and its labels, written 65536 rows at a time."""
    d = PIPELINE["sizes"][0]
    path.parent.mkdir(parents=True, exist_ok=True)
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(rows, d))
    y = np.lib.format.open_memmap(labels, mode="w+", dtype=np.int64, shape=(rows,))
    for start in range(0, rows, 65536):
        Xc, yc = _synthetic(min(65536, rows - start), "float64", seed=start)
        X[start : start + len(Xc)], y[start : start + len(Xc)] = Xc, yc
    X.flush()
    y.flush()


def memmap_case(gigabytes: float, folder: str) -> dict:
    """Write a ``gigabytes`` GB float64 .npy (784 columns, labels beside it) to ``folder``
    in pieces, train handgrad one epoch on it memory-mapped in a subprocess."""
    rows = int(gigabytes * 1e9 / (8 * PIPELINE["sizes"][0]))
    path = Path(folder) / "handgrad-bench-X.npy"
    labels = Path(folder) / "handgrad-bench-y.npy"
    _write_memmap(path, labels, rows)
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
    return "\n".join(lines + _scaling(rows))


def _scaling(rows: list) -> list[str]:
    """Per contender: its time at the larger row count over its time at the smaller."""
    sizes = sorted({r["rows"] for r in rows if "rows" in r})
    if len(sizes) != 2:
        return []
    lines = []
    for name in dict.fromkeys(r["contender"] for r in rows if "rows" in r):
        t = {r["rows"]: r["seconds"] for r in rows if r["contender"] == name and "rows" in r}
        lines.append(
            f"\n{name}: time at {sizes[1]} rows / at {sizes[0]} rows = "
            f"{t[sizes[1]] / t[sizes[0]]:.2f} (rows x{sizes[1] / sizes[0]:g})"
        )
    return lines
