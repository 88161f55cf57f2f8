"""Train a model with hand-derived gradients on the CPU or a CUDA GPU.

    python scripts/train.py                      # MLP on digits, GPU if usable, else CPU
    python scripts/train.py --device cuda        # insist on the GPU
    python scripts/train.py --data mine.csv --loss mse --standardize
    python scripts/train.py --resume runs/20261123-101500 --epochs 400

Each run writes a folder (runs/<timestamp>/ or --out) with metrics.json, loss.png
and checkpoint.npz. A held-out split (--val-split) is scored every epoch and reported as
the test metric at the end. Ctrl-C saves the last completed epoch as a checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import _cli
import numpy as np

from backends import host_rng
from model import MLP, DivergenceError, fit, logistic_regression, make_optimizer
from model.checkpoint import (
    atomic_write,
    device_copy,
    host_copy,
    load_checkpoint,
    load_host_params,
    save_checkpoint,
    save_params,
)
from model.data import DATASETS, DataError, check_labels, load_dataset, load_file, split
from model.losses import LOSSES
from model.mlp import relu_neuron, single_neuron
from model.optimizers import OPTIMIZERS

MODELS = ("neuron", "relu-neuron", "logistic", "mlp")
FIXED_LOSS = {"neuron": "sse", "relu-neuron": "mse", "logistic": "bce"}
DEFAULT_LR = {"gd": 0.5, "sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 0.01}


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _cli.add_backend_args(p, dtype="float32")
    p.add_argument(
        "--model",
        choices=MODELS,
        default="mlp",
        help="neuron (sigmoid, sse), relu-neuron (mse), logistic (bce) or mlp (default: mlp)",
    )
    p.add_argument(
        "--hidden",
        default="64",
        help="mlp hidden layer widths, comma-separated; '' for none (default: 64)",
    )
    p.add_argument(
        "--activation",
        default="relu",
        help="mlp hidden activation: identity, sigmoid, tanh, relu, softmax (default: relu)",
    )
    p.add_argument(
        "--loss",
        choices=LOSSES,
        default=None,
        help="mlp loss (default: cross_entropy for class labels, mse otherwise)",
    )
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="adam",
        help="gd, sgd, momentum, nesterov or adam (default: adam)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
        + ")",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs to train in total, resumed ones included (default: 100)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="minibatch size, rows reshuffled every epoch (default: full batch)",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="L2 penalty lambda/2 ||W||^2 on weights, not biases (default: 0)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the host RNG for init, shuffling and the split (default: 0)",
    )
    data = p.add_mutually_exclusive_group()
    data.add_argument(
        "--dataset", choices=DATASETS, default="digits", help="bundled dataset (default: digits)"
    )
    data.add_argument(
        "--data",
        default=None,
        help="your data: .npz with arrays X, y or .csv with a header row and the "
        "target in the last column",
    )
    p.add_argument(
        "--standardize",
        action="store_true",
        help="scale features to mean 0, sd 1 (statistics of the training split)",
    )
    p.add_argument(
        "--val-split",
        type=float,
        default=0.2,
        help="fraction held out for validation and the final test score (default: 0.2; 0 for none)",
    )
    p.add_argument("--out", default=None, help="run folder (default: runs/<timestamp>)")
    p.add_argument("--save", default=None, help="also save the final parameters to this .npz")
    p.add_argument("--init", default=None, help="start from the parameters in this .npz")
    p.add_argument(
        "--resume",
        default=None,
        help="continue the run in this folder (or checkpoint .npz) from its last "
        "saved epoch up to --epochs; the config comes from the checkpoint",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object with the results on stdout, nothing else",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    args = p.parse_args(argv)
    if args.resume and args.init:
        p.error("--resume and --init exclude each other")
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be >= 1")
    if args.batch_size is not None and args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    return args


def config_from_args(args) -> dict:
    """Everything that defines the run, JSON-able, stored in checkpoints for --resume."""
    hidden = [int(h) for h in args.hidden.replace(" ", "").split(",") if h]
    if any(h < 1 for h in hidden):
        raise ValueError(f"--hidden {args.hidden!r}: widths must be positive integers")
    return {
        "model": args.model,
        "hidden": hidden,
        "activation": args.activation,
        "loss": args.loss,
        "optimizer": args.optimizer,
        "lr": DEFAULT_LR[args.optimizer] if args.lr is None else args.lr,
        "epochs": 100 if args.epochs is None else args.epochs,
        "batch_size": args.batch_size,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "dataset": None if args.data else args.dataset,
        "data": str(Path(args.data).resolve()) if args.data else None,
        "standardize": args.standardize,
        "val_split": args.val_split,
        "dtype": args.dtype,
    }


def prepare_data(config: dict) -> dict:
    """Load, check, split and scale the data; decide the loss and the output width."""
    X, y = load_file(config["data"]) if config["data"] else load_dataset(config["dataset"])
    loss = FIXED_LOSS.get(config["model"]) or config["loss"]
    if config["model"] in FIXED_LOSS and config["loss"] not in (None, loss):
        raise ValueError(
            f"--model {config['model']} trains with {loss}; drop --loss "
            f"{config['loss']} or use --model mlp"
        )
    if loss is None:
        integral = y.ndim == 1 and np.all(y == np.round(y))
        loss = "cross_entropy" if integral else "mse"
    classes = loss in ("cross_entropy", "bce")
    if classes:
        y = check_labels(y, loss)
    elif y.ndim == 1:
        y = y[:, None]
    if config["model"] == "neuron" and (y.min() < 0 or y.max() > 1):
        raise DataError("--model neuron outputs sigma(z) in (0, 1): targets must lie in [0, 1]")
    X_tr, y_tr, X_va, y_va = split(X, y, config["val_split"], config["seed"], stratify=classes)
    if config["standardize"]:
        mean, sd = X_tr.mean(axis=0), X_tr.std(axis=0)
        sd[sd == 0] = 1.0
        X_tr = (X_tr - mean) / sd
        X_va = None if X_va is None else (X_va - mean) / sd
    outputs = int(y.max()) + 1 if loss == "cross_entropy" else y_tr.shape[1] if y.ndim == 2 else 1
    if loss == "cross_entropy" and outputs < 2:
        raise DataError("cross_entropy needs at least 2 classes in y; use --loss bce or mse")
    return {"X": X_tr, "y": y_tr, "X_val": X_va, "y_val": y_va, "loss": loss, "outputs": outputs}


def build_model(config: dict, n_features: int, data: dict) -> MLP:
    kind = config["model"]
    if kind == "neuron":
        return single_neuron(n_features)
    if kind == "relu-neuron":
        return relu_neuron(n_features)
    if kind == "logistic":
        return logistic_regression(n_features)
    sizes = (n_features, *config["hidden"], data["outputs"])
    return MLP(sizes, activation=config["activation"], loss=data["loss"])


def _new_run_dir() -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir, n = Path("runs") / stamp, 1
    while run_dir.exists():
        n += 1
        run_dir = Path("runs") / f"{stamp}-{n}"
    return run_dir


def plot_history(path: Path, history: dict, loss_name: str) -> None:
    """Train (and validation) loss per epoch, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], label="train")
    if history.get("val_loss"):
        ax.plot(epochs, history["val_loss"], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{loss_name} loss")
    ax.set_yscale("log" if min(history["loss"]) > 0 else "linear")
    ax.set_title("handgrad training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


class Snapshot:
    """The last completed epoch on the host: what Ctrl-C and divergence save."""

    def __init__(self, backend, rng, params, state, history, epoch):
        self.backend, self.rng = backend, rng
        self.history = {k: list(v) for k, v in history.items()}
        self.take(epoch, params, state, {})

    def take(self, epoch, params, state, record):
        self.epoch = epoch
        self.params = host_copy(params, self.backend)
        self.state = host_copy(state, self.backend)
        self.rng_state = self.rng.bit_generator.state
        for k, v in record.items():
            self.history.setdefault(k, []).append(v)

    def save(self, path, model, config):
        meta = {
            "config": config,
            "model": dataclasses.asdict(model),
            "epoch": self.epoch,
            "rng": self.rng_state,
            "history": self.history,
        }
        return save_checkpoint(path, model=model, params=self.params, state=self.state, meta=meta)


def _resume_source(path: str) -> Path:
    path = Path(path)
    return path / "checkpoint.npz" if path.is_dir() else path


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet = args.quiet or args.json
    if args.resume:  # everything is read and checked on the host before a device is used
        source = _resume_source(args.resume)
        model, params, state, meta = load_checkpoint(source, lambda m: MLP(**m["model"]))
        config = dict(meta["config"], epochs=args.epochs or meta["config"]["epochs"])
        start_epoch, history = meta["epoch"], meta["history"]
        rng = host_rng(None)
        rng.bit_generator.state = meta["rng"]
        run_dir = Path(args.out) if args.out else source.parent
        data = prepare_data(config)
    else:
        config = config_from_args(args)
        data = prepare_data(config)
        model = build_model(config, data["X"].shape[1], data)
        params = load_host_params(args.init, model) if args.init else None
        rng, state, start_epoch, history = host_rng(config["seed"]), None, 0, {}
        run_dir = Path(args.out) if args.out else _new_run_dir()
    if model.loss_spec.name == "cross_entropy":  # a model from --init or --resume fixes K
        for labels in (data["y"], data["y_val"]):
            if labels is not None:
                check_labels(labels, "cross_entropy", model.sizes[-1])
    args.dtype = config["dtype"]
    backend = _cli.backend_from_args(args, quiet)
    if params is None:
        params = model.init_params(backend, rng)
    else:
        params, state = device_copy(params, backend), device_copy(state, backend)
    label_dtype = backend.xp.int64 if model.is_classifier else None
    X, Y = backend.asarray(data["X"]), backend.asarray(data["y"], dtype=label_dtype)
    validation = None
    if data["X_val"] is not None:
        validation = (
            backend.asarray(data["X_val"]),
            backend.asarray(data["y_val"], dtype=label_dtype),
        )
    optimizer = make_optimizer(
        config["optimizer"], config["lr"], weight_decay=config["weight_decay"]
    )
    state = optimizer.init(params) if state is None else state
    snapshot = Snapshot(backend, rng, params, state, history, start_epoch)

    from tqdm import tqdm

    bar = tqdm(
        total=config["epochs"],
        initial=start_epoch,
        unit="epoch",
        file=sys.stderr,
        disable=quiet or not sys.stderr.isatty(),
        desc=backend.spec,
    )

    def on_epoch(epoch, params, state, record):
        snapshot.take(epoch + 1, params, state, record)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()})

    checkpoint = run_dir / "checkpoint.npz"
    start = time.perf_counter()
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
            fit(
                model,
                params,
                X,
                Y,
                optimizer=optimizer,
                epochs=config["epochs"],
                batch_size=config["batch_size"],
                rng=rng,
                state=state,
                validation=validation,
                start_epoch=start_epoch,
                callback=on_epoch,
            )
    except KeyboardInterrupt:
        bar.close()
        snapshot.save(checkpoint, model, config)
        print(
            f"interrupted after epoch {snapshot.epoch}; checkpoint saved to {checkpoint}; "
            f"continue with --resume {run_dir}",
            file=sys.stderr,
        )
        return 130
    except DivergenceError:
        bar.close()
        snapshot.save(checkpoint, model, config)
        print(
            f"last finite checkpoint (epoch {snapshot.epoch}) saved to {checkpoint}",
            file=sys.stderr,
        )
        raise
    backend.synchronize()
    wall = time.perf_counter() - start
    bar.close()

    written = {"checkpoint": str(snapshot.save(checkpoint, model, config))}
    history = snapshot.history
    test = {k[4:]: v[-1] for k, v in history.items() if k.startswith("val_") and v}
    result = {
        "config": config,
        "device": backend.spec,
        "dtype": backend.dtype_name,
        "epochs": snapshot.epoch,
        "final_train_loss": history["loss"][-1] if history.get("loss") else None,
        "metrics": {"test": test, "history": history},
        "wall_seconds": wall,
    }
    plot_history(run_dir / "loss.png", history, model.loss_spec.name)
    written["plot"] = str(run_dir / "loss.png")
    if args.save:
        written["params"] = str(save_params(args.save, model, params, backend))
    written["metrics"] = str(run_dir / "metrics.json")
    result["paths"] = written
    atomic_write(run_dir / "metrics.json", lambda f: f.write(json.dumps(result, indent=2).encode()))
    if args.json:
        print(json.dumps(result))
    else:
        score = (
            f"test accuracy {test['accuracy']:.4f}"
            if "accuracy" in test
            else f"test loss {test['loss']:.4g}"
            if test
            else "no test split"
        )
        print(
            f"{backend.spec} | {snapshot.epoch} epochs | {wall:.2f} s | train loss "
            f"{result['final_train_loss']:.4g} | {score} | {run_dir}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main))
