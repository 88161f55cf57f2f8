"""Reproduce the tutorials' systems with handgrad, on any backend.

    python scripts/reproduce.py single-neuron [--w0 3] [--explain]
    python scripts/reproduce.py relu-neuron
    python scripts/reproduce.py logistic-regression
    python scripts/reproduce.py two-layer --device cuda --json

single-neuron        seeds 000/001: x = 3, y = 0, w0 = 0.5, b0 = 2, sigmoid, C = 1/2 (y_hat - y)^2,
                     learning rate 0.05, 5000 epochs (all changeable).
relu-neuron          seed 002: y_hat = max(0, w.x + b), C = mse. The tutorial has no data; this
                     uses 200 rows of x ~ N(0, I_3), y = x.(0.5, -0.3, 0.2) + 3 + N(0, 0.1^2)
                     (seed 0; every target positive), w0 = 0, b0 = 1, lr 0.1, 1000 epochs.
logistic-regression  seed 003: scikit-learn's breast-cancer data, standardized, w0 = b0 = 0,
                     C = bce, full-batch gradient descent, lr 0.5, 1000 epochs.
two-layer            seed 004 exactly: its 4-row X and y, np.random.seed(10), rand(3, 4),
                     rand(4, 1), no bias, 10000 iterations of W += -dC/dW (C = sse, lr 1).
                     Prints the prediction the seed's own code prints: the output of its
                     last iteration's forward pass (before that iteration's update).

--x, --y, --w0 and --b0 set single-neuron's values only. A long run shows a progress bar
on stderr when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import NamedTuple

import _cli
import numpy as np

from backends import ConfigError, host_rng, legacy_rng
from model import SGD, activations, fit, logistic_regression, relu_neuron, single_neuron, two_layer
from model.checkpoint import to_file_names
from model.preprocessing import Standardizer
from model.report import progress_bar

SYSTEMS = ("single-neuron", "relu-neuron", "logistic-regression", "two-layer")
DEFAULTS = {  # system: (learning rate, epochs)
    "single-neuron": (0.05, 5000),
    "relu-neuron": (0.1, 1000),
    "logistic-regression": (0.5, 1000),
    "two-layer": (1.0, 10000),
}
NEURON = {"x": 3.0, "y": 0.0, "w0": 0.5, "b0": 2.0}  # the tutorial's single-neuron values
MAX_EPOCHS = 10_000_000


class Problem(NamedTuple):
    model: object
    params: dict
    X: object
    Y: object


def build(system: str, args, backend) -> Problem:
    """The model, its starting parameters and data for one of the tutorials' systems."""

    def put(a):
        return backend.asarray(np.asarray(a, dtype=np.float64))

    if system == "single-neuron":
        params = {"W1": put([[args.w0]]), "b1": put([args.b0])}
        return Problem(single_neuron(1), params, put([[args.x]]), put([[args.y]]))
    if system == "relu-neuron":
        rng = host_rng(0)
        X = rng.normal(size=(200, 3))
        y = X @ np.array([0.5, -0.3, 0.2]) + 3.0 + rng.normal(0.0, 0.1, 200)
        params = {"W1": put(np.zeros((3, 1))), "b1": put([1.0])}
        return Problem(relu_neuron(3), params, put(X), put(y[:, None]))
    if system == "logistic-regression":
        from sklearn.datasets import load_breast_cancer

        X, y = load_breast_cancer(return_X_y=True)
        X = Standardizer.fit(X).transform(X)
        model = logistic_regression(X.shape[1])
        return Problem(
            model, model.init_params(backend, host_rng(0), "zeros"), put(X), put(y[:, None])
        )
    X = [[0, 0, 1], [1, 1, 1], [1, 0, 1], [0, 1, 1]]
    model = two_layer()
    params = model.init_params(backend, legacy_rng(10), init="uniform")
    return Problem(model, params, put(X), put([[0], [1], [1], [0]]))


ACTIVATION_TEXT = {  # name: (f(z), f'(z) written with the output a = f(z))
    "sigmoid": ("1 / (1 + e^-z)", "sigma(z) (1 - sigma(z))"),
    "relu": ("max(0, z)", "1 if z > 0 else 0"),
    "tanh": ("tanh(z)", "1 - tanh(z)^2"),
    "identity": ("z", "1"),
}
LOSS_TEXT = {  # name: (C, its derivative: C'(y_hat), or dC/dz for the logit losses)
    "sse": ("1/2 sum (y_hat - y)^2", "y_hat - y"),
    "mse": ("1/N sum (y_hat - y)^2", "2 (y_hat - y) / N"),
    "bce": ("mean -[y log y_hat + (1 - y) log(1 - y_hat)]", "(y_hat - y) / N"),
}


def _fmt(a) -> str:
    a = np.asarray(a)
    if a.size == 1:
        return f"{a.item():.6g}"
    text = np.array2string(a, precision=6, threshold=12, edgeitems=3, max_line_width=88)
    return f"shape {a.shape}\n      " + text.replace("\n", "\n      ")


def explain(problem: Problem, lr: float, backend) -> str:
    """The pencil-and-paper trace of the first gradient-descent step, every number computed
    by handgrad's own forward and backward passes."""
    model, params, X, Y = problem
    xp = backend.xp
    y_hat, cache = model.forward(params, X)
    grads = model.backward(params, cache, Y)
    acts = [X] + [layer[2] for layer in cache[0]]  # A_0 .. A_L (each Dense layer's (X, Z, A))
    h = backend.to_numpy
    loss = model.loss_spec
    act = model.layer_activations[-1]
    lines = [f"First step of gradient descent, learning rate eta = {lr:g}:"]

    def show(symbol, formula, value):
        lines.append(f"  {symbol:<10} = {formula:<40} = {_fmt(value)}")

    if model.depth == 1:
        w, b = h(params["W1"]), h(params["b1"])
        show("x", "input", h(X))
        show("y", "target", h(Y))
        show("z", "w . x + b", h(acts[0] @ params["W1"] + params["b1"]))
        show("y_hat", f"{act}(z) = " + ACTIVATION_TEXT[act][0], h(y_hat))
        show("C", LOSS_TEXT[loss.name][0], float(model.loss_from_cache(cache, Y)))
        if loss.on_logits:
            show(
                "dC/dz",
                LOSS_TEXT[loss.name][1] + " (C' sigma' simplified)",
                h(y_hat - Y) / X.shape[0],
            )
        else:
            c_prime = loss.grad(y_hat, Y, xp=xp)
            slope = activations.backward(act, xp.ones_like(y_hat), y_hat, xp=xp)
            show("C'(y_hat)", LOSS_TEXT[loss.name][1], h(c_prime))
            show(f"{act}'(z)", ACTIVATION_TEXT[act][1], h(slope))
            show("dC/dz", f"C'(y_hat) {act}'(z)", h(c_prime * slope))
            if loss.name == "sse":
                lines.append(
                    "  note: the tutorial writes C'(y_hat) = y - y_hat = "
                    f"{_fmt(h(Y - y_hat))}; that is -dC/dy_hat, and stepping along it raises C."
                )
            if act == "sigmoid" and float(xp.max(slope)) < 1e-3:
                lines.append(
                    f"  note: sigma'(z) = {_fmt(h(slope))} is tiny: with |z| this large the "
                    "sigmoid is saturated (sigma' <= 1/4 and decays like e^-|z|), so every "
                    "gradient is scaled down by it and the neuron barely learns."
                )
        show("dC/dw", "x^T dC/dz", h(grads["W1"])[:, 0])
        show("dC/db", "sum of dC/dz", h(grads["b1"]))
        show("w'", "w - eta dC/dw", w[:, 0] - lr * h(grads["W1"])[:, 0])
        show("b'", "b - eta dC/db", b - lr * h(grads["b1"]))
        return "\n".join(lines)

    lines.append("  forward:")
    for l in range(1, model.depth + 1):
        show(
            f"Z{l}",
            f"A{l - 1} W{l}" + (f" + b{l}" if model.bias else ""),
            h(acts[l - 1] @ params[f"W{l}"] + (params[f"b{l}"] if model.bias else 0.0)),
        )
        show(f"A{l}", f"{model.layer_activations[l - 1]}(Z{l})", h(acts[l]))
    show("C", LOSS_TEXT[loss.name][0], float(model.loss_from_cache(cache, Y)))
    lines.append("  backward:")
    dA = loss.grad(y_hat, Y, xp=xp)
    show(f"dA{model.depth}", "C'(A) = " + LOSS_TEXT[loss.name][1], h(dA))
    for l in range(model.depth, 0, -1):
        f = model.layer_activations[l - 1]
        dZ = activations.backward(f, dA, acts[l], xp=xp)
        show(f"dZ{l}", f"dA{l} * {f}'(Z{l}), {f}' = " + ACTIVATION_TEXT[f][1], h(dZ))
        show(f"dW{l}", f"A{l - 1}^T dZ{l}", h(grads[f"W{l}"]))
        if l > 1:
            dA = dZ @ params[f"W{l}"].T
            show(f"dA{l - 1}", f"dZ{l} W{l}^T", h(dA))
    for l in range(1, model.depth + 1):
        show(f"W{l}'", f"W{l} - eta dW{l}", h(params[f"W{l}"]) - lr * h(grads[f"W{l}"]))
    lines.append(
        "  note: seed 004 computes g = X^T ((y - y_hat) sigma') = -dC/dW and does W += g: the "
        "same descent step with eta = 1; its 'gradients' are the negative gradients."
    )
    return "\n".join(lines)


def reproduce(system: str, problem: Problem, args, backend) -> dict:
    """Train the system's ``problem`` (its parameters in place); the --json object."""
    model, params, X, Y = problem
    lr, epochs = args.lr, args.epochs
    loss_first = float(model.loss_value(params, X, Y))
    opt = SGD(lr)
    bar = progress_bar(epochs)

    def tick(epoch, params, state, record):
        bar.update()

    with bar:
        result = fit(model, params, X, Y, optimizer=opt, epochs=epochs - 1, callback=tick)
        predictions = model.predict(params, X)  # the seed 004 prints this one
        fit(
            model,
            params,
            X,
            Y,
            optimizer=opt,
            epochs=epochs,
            start_epoch=epochs - 1,
            state=result.state,
            callback=tick,
        )
    if system != "two-layer":
        predictions = model.predict(params, X)
    host = {k: backend.to_numpy(v) for k, v in params.items()}
    return {
        "system": system,
        "device": backend.spec,
        "dtype": backend.dtype_name,
        "params": {k: v.tolist() for k, v in to_file_names(model, host).items()},
        "loss_first": loss_first,
        "loss_last": float(model.loss_value(params, X, Y)),
        "predictions": backend.to_numpy(predictions).tolist(),
    }


def whole_number(text: str) -> int:
    """An integer flag value, written as 5000 or 5e3."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def parse_args(argv):
    parser = _cli.parser(__doc__)
    parser.add_argument("system", choices=SYSTEMS)
    _cli.add_backend_args(parser, dtype="float64")
    parser.add_argument("--lr", type=float, help="learning rate (default: the system's)")
    parser.add_argument(
        "--epochs",
        type=whole_number,
        help=f"gradient-descent steps, 1 to {MAX_EPOCHS:,} (default: the system's)",
    )
    neuron = parser.add_argument_group("single-neuron values (the tutorial's by default)")
    neuron.add_argument("--x", type=float, help=f"input (default: {NEURON['x']:g})")
    neuron.add_argument("--y", type=float, help=f"target in [0, 1] (default: {NEURON['y']:g})")
    neuron.add_argument(
        "--w0",
        type=float,
        help=f"initial weight (default: {NEURON['w0']:g}; the text's w0 = 3 saturates the sigmoid)",
    )
    neuron.add_argument("--b0", type=float, help=f"initial bias (default: {NEURON['b0']:g})")
    parser.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
    parser.add_argument(
        "--explain", action="store_true", help="print the pencil-and-paper trace of the first step"
    )
    return check(parser.parse_args(argv))


def check(args):
    """Refuse what cannot work before anything runs, and fill in the defaults."""
    if args.explain and args.json:
        raise ConfigError(
            "--explain prints a text trace and --json one JSON object and nothing else; "
            "drop one of them"
        )
    given = [name for name in NEURON if getattr(args, name) is not None]
    if given and args.system != "single-neuron":
        raise ConfigError(
            f"--{given[0]} sets a single-neuron value; {args.system} builds its own data and "
            f"starting parameters: drop --{given[0]} or reproduce single-neuron"
        )
    default_lr, default_epochs = DEFAULTS[args.system]
    args.lr = default_lr if args.lr is None else args.lr
    args.epochs = default_epochs if args.epochs is None else args.epochs
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ConfigError(
            f"the learning rate must be a positive finite number, got {args.lr:g}",
            setting="lr",
            suggestion=f"{default_lr:g}",
        )
    if not 1 <= args.epochs <= MAX_EPOCHS:
        raise ConfigError(
            f"epochs must be between 1 and {MAX_EPOCHS:,}, got {args.epochs:,}: a step takes "
            "tens of microseconds or more, so 10^7 steps already take minutes to hours (these "
            "systems converge within 10^4)",
            setting="epochs",
            suggestion=default_epochs,
        )
    for name, default in NEURON.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.system == "single-neuron":
        check_neuron(args)
    return args


def check_neuron(args) -> None:
    """Finite x, w0, b0 and z = w0 x + b0, and a target y in [0, 1], which the sigmoid
    neuron's output sigma(z) in (0, 1) can approach."""
    for name in ("x", "w0", "b0"):
        value = getattr(args, name)
        if not math.isfinite(value):
            raise ConfigError(
                f"the neuron's {name} must be a finite number, got {value:g}",
                setting=name,
                suggestion=f"{NEURON[name]:g}",
            )
    if not math.isfinite(args.w0 * args.x + args.b0):
        raise ConfigError(
            f"z = w0 x + b0 = {args.w0:g} * {args.x:g} + {args.b0:g} overflows; the sigmoid "
            "is saturated far below that (|z| > 40 gives sigma'(z) < 1e-17): use a smaller w0",
            setting="w0",
            suggestion=f"{NEURON['w0']:g}",
        )
    if not 0 <= args.y <= 1:
        raise ConfigError(
            f"the target y = {args.y:g} is outside [0, 1]: the sigmoid neuron's output "
            "sigma(z) lies in (0, 1) and can never reach it; use a target in [0, 1]",
            setting="y",
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backend = _cli.backend_from_args(args, quiet=args.json)
    problem = build(args.system, args, backend)
    if args.explain:
        print(explain(problem, args.lr, backend), end="\n\n")  # reads, never updates
    out = reproduce(args.system, problem, args, backend)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['system']} on {backend!r}: {args.epochs} epochs, lr {args.lr:g}")
    change = 100 * (1 - out["loss_last"] / out["loss_first"]) if out["loss_first"] else 0.0
    print(f"cost {out['loss_first']:.6g} -> {out['loss_last']:.6g} ({change:.3g}% lower)")
    for name, value in out["params"].items():
        print(f"{name} = {np.array2string(np.asarray(value), precision=8, threshold=20)}")
    if args.system == "two-layer":
        print("The final prediction from neural network are: ")
    else:
        print("predictions:")
    print(np.array2string(np.array(out["predictions"]), threshold=20))
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main))
