"""Predict with a trained model: a model file from train.py --save, or a run's checkpoint.

    python scripts/predict.py model.npz --data new.csv                 # CSV on stdout
    python scripts/predict.py model.npz --data new.csv --out predictions.csv --proba
    python scripts/predict.py runs/a/checkpoint.npz --data labelled.npz   # and metrics
    python scripts/predict.py runs/sweep --data new.csv --replica 3      # a sweep's replica

--data is a .csv (with or without a header row) or .npy with the model's features, or one
column more holding the labels last, or an .npz with an array X and optionally y. The model's
saved preprocessing (standardization) is applied to the raw rows. Predictions are class
labels as trained (a model trained on labels 3, 7, 9 predicts 3, 7, 9) or values; a
multi-label model writes prediction_<j> 0/1 columns (and p_<j> with --proba), a
multi-output regression prediction_<j> values, j = 1..k. With labels present the metrics
(loss; accuracy and the confusion matrix for classifiers, subset and per-label accuracy
for multi-label, R^2 for regression) are printed: on stderr when the predictions go to
stdout. A sweep's run predicts with its best
replica (by validation score, as its metrics.json names it) unless --replica names one.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import _cli

from backends import get_backend
from backends.errors import ConfigError, about
from model.checkpoint import atomic_write
from model.data import load_features
from model.folders import check_output_file, checkpoint_path, refuse_replacing
from model.sweep import load_model
from model.trained import predictions_csv

FLAGS = {"model": "MODEL"}


def parse_args(argv):
    p = _cli.parser(__doc__)
    p.add_argument("model", help="model file (.npz), or a run's folder or checkpoint.npz")
    p.add_argument("--data", required=True, help="rows to predict on: .csv, .npy or .npz")
    p.add_argument("--out", help="write the predictions to this CSV file (default: stdout)")
    p.add_argument("--overwrite", action="store_true", help="allow --out to replace a file")
    p.add_argument("--proba", action="store_true", help="add a p_<class> column per class")
    p.add_argument("--replica", help="for a sweep: 'best' (default) or a replica's index")
    _cli.add_backend_args(p, dtype=None, dtype_default="the model's")
    p.add_argument("--quiet", action="store_true", help="no metrics or log lines")
    return p.parse_args(argv)


def format_metrics(metrics: dict, rows: int) -> str:
    """The metrics as text: one summary line (with R^2 for regression), then the
    confusion matrix for classifiers, or the accuracy per label for multi-label ones."""
    head = f"{rows} rows | loss {metrics['loss']:.6g}"
    if "r2" in metrics:
        return f"{head} | R^2 {metrics['r2']:.4f}"
    if "label_accuracy" in metrics:
        labels = metrics["label_accuracy"]
        per_label = " ".join(f"{a:.4f}" for a in labels)
        return (
            f"{head} | subset accuracy {metrics['accuracy']:.4f} (every label right)\n"
            f"accuracy per label (1..{len(labels)}): {per_label}"
        )
    classes = [str(c) for c in metrics["classes"]]
    counts = [str(n) for row in metrics["confusion"] for n in row]
    width = max(6, *(len(c) + 1 for c in classes + counts))
    lines = [
        f"{head} | accuracy {metrics['accuracy']:.4f}",
        "confusion matrix (rows: true class, columns: predicted class):",
        " " * width + "".join(c.rjust(width) for c in classes),
    ]
    for c, counts in zip(classes, metrics["confusion"], strict=True):
        lines.append(c.rjust(width) + "".join(str(n).rjust(width) for n in counts))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _cli.configure_logging(args.quiet)
    model_path = checkpoint_path(args.model, "model")
    if args.out is not None:
        check_output_file(args.out, "out")
        refuse_replacing(args.out, (model_path, args.data), args.overwrite, "out")
        if Path(args.out).suffix.lower() in (".npz", ".npy"):
            raise ConfigError(
                f"{args.out}: predictions are written as CSV text; end the name with .csv",
                setting="out",
            )
    with about("model"):
        trained, replica = load_model(model_path, args.replica)
    if replica is not None:
        logging.getLogger("handgrad").info("sweep: predicting with %s", replica)
    if args.proba:
        trained.require_classes()  # before any data is read
    backend = get_backend(args.device, args.dtype or trained.dtype)
    with about("data"):
        X, y = load_features(args.data, trained.n_features)
        text = predictions_csv(trained, X, proba=args.proba, backend=backend)
        report = None
        if y is not None:  # bad labels are found before anything is written, --quiet or not
            report = format_metrics(trained.evaluate(X, y, backend=backend), X.shape[0])
    if args.out is None:
        sys.stdout.write(text)
    else:
        atomic_write(args.out, lambda f: f.write(text.encode()))
    if report is not None and not args.quiet:
        print(report, file=sys.stderr if args.out is None else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main, flags=FLAGS))
