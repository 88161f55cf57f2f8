"""Side-by-side training-speed benchmark: handgrad against what users would pick instead.

    python scripts/bench.py                 # CPU cases, and GPU cases when a GPU works
    python scripts/bench.py --json out.json --repeats 7
    python scripts/bench.py --quick         # tiny sizes: checks that every contender runs

Every contender trains the same model on the same data, dtype, batch size and optimizer in
this one process. Times are medians over --repeats runs after a warm-up run, with device
synchronization around each. Ratios are contender time / handgrad time (> 1: handgrad is
faster).

CPU cases: digits (bundled, X/16), one hidden layer of 64 or 512, logistic activation,
softmax cross-entropy, SGD lr 0.1 (no momentum, no penalty), batch 64, 50 epochs, float64
and float32. Contenders: handgrad numpy, scikit-learn MLPClassifier (solver sgd, same
layers, shuffled batches, no early stopping) and PyTorch eager when installed; each row
shows its training accuracy after the last epoch.

GPU cases: sigmoid layers, mse loss, float32, plain SGD lr 0.1, batches in order: xor
3-4-1 batch 4, digits 64-64-10 full batch (1797), mnist-shape 784-512-512-10 batch 512
(synthetic), wide 4096-4096-4096-4096 batch 8192 (synthetic). Contenders: handgrad cupy,
PyTorch eager with autograd, PyTorch with hand-written gradients, and the GEMM floor (the
step's matrix products alone, cuBLAS sgemm through CuPy); each row shows the fraction of
that floor it reaches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import _cli
import numpy as np

from backends import get_backend, host_rng, probe_cuda
from model import MLP, SGD, fit
from model.checkpoint import atomic_write
from model.fit import run_epoch


def _median_time(run: Callable[[], None], repeats: int, sync: Callable[[], None]) -> float:
    """Median wall time of ``run()`` over ``repeats`` runs after one warm-up run."""
    run()
    sync()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


# --------------------------------------------------------------------------- CPU cases


def cpu_digits(hidden: int, dtype: str, epochs: int, repeats: int, rows: int | None) -> list:
    """One CPU case: rows for every available contender (time per epoch and per step)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = (X / 16.0)[:rows], y[:rows]
    batch, lr = 64, 0.1
    steps = -(-len(X) // batch) * epochs
    case = f"digits 64-{hidden}-10 {dtype}"
    out = []

    def row(name, seconds, accuracy):
        out.append(
            {
                "case": case,
                "contender": name,
                "epoch_ms": 1e3 * seconds / epochs,
                "step_ms": 1e3 * seconds / steps,
                "accuracy": accuracy,
            }
        )

    backend = get_backend("cpu", dtype)
    model = MLP((X.shape[1], hidden, 10), activation="sigmoid", loss="cross_entropy")
    Xd, yd = backend.asarray(X), backend.asarray(y, dtype=backend.xp.int64)
    result = {}

    def handgrad():
        params = model.init_params(backend, host_rng(0))
        fit(
            model,
            params,
            Xd,
            yd,
            optimizer=SGD(lr),
            epochs=epochs,
            batch_size=batch,
            rng=host_rng(1),
        )
        result["params"] = params

    seconds = _median_time(handgrad, repeats, backend.synchronize)
    hits = model.predict_class(result["params"], Xd) == yd
    row("handgrad numpy", seconds, float(np.mean(backend.to_numpy(hits))))

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        (hidden,),
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
        random_state=0,
    )
    Xs = X.astype(dtype)

    def sklearn():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(Xs, y)

    seconds = _median_time(sklearn, repeats, lambda: None)
    row("scikit-learn MLPClassifier", seconds, float(clf.score(Xs, y)))

    torch = _torch()
    if torch is not None:
        tdtype = getattr(torch, dtype)
        Xt, yt = torch.as_tensor(Xs), torch.as_tensor(y)
        net = {}

        def pytorch():
            torch.manual_seed(0)
            model_t = torch.nn.Sequential(
                torch.nn.Linear(X.shape[1], hidden), torch.nn.Sigmoid(), torch.nn.Linear(hidden, 10)
            )
            model_t = model_t.to(tdtype)
            opt = torch.optim.SGD(model_t.parameters(), lr=lr)
            loss_fn = torch.nn.CrossEntropyLoss()
            for _ in range(epochs):
                order = torch.randperm(len(Xt))
                Xe, ye = Xt[order], yt[order]
                for s in range(0, len(Xt), batch):
                    opt.zero_grad(set_to_none=True)
                    loss_fn(model_t(Xe[s : s + batch]), ye[s : s + batch]).backward()
                    opt.step()
            net["model"] = model_t

        seconds = _median_time(pytorch, repeats, lambda: None)
        with torch.no_grad():
            accuracy = float((net["model"](Xt).argmax(1) == yt).double().mean())
        row(f"PyTorch {torch.__version__} CPU eager", seconds, accuracy)
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
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        return (X / 16.0).astype(np.float32), np.eye(10, dtype=np.float32)[y]
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
    """Add ``vs_handgrad`` = contender time / handgrad time (the case's first row)."""
    key = "epoch_ms" if "epoch_ms" in rows[0] else "step_ms"
    for r in rows:
        r["vs_handgrad"] = r[key] / rows[0][key]
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
    """Machine, date and library versions, for the record."""
    import array_api_compat
    import sklearn

    env = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_name()}, {os.cpu_count()} cores, {platform.machine()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "array_api_compat": array_api_compat.__version__,
        "scikit_learn": sklearn.__version__,
    }
    torch = _torch()
    env["torch"] = torch.__version__ if torch else "not installed"
    cupy, count, reason = probe_cuda()
    env["cupy"] = cupy.__version__ if cupy else "not installed"
    if count:
        env["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    else:
        env["gpu"] = f"none ({reason})"
    return env


def format_table(rows: list) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| case | contender | ms / epoch | ms / step | vs handgrad | accuracy / floor |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        epoch = f"{r['epoch_ms']:.2f}" if "epoch_ms" in r else ""
        extra = f"{r['accuracy']:.4f}" if "accuracy" in r else f"{r['floor_fraction']:.0%}"
        lines.append(
            f"| {r['case']} | {r['contender']} | {epoch} | {r['step_ms']:.4f} | "
            f"{r['vs_handgrad']:.2f}x | {extra} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--cases",
        choices=("all", "cpu", "gpu"),
        default="all",
        help="which cases (default: all; GPU cases need a usable GPU)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed runs per contender (default: 5)")
    p.add_argument("--epochs", type=int, default=50, help="CPU-case epochs (default: 50)")
    p.add_argument("--gpu-device", default="cuda", help="device of the GPU cases (default: cuda)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and 2 epochs: checks every contender, measures nothing",
    )
    p.add_argument("--json", metavar="PATH", help="also write the rows and environment as JSON")
    args = p.parse_args(argv)
    epochs = 2 if args.quick else args.epochs
    repeats = 1 if args.quick else args.repeats
    rows = []
    if args.cases in ("all", "cpu"):
        for hidden in (64, 512):
            for dtype in ("float64", "float32"):
                rows += cpu_digits(hidden, dtype, epochs, repeats, 200 if args.quick else None)
    gpu_wanted = args.cases == "gpu" or (args.cases == "all" and probe_cuda()[1])
    if gpu_wanted:
        backend = get_backend(args.gpu_device, "float32")
        for case, sizes, n, batch in gpu_shapes(args.quick):
            steps = 2 if args.quick else (20 if sizes[0] >= 4096 else 200)
            rows += gpu_case(case, sizes, n, batch, backend, steps, repeats)
    env = environment()
    print(
        f"handgrad benchmark, {env['date']}: {env['machine']}, Python {env['python']}, "
        f"NumPy {env['numpy']}, scikit-learn {env['scikit_learn']}, PyTorch {env['torch']}, "
        f"CuPy {env['cupy']}, GPU {env['gpu']}"
    )
    print(format_table(rows))
    if args.json:
        text = json.dumps({"environment": env, "rows": rows}, indent=2)
        atomic_write(args.json, lambda f: f.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main))
