"""A whole training run as library code: config, data, model, checkpoints, resume, metrics.

(Under construction: the run itself moves here from scripts/train.py.)
"""

from __future__ import annotations

import contextlib
import signal

__all__ = ["Terminated", "sigterm_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that a run saves and stops."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) instead
    of killing the process, so the same code saves a checkpoint for both. Outside the main
    thread (where signal handlers cannot be set) this does nothing."""

    def handler(signum, frame):
        raise Terminated(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
