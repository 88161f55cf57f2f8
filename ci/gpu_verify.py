"""Every GPU path once, end to end, as a user runs it: one prepared script for a lent GPU
machine's short lease (run `bash ci/gpu.sh` first for the GPU-marked tests).

    python ci/gpu_verify.py                 # on the GPU: device cuda
    python ci/gpu_verify.py --device strict # a dry run of the same checks on the CPU

Checks, each printed as one PASS/FAIL line with its numbers:
- train.py on the device trains digits to the cpu run's accuracy; float64 parameters of
  the device and cpu runs agree to 1e-8 after a full run (full batch Adam; minibatch SGD);
- a checkpoint made on the device resumes on cpu, and the reverse, continuing exactly
  (the uninterrupted runs' parameters to 1e-8);
- `auto` picks the GPU, and a device index past the count is one error line;
- predict.py on the device equals cpu; a memory-mapped data file streams to the device;
  a sweep trains there; two MPI ranks on one GPU equal one process (when mpiexec exists).
Exit status: the number of failed checks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRAIN, PREDICT = ROOT / "scripts" / "train.py", ROOT / "scripts" / "predict.py"
results: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append((name, bool(ok), detail))
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def run(*argv, env=None, launcher=()) -> subprocess.CompletedProcess:
    return subprocess.run([*launcher, sys.executable, *map(str, argv)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)  # fmt: skip


def train(out: Path, *flags) -> dict:
    done = run(TRAIN, "--out", out, "--json", "--quiet", *flags)
    if done.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(map(str, flags))}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def params(folder: Path) -> dict:
    with np.load(folder / "checkpoint.npz") as f:
        return {k: f[k] for k in f.files if k != "meta" and not k.startswith("opt.")}


def worst(a: dict, b: dict) -> float:
    """The largest relative difference over every parameter."""
    return max(float(np.max(np.abs(a[k] - b[k])) / max(np.max(np.abs(b[k])), 1e-300)) for k in b)


def agreement(device: str, tmp: Path) -> None:
    for label, flags in (("adam full batch", ()), ("sgd batch 64", ("--optimizer", "sgd",
                         "--batch-size", "64", "--epochs", "30"))):  # fmt: skip
        runs = {d: train(tmp / f"{d}-{len(flags)}", "--device", d, "--dtype", "float64", *flags)
                for d in ("cpu", device)}  # fmt: skip
        diff = worst(params(tmp / f"{device}-{len(flags)}"), params(tmp / f"cpu-{len(flags)}"))
        check(f"float64 {device} = cpu ({label})", diff < 1e-8, f"max rel diff {diff:.2e}")
        acc = {d: r["metrics"]["validation"]["accuracy"] for d, r in runs.items()}
        check(f"accuracy {device} = cpu ({label})", abs(acc[device] - acc["cpu"]) < 0.01, str(acc))
    acc32 = {d: train(tmp / f"{d}-32", "--device", d)["metrics"]["validation"]["accuracy"]
             for d in ("cpu", device)}  # fmt: skip
    check(f"float32 accuracy {device} ~ cpu", abs(acc32[device] - acc32["cpu"]) < 0.01, str(acc32))


def resume_across(device: str, tmp: Path) -> None:
    whole = params(tmp / "cpu-0")  # 100 epochs, float64, from agreement()
    for first, then in ((device, "cpu"), ("cpu", device)):
        folder = tmp / f"half-{first}"
        train(folder, "--device", first, "--dtype", "float64", "--epochs", "50")
        done = run(TRAIN, "--resume", folder, "--device", then, "--epochs", "100", "--quiet")
        diff = worst(params(folder), whole) if done.returncode == 0 else float("inf")
        detail = f"max rel diff to the uninterrupted run {diff:.2e} {done.stderr.strip()[-200:]}"
        check(f"checkpoint made on {first} resumes on {then}", diff < 1e-8, detail)


def device_strings(device: str, tmp: Path) -> None:
    if device.startswith("cuda"):
        auto = train(tmp / "auto", "--epochs", "2")["device"]
        check("auto picks the GPU", auto.startswith("cuda"), f"auto -> {auto}")
        count = run("-c", "import cupy; print(cupy.cuda.runtime.getDeviceCount())").stdout.strip()
        bad = run(TRAIN, "--device", f"cuda:{count}", "--out", tmp / "bad", "--quiet")
        lines = bad.stderr.strip().splitlines()
        check(f"cuda:{count} on {count} GPU(s) is one error line",
              bad.returncode == 2 and len(lines) == 1, bad.stderr.strip())  # fmt: skip


def predict_and_stream(device: str, tmp: Path) -> None:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    np.savez(tmp / "rows.npz", X=X / 16, y=y)
    train(
        tmp / "m",
        "--device",
        device,
        "--dtype",
        "float64",
        "--save",
        tmp / "m.npz",
        "--epochs",
        "20",
    )
    out = {d: run(PREDICT, tmp / "m.npz", "--data", tmp / "rows.npz", "--device", d, "--proba")
           for d in ("cpu", device)}  # fmt: skip
    got, want = (np.loadtxt(out[d].stdout.splitlines(), delimiter=",", skiprows=1)
                 for d in (device, "cpu"))  # fmt: skip
    check(f"predict.py on {device} = cpu", np.allclose(got, want, rtol=1e-10, atol=1e-12),
          f"rows {len(got)}")  # fmt: skip
    big = np.lib.format.open_memmap(tmp / "big.npy", mode="w+", dtype=np.float64, shape=(20000, 65))
    rng = np.random.default_rng(0)
    big[:, :64] = rng.random((20000, 64))
    big[:, 64] = big[:, :8].sum(axis=1) > 4
    big.flush()
    for d in ("cpu", device):
        train(tmp / f"mm-{d}", "--device", d, "--dtype", "float64", "--data", tmp / "big.npy",
              "--epochs", "2", "--batch-size", "512")  # fmt: skip
    diff = worst(params(tmp / f"mm-{device}"), params(tmp / "mm-cpu"))
    check(f"a memmap streams to {device} (= cpu)", diff < 1e-8, f"max rel diff {diff:.2e}")


def sweep_and_mpi(device: str, tmp: Path) -> None:
    summary = train(tmp / "sweep", "--device", device, "--sweep", "lr=0.01,0.1", "--sweep",
                    "seed=0,1", "--epochs", "30")  # fmt: skip
    check(f"a sweep trains on {device}", summary["status"] == "completed" and
          summary["best"] is not None, str(summary["best"]))  # fmt: skip
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        check("MPI on one GPU", True, "skipped: no mpiexec here")
        return
    train(tmp / "mpi-1", "--device", device, "--dtype", "float64", "--epochs", "5",
          "--batch-size", "100")  # fmt: skip
    done = run(TRAIN, "--device", f"{device}:0" if device == "cuda" else device, "--dtype",
               "float64", "--epochs", "5", "--batch-size", "100", "--out", tmp / "mpi-2",
               "--quiet", launcher=(mpiexec, "-n", "2"))  # fmt: skip
    diff = worst(params(tmp / "mpi-2"), params(tmp / "mpi-1")) if done.returncode == 0 else 1.0
    check(f"2 MPI ranks on one {device} = one process", diff < 1e-10,
          f"max rel diff {diff:.2e} {done.stderr.strip()[-300:]}")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda", help="the device checked against cpu")
    device = p.parse_args().device
    tmp = Path(tempfile.mkdtemp(prefix="handgrad-gpu-"))
    try:
        for part in (agreement, resume_across, device_strings, predict_and_stream, sweep_and_mpi):
            try:
                part(device, tmp)
            except Exception as exc:  # a failed check, reported; the others still run
                check(part.__name__, False, f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [name for name, ok, _ in results if not ok]
    print(f"{len(results) - len(failed)} of {len(results)} checks passed", flush=True)
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
