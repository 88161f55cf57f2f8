"""CPU cases: digits (bundled, X/16), one hidden layer of 64 or 512, logistic activation,
softmax cross-entropy, SGD lr 0.1 (no momentum, no penalty), batch 64, 50 epochs, float64
and float32, every contender measured interleaved (:func:`bench_common._measure_together`).

Contenders: handgrad numpy; scikit-learn MLPClassifier (solver sgd, same layers, shuffled
batches, no early stopping); handgrad torch (the same fit, model, data, initial weights
and batches on PyTorch CPU tensors through array-api-compat), PyTorch eager with autograd,
and JAX (the whole epoch compiled, jit over lax.scan; float32 only) when installed.
"""

from __future__ import annotations

from bench_common import (
    Results,
    Settings,
    _handgrad_accuracy,
    _jax,
    _measure_together,
    _sklearn_accuracy,
    _torch,
    _with_ratios,
    other_load,
    torch_backend,
)

from backends import get_backend, host_rng
from backends.blas import blas_info, blas_threads
from model import MLP
from model.data import load_dataset

BATCH, LR = 64, 0.1
HANDGRAD_TORCH = "handgrad torch"


def run(settings: Settings, results: Results) -> None:
    """The four CPU cases (64 and 512 hidden units, float64 and float32)."""
    if settings.wanted(HANDGRAD_TORCH):
        why = torch_backend("torch", "float64")[1]
        if why:
            results.note(f"{HANDGRAD_TORCH} left out of the CPU cases: {why}")
    rows = 200 if settings.quick else None
    for hidden in (64, 512):
        for dtype in ("float64", "float32"):
            results.rows += cpu_digits(
                hidden, dtype, settings.epochs, settings.repeats, rows, settings.wanted
            )


def cpu_digits(hidden: int, dtype: str, epochs: int, repeats: int, rows: int | None,
               wanted=lambda name: True) -> list:  # fmt: skip
    """One CPU case: rows for every available contender that is ``wanted(name)`` (time per
    epoch and per step, training accuracy as the mean over the runs' seeds), measured
    interleaved; handgrad numpy first, the rest's times relative to it."""
    X, y = load_dataset("digits")
    X, y = X[:rows].astype(dtype), y[:rows]
    runs = {name: r for name, r in _contenders(X, y, hidden, dtype, epochs).items()
            if name == "handgrad numpy" or wanted(name)}  # fmt: skip
    with other_load({}) as load:
        measured = _measure_together(runs, repeats)
    steps = -(-len(X) // BATCH) * epochs
    case = f"digits 64-{hidden}-10 {dtype}"
    out = [_row(case, name, result, epochs, steps) for name, result in measured.items()]
    out[0]["blas_threads"] = blas_threads(BATCH * X.shape[1] * hidden) or blas_info()["threads"]
    for r in out:
        r["other_cores"] = load["other_cores"]
    return _with_ratios(out)


def _row(case: str, name: str, measured, epochs: int, steps: int) -> dict:
    seconds, accuracy, rounds = measured
    row = {"case": case, "contender": name, "epoch_ms": 1e3 * seconds / epochs,
           "step_ms": 1e3 * seconds / steps, "accuracy": accuracy, "round_s": rounds}  # fmt: skip
    torch = _torch() if "torch" in name.lower() else None
    if torch is not None:  # PyTorch's CPU ops run on its own threads, BLAS or not
        row["torch_threads"] = torch.get_num_threads()
    return row


def _unsynced(run):
    return run, lambda: None


def _contenders(X, y, hidden: int, dtype: str, epochs: int) -> dict:
    """name -> (run(seed) -> training accuracy, synchronize) of every installed contender."""
    backend = get_backend("cpu", dtype)

    def sklearn(seed):
        return _sklearn_accuracy(X, y, (hidden,), BATCH, LR, epochs, seed)

    runs = {"handgrad numpy": (_handgrad(backend, X, y, hidden, epochs), backend.synchronize),
            "scikit-learn MLPClassifier": _unsynced(sklearn)}  # fmt: skip
    tb = torch_backend("torch", dtype)[0]
    if tb is not None:
        runs[HANDGRAD_TORCH] = (_handgrad(tb, X, y, hidden, epochs), tb.synchronize)
    torch = _torch()
    if torch is not None:
        runs[f"PyTorch {torch.__version__} CPU eager"] = _unsynced(
            _torch_digits(torch, X, y, hidden, dtype, BATCH, LR, epochs)
        )
    jax = _jax()
    if jax is not None and dtype == "float32":
        runs[f"JAX {jax.__version__} jit+scan"] = _unsynced(
            _jax_digits(jax, X, y, hidden, BATCH, LR, epochs)
        )
    return runs


def _handgrad(backend, X, y, hidden: int, epochs: int):
    """handgrad's fit on ``backend``'s arrays of host (X, y): ``run(seed)``, which trains
    from seed's initial weights and batches and returns the training accuracy (the same
    numbers on every backend: both are drawn on the host)."""
    model = MLP((X.shape[1], hidden, 10), activation="sigmoid", loss="cross_entropy")
    Xd = backend.asarray(X, copy=False)
    yd = backend.asarray(y, dtype=backend.xp.int64, copy=False)

    def run(seed):
        return _handgrad_accuracy(model, backend, Xd, yd, BATCH, LR, epochs, seed)

    return run


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
