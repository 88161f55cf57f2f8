"""Write model files out of a finished run: a run's model, or replicas of a sweep.

    python scripts/export.py runs/a --out model.npz                  # a single run's model
    python scripts/export.py runs/sweep --out best.npz               # the sweep's best replica
    python scripts/export.py runs/sweep --replica 3 --out r3.npz     # replica 3 (metrics.json)
    python scripts/export.py runs/sweep --replica all --out models/  # models/replica-<r>.npz

The source is a run folder or its checkpoint.npz, as the run left it (the last completed
epoch; a replica that diverged: its last finite epoch). A model file holds the network,
its classes and its standardization, for predict.py or model.TrainedModel.load.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import _cli

from backends.errors import about
from model.folders import check_save, checkpoint_path
from model.sweep import check_save_all, is_sweep, load_model, load_sweep, save_replicas
from model.trained import training_progress

FLAGS = {"source": "RUN", "save": "--out", "save_all": "--out"}
logger = logging.getLogger("handgrad")


def parse_args(argv):
    p = _cli.parser(__doc__)
    p.add_argument("source", metavar="RUN", help="a run folder, or its checkpoint.npz")
    p.add_argument("--out", required=True, help="the model file (.npz); a folder for 'all'")
    p.add_argument("--replica", help="for a sweep: 'best' (default), an index, or 'all'")
    p.add_argument("--overwrite", action="store_true", help="allow replacing existing files")
    p.add_argument("--quiet", action="store_true", help="no log lines")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _cli.configure_logging(args.quiet)
    checkpoint = checkpoint_path(args.source, "source")
    source = Path(args.source)
    if args.replica == "all":
        folder = check_save_all(args.out, None, args.overwrite)
        with about("source"):
            if not is_sweep(checkpoint):  # says why: no such file, or one model, not a sweep
                load_model(checkpoint, args.replica)
            sweep = load_sweep(checkpoint)
        paths = save_replicas(sweep.models, folder)
        diverged = [str(r) for r, at in enumerate(sweep.diverged) if at is not None]
        note = f"; diverged, at their last finite epoch: {', '.join(diverged)}" if diverged else ""
        logger.info("wrote %d replicas' model files to %s%s", len(paths), folder, note)
        return 0
    out = check_save(args.out, (checkpoint,), None, args.overwrite)
    with about("source"):
        trained, replica = load_model(checkpoint, args.replica)
    if replica is None:
        progress = training_progress(checkpoint)
        replica = "the model" + (f" ({progress})" if progress else "")
    logger.info("wrote %s of %s to %s", replica, source, trained.save(out))
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main, flags=FLAGS))
