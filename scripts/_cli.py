"""What the scripts share: the --device/--dtype flags and turning user errors into one
line on stderr with exit status 2 (no traceback)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from backends import DTYPES, DeviceUnavailableError, get_backend
from model import DivergenceError
from model.checkpoint import CheckpointError

USER_ERRORS = (ValueError, DeviceUnavailableError, CheckpointError, DivergenceError, OSError)


def add_backend_args(parser: argparse.ArgumentParser, dtype: str = "float32") -> None:
    """--device and --dtype, as every script spells them."""
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:N, auto, or strict[:device1] (array-api-strict, for testing); "
        "default: $HANDGRAD_DEVICE or auto (the GPU when CuPy and one work, else cpu)",
    )
    parser.add_argument(
        "--dtype", default=dtype, choices=DTYPES, help=f"floating dtype (default: {dtype})"
    )


def backend_from_args(args, quiet: bool = False):
    """The Backend the flags ask for; the auto choice is logged to stderr."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    return get_backend(args.device, args.dtype)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main``; a user error (bad flag value, missing GPU, bad data or checkpoint)
    becomes ``error: <message>`` on stderr and exit status 2."""
    try:
        return main(argv)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
