"""Train a model with hand-derived gradients on the CPU or a CUDA GPU.

    python scripts/train.py                      # MLP on digits, GPU if usable, else CPU
    python scripts/train.py --device cuda        # insist on the GPU
    python scripts/train.py --data mine.csv --loss mse --standardize --save model.npz
    python scripts/train.py --resume runs/20261123-101500 --epochs 400
    mpiexec -n 4 python scripts/train.py --batch-size 256   # data-parallel over 4 ranks
    python scripts/train.py --sweep lr=0.01,0.1,1 --sweep seed=0,1,2 --save best.npz
    python scripts/train.py --data small.npz --optimizer lbfgs --epochs 150   # iterations
    python scripts/train.py --schedule cosine --early-stopping 10 --clip-grad 5

Each run writes a new folder (runs/<timestamp>/ or --out) with checkpoint.npz, metrics.json
and loss.png. A held-out validation split (--val-split) is scored every epoch. The
checkpoint is written every --checkpoint-every epochs and when the run ends; Ctrl-C or
SIGTERM saves the last completed epoch, and --resume continues exactly from it (--epochs
and --lr may change on resume; the settings that define the run may not). --sweep trains
the cartesian product of lr, seed, weight-decay (and the schedule, early-stopping and
clipping settings') values as replicas in one batched pass.

--optimizer lbfgs is full-batch L-BFGS (as scikit-learn's solver "lbfgs"): one iteration
per epoch, with a line search; its --lr scales the first trial step (default 1). A 0/1
target matrix whose rows are not all one-hot trains one sigmoid output per column
(multi-label, or --loss bce); a target matrix of numbers, one output per column (mse).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from shlex import quote

import _cli  # first: it catches Ctrl-C during the imports below

if "--json" in sys.argv[1:]:  # its one object, main's early one, when Ctrl-C ends the imports
    _cli.on_early_interrupt(json.dumps({
        "status": "interrupted", "epochs": None if "--resume" in sys.argv[1:] else 0, "paths": {},
    }))  # fmt: skip

from backends import get_backend, probe_cuda
from backends.comm import connect, rank_device
from backends.errors import HandgradError
from model.activations import ACTIVATIONS
from model.config import DEFAULT_LR, MODELS, RunConfig
from model.data import DATASETS
from model.fit import DivergenceError
from model.losses import LOSSES
from model.mlp import NORMS
from model.optimizers import OPTIMIZERS
from model.report import strict_json
from model.run import CHECKPOINT_EVERY, Run
from model.signals import Terminated
from model.sweep import SWEEPABLE, parse_sweep

FLAGS = {"run_dir": "--out"}  # setting -> flag, where the flag is not --<setting>
CONFIG_FLAGS = [f.name for f in RunConfig.__dataclass_fields__.values()]


def parse_args(argv):
    p = _cli.parser(__doc__)
    _cli.add_backend_args(p, dtype=None, dtype_default="float32; a resumed run keeps its own")
    p.set_defaults(dtype=None)
    p.add_argument(
        "--model",
        choices=MODELS,
        help="mlp (default), or a single unit: neuron "
        "(sigmoid, sse), relu-neuron (mse), logistic (bce)",
    )
    p.add_argument(
        "--hidden",
        type=_widths,
        help="mlp hidden layer widths, comma-separated; '' for none (default: 64)",
    )
    p.add_argument(
        "--activation",
        help=f"mlp hidden activation: {', '.join(ACTIVATIONS)} (default: relu)",
    )
    p.add_argument(
        "--norm",
        choices=tuple(NORMS),
        help="mlp: normalize each hidden layer before its activation: none (default), layer "
        "(per row) or batch (per feature over the batch)",
    )
    p.add_argument(
        "--dropout",
        type=float,
        metavar="P",
        help="mlp: drop each hidden activation with probability P in training, 0 <= P < 1 "
        "(default: 0)",
    )
    p.add_argument(
        "--loss",
        choices=LOSSES,
        help="loss (default: inferred from the targets: cross_entropy for integer class "
        "labels, mse for other numbers; more than 100 distinct integers is ambiguous and "
        "needs this flag)",
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="default: adam")
    p.add_argument(
        "--lr",
        type=float,
        help="learning rate > 0 (default: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
        + ")",
    )
    p.add_argument(
        "--epochs", type=int, help="epochs in total, resumed ones included (default: 100)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="minibatch rows, reshuffled every epoch (default: full batch)",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        help="L2 penalty lambda/2 ||W||^2 on the weights, not the biases (default: 0)",
    )
    _add_training_aids(p)
    p.add_argument(
        "--seed",
        type=int,
        help="seed of the host RNG for init, shuffling and the split, 0 to 2^32-1 (default: 0)",
    )
    data = p.add_mutually_exclusive_group()
    data.add_argument("--dataset", choices=DATASETS, help="bundled dataset (default: digits)")
    data.add_argument(
        "--data",
        help="your data: .npz with arrays X, y, or .npy or .csv with the target in the last "
        "column (a CSV's first row is a header when all its fields are names); an "
        "uncompressed .npz or .npy of 1 GiB or more is streamed from disk",
    )
    p.add_argument(
        "--standardize",
        action="store_true",
        default=None,
        help="scale features to mean 0, sd 1 (training split statistics, saved with the model)",
    )
    p.add_argument(
        "--val-split", type=float, help="fraction held out for validation, in [0, 1) (default: 0.2)"
    )
    p.add_argument("--out", help="run folder, new or empty (default: runs/<timestamp>)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="allow --out to name a folder with files and --save an existing file, and "
        "replace them",
    )
    p.add_argument(
        "--save", help="also write the trained model file (.npz) here, for scripts/predict.py"
    )
    p.add_argument(
        "--init", help="start from these parameters: an .npz of them, a model file, or a run"
    )
    p.add_argument(
        "--resume",
        help="continue the run in this folder (or checkpoint .npz) up to "
        "--epochs; --lr may change, settings that define the run may not",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=CHECKPOINT_EVERY,
        help=f"write the checkpoint every N epochs (default: {CHECKPOINT_EVERY})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object with the results on stdout, nothing else (also when "
        "the run is interrupted or diverges: its status says so)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="train data-parallel over the ranks of an MPI launch (mpiexec -n P python "
        "scripts/train.py ...; --batch-size is the global batch, rank r uses cuda:<local "
        "rank>); automatic when launched with more than one rank, this flag insists",
    )
    # Sweeps: replicas of one network trained together (model/sweep.py).
    p.add_argument(
        "--sweep",
        action="append",
        metavar="KEY=V1,V2,...",
        help=f"sweep {', '.join(k.replace('_', '-') for k in SWEEPABLE)} (repeatable): "
        "the cartesian product trains as replicas in one batched pass, e.g. --sweep "
        "lr=0.01,0.1 --sweep seed=0,1; --save writes the best replica",
    )
    p.add_argument("--save-all", metavar="DIR", help="with --sweep: every replica's model file")
    args = p.parse_args(argv)
    if args.resume is not None and args.init is not None:
        p.error("--resume and --init exclude each other")
    if args.resume is not None and args.sweep is not None:
        p.error("--sweep and --resume exclude each other: a resumed sweep keeps its values")
    if args.save_all is not None and args.sweep is None and args.resume is None:
        p.error("--save-all saves the replicas of a sweep; add --sweep KEY=V1,V2,...")
    return args


# The learning-rate schedule, early stopping and clipping: flag, type, metavar, help.
AIDS = [
    ("--schedule", str, "NAME", "learning rate per epoch (model/schedules.py has the "
     "formulas): constant (default), step (lr factor^floor(e/step-size)), cosine (from lr "
     "down to lr-min over lr-period epochs), invscaling (lr / (e+1)^power), plateau (lr "
     "times factor when the monitored loss has not improved by lr-threshold for "
     "lr-patience epochs)"),
    ("--lr-step-size", int, "N", "step: epochs between reductions, >= 1 (default: 10)"),
    ("--lr-factor", float, "F", "step, plateau: the factor of each reduction, in (0, 1) "
     "(default: 0.1)"),
    ("--lr-patience", int, "N", "plateau: epochs without improvement before a reduction, "
     ">= 0 (default: 10)"),
    ("--lr-threshold", float, "D", "plateau: how much the monitored loss must fall to "
     "count as an improvement, >= 0 (default: 0)"),
    ("--lr-power", float, "P", "invscaling: the power, > 0 (default: 0.5)"),
    ("--lr-min", float, "M", "cosine, plateau: the lowest rate, >= 0 and below --lr "
     "(default: 0)"),
    ("--lr-period", int, "T", "cosine: epochs from lr to lr-min, >= 1 (default: --epochs)"),
    ("--early-stopping", int, "PATIENCE", "stop when the validation loss (the training "
     "loss without a validation split) has not improved for PATIENCE epochs, >= 1; the "
     "model is the best epoch's (default: off)"),
    ("--min-delta", float, "D", "with --early-stopping: the least fall in the loss that "
     "counts as an improvement, >= 0 (default: 0)"),
    ("--clip-grad", float, "NORM", "scale each step's gradients to a global norm of at most "
     "NORM, > 0 (default: off)"),
]  # fmt: skip


def _add_training_aids(p) -> None:
    for flag, kind, metavar, text in AIDS:
        p.add_argument(flag, type=kind, metavar=metavar, help=text)


def _widths(text: str) -> tuple[int, ...]:
    parts = text.replace(" ", "").split(",") if text.strip() else []
    if not all(t.isdigit() for t in parts):
        raise ValueError(text)  # argparse: "invalid _widths value"
    return tuple(int(t) for t in parts)


_widths.__name__ = "width list"


def start_run(args, comm=None):
    """``(run, backend)`` as the flags ask: every setting is checked first, then the
    device, and only then is the data loaded (a new run, or --resume with the flags
    that were given). Under a communicator, the rank's device (see
    :func:`backends.comm.rank_device`) and a Run shared by the ranks."""
    given = {name: getattr(args, name) for name in CONFIG_FLAGS if getattr(args, name) is not None}
    common = {
        "run_dir": args.out,
        "save": args.save,
        "overwrite": args.overwrite,
        "checkpoint_every": args.checkpoint_every,
        "comm": comm,
    }
    config = None if args.resume is not None else RunConfig(**given)
    sweep = None if args.sweep is None else parse_sweep(args.sweep)
    both = sorted(set(sweep or ()) & set(given))
    if both:
        raise HandgradError(
            f"--{both[0].replace('_', '-')} and --sweep {both[0]}=... both set it; keep one"
        )
    device = args.device
    if comm is not None:
        device = rank_device(device, comm.local_rank, probe_cuda()[1])
    backend = get_backend(device, "float32")
    if config is None:
        run = Run.resume(args.resume, save_all=args.save_all, **common, **given)
    else:
        run = Run.start(config, sweep=sweep, init=args.init, save_all=args.save_all, **common)
    return run, backend.with_dtype(run.config.dtype)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet = args.quiet or args.json
    _cli.configure_logging(quiet)
    comm = connect(required=args.distributed)
    root = comm is None or comm.rank == 0
    if not root:  # one voice: rank 0's
        quiet = True
        _cli.configure_logging(quiet)
    run = None
    try:
        run, backend = start_run(args, comm)
        result = run.train(backend, progress=not quiet)
    except (KeyboardInterrupt, DivergenceError) as exc:
        if root and args.json:  # as metrics.json; before the run saved anything, no paths
            done = None if run is None and args.resume is not None else getattr(run, "epoch", 0)
            early = {"status": "interrupted", "epochs": done, "paths": {}}  # None: not read
            summary = getattr(run, "summary", None)
            print(strict_json(early if summary is None else summary), flush=True)
        if run is None:
            raise  # interrupted while checking and loading: _cli says so
        unwritten = run.unwritten()  # --save and --save-all wait for a completed run
        if isinstance(exc, DivergenceError):  # say what was kept
            paths = " and ".join(str(p) for p in unwritten.values())
            skipped = f" ({paths} not written: the run did not complete)" if unwritten else ""
            raise HandgradError(
                f"{exc}; {run.kept()} is saved in {run.checkpoint}{skipped}",
                setting=exc.setting,
                suggestion=exc.suggestion,
            ) from None
        who = "" if root else f"rank {comm.rank} of {comm.size}: "
        if run.status == "completed":
            saved = f"the run had finished: all {run.saved_epoch} epochs are saved in {run.dir}"
        elif run.saved_epoch is None:
            saved = "it stopped before its first checkpoint, so nothing is saved"
        else:
            flags = {"resume": run.dir, **unwritten}  # paths quoted for a shell
            again = " ".join(f"--{k.replace('_', '-')} {quote(str(p))}" for k, p in flags.items())
            saved = (f"checkpoint (epoch {run.saved_epoch}) saved to {run.checkpoint}; continue "
                     f"with {again}")  # fmt: skip
            if unwritten:
                saved += " (the model files are written when the run completes)"
        print(f"{who}interrupted; {saved}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    if root:
        print(strict_json(result) if args.json else run.describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main, flags=FLAGS))
