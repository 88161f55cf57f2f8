"""GPU cases: sigmoid layers, mse loss, float32, plain SGD lr 0.1, batches in order: xor
3-4-1 batch 4, digits 64-64-10 full batch (1797), mnist-shape 784-512-512-10 batch 512
(synthetic), wide 4096-4096-4096-4096 batch 8192 (synthetic), on --gpu-device (default
cuda). Contenders: handgrad on that device (cupy), handgrad torch:cuda (the same run_epoch
on PyTorch CUDA tensors, when PyTorch has CUDA), PyTorch eager with autograd, PyTorch with
hand-written gradients, and the GEMM floor (the step's matrix products alone, cuBLAS
sgemm through CuPy); each row shows the fraction of that floor it reaches. Then the GPU
replica cases (:mod:`bench_replicas`).

With a CPU device (--gpu-device cpu) the same code runs on the host: handgrad numpy,
handgrad torch (CPU tensors) and PyTorch on the CPU, which is how the tests exercise it.
"""

from __future__ import annotations

import numpy as np
from bench_common import (
    Results,
    Settings,
    _median_time,
    _torch,
    _with_ratios,
    other_load,
    torch_backend,
)
from bench_replicas import replica_case, replica_cases

from backends import get_backend, host_rng
from model import MLP, SGD
from model.data import load_dataset
from model.fit import run_epoch

LR = 0.1


def run(settings: Settings, results: Results) -> None:
    """Every GPU case on --gpu-device, then the GPU replica cases."""
    backend = get_backend(settings.gpu_device, "float32")
    twin = _torch_twin(backend, settings, results)
    for case, sizes, n, batch in gpu_shapes(settings.quick):
        steps = 2 if settings.quick else (20 if sizes[0] >= 4096 else 200)
        with other_load({}) as load:
            case_rows = gpu_case(case, sizes, n, batch, backend, steps, settings.repeats, twin)
        results.rows += [{**r, "other_cores": load["other_cores"]} for r in case_rows]
    for spec in replica_cases(backend, settings.quick, gpu=True):
        results.rows += replica_case(*spec, backend, settings.repeats)


def _torch_twin(backend, settings: Settings, results: Results):
    """``(name, backend)`` of handgrad on PyTorch tensors beside ``backend`` (torch:cuda
    beside a GPU, torch beside the CPU), or None: handgrad already runs on PyTorch, it
    was --skip'ped, or PyTorch (with CUDA) is missing (then a note says why)."""
    if backend.name == "torch":
        return None
    index = backend.spec.rpartition(":")[2]
    device = f"torch:cuda:{index if index.isdigit() else 0}" if backend.is_gpu else "torch"
    name = "handgrad torch:cuda" if backend.is_gpu else "handgrad torch"
    if not settings.wanted(name):
        return None
    twin, why = torch_backend(device, "float32")
    if twin is None:
        results.note(f"{name} left out of the GPU cases: {why}")
        return None
    return name, twin


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


def gpu_case(case, sizes, rows, batch, backend, steps: int, repeats: int, twin=None) -> list:
    """One GPU case on ``backend`` (and handgrad on ``twin`` = (name, backend), if any):
    time per training step of every contender."""
    X, Y = _gpu_data(case, sizes, rows)
    model = MLP(sizes, activation="sigmoid", output="sigmoid", loss="mse")
    epochs = max(1, steps * batch // rows)
    n_steps = epochs * -(-rows // batch)
    params = model.init_params(backend, host_rng(0))
    host_params = [backend.to_numpy(v) for v in params.values()]  # before training
    times = {f"handgrad {backend.name}": _handgrad_time(model, params, backend, X, Y, batch,
                                                        epochs, repeats)}  # fmt: skip
    if twin is not None:
        name, other = twin
        start = model.init_params(other, host_rng(0))
        times[name] = _handgrad_time(model, start, other, X, Y, batch, epochs, repeats)
    floor = _gemm_floor(backend, sizes, params, batch, n_steps, repeats)
    times["GEMM floor (sgemm only)"] = floor
    out = [{"case": case, "contender": n, "step_ms": 1e3 * t / n_steps} for n, t in times.items()]
    torch = _torch()
    if torch is not None and (torch.cuda.is_available() or not backend.is_gpu):
        dev = torch.device("cuda" if backend.is_gpu else "cpu")  # side by side with handgrad
        out += _torch_rows(torch, dev, case, host_params, X, Y, batch, LR, epochs, n_steps, repeats)
    for r in out:
        r["floor_fraction"] = 1e3 * floor / n_steps / r["step_ms"]
    return _with_ratios(out)


def _handgrad_time(model, params, backend, X, Y, batch: int, epochs: int, repeats: int):
    """Median seconds of ``epochs`` epochs of handgrad's run_epoch (batches in order) on
    ``backend``, training ``params`` on from where they are."""
    Xd, Yd = backend.asarray(X), backend.asarray(Y)
    opt = SGD(LR)
    state = opt.init(params)

    def handgrad():
        for _ in range(epochs):
            run_epoch(model, params, state, Xd, Yd, opt, batch_size=batch, xp=backend.xp)

    return _median_time(handgrad, repeats, backend.synchronize)


def _gemm_floor(backend, sizes, params, batch: int, n_steps: int, repeats: int) -> float:
    """Median seconds of the matrix products of ``n_steps`` steps alone."""
    xp = backend.xp
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

    return _median_time(gemm_floor, repeats, backend.synchronize)


def _torch_rows(torch, dev, case, host_params, X, Y, batch, lr, epochs, n_steps, repeats) -> list:
    """PyTorch eager on ``dev``, from handgrad's initial parameters (W1, b1, W2, ... on the
    host): autograd, and the same step with hand-written gradients."""
    Ws = [torch.as_tensor(W, device=dev) for W in host_params[0::2]]
    bs = [torch.as_tensor(b, device=dev) for b in host_params[1::2]]
    Xt, Yt = torch.as_tensor(X, device=dev), torch.as_tensor(Y, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    label = f"PyTorch {torch.__version__} {dev.type}"
    autograd = _torch_autograd(torch, Ws, bs, Xt, Yt, batch, lr, epochs)
    by_hand = _torch_by_hand(torch, Ws, bs, Xt, Yt, batch, lr, epochs)
    results = {f"{label} eager autograd": _median_time(autograd, repeats, sync),
               f"{label} hand-written gradients": _median_time(by_hand, repeats, sync)}  # fmt: skip
    return [{"case": case, "contender": n, "step_ms": 1e3 * t / n_steps}
            for n, t in results.items()]  # fmt: skip


def _torch_autograd(torch, Ws, bs, Xt, Yt, batch, lr, epochs):
    """PyTorch's usual step: autograd through the sigmoid layers, mse, optim.SGD."""
    params = [p.clone().requires_grad_(True) for p in (*Ws, *bs)]
    opt = torch.optim.SGD(params, lr=lr)
    L, rows = len(Ws), len(Xt)

    def autograd():
        for _ in range(epochs):
            for s in range(0, rows, batch):
                a = Xt[s : s + batch]
                for W, b in zip(params[:L], params[L:], strict=True):
                    a = torch.sigmoid(a @ W + b)
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.mse_loss(a, Yt[s : s + batch]).backward()
                opt.step()

    return autograd


def _torch_by_hand(torch, Ws, bs, Xt, Yt, batch, lr, epochs):
    """The same step with hand-written gradients and in-place updates, no autograd."""
    Wh, bh = [W.clone() for W in Ws], [b.clone() for b in bs]
    L, rows = len(Ws), len(Xt)

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

    return by_hand
