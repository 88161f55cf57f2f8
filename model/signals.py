"""Signals during a run: SIGTERM handled like Ctrl-C, and both held back while a save
finishes, so that an interrupted run always leaves whole files."""

from __future__ import annotations

import contextlib
import signal

__all__ = ["Terminated", "deferred_interrupts", "sigterm_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that a run saves and stops."""


@contextlib.contextmanager
def _handling(handler, *signals):
    """Within the block, ``handler`` handles ``signals``; the previous handlers come back
    after it. Outside the main thread (where handlers cannot be set) nothing changes."""
    try:
        previous = {number: signal.signal(number, handler) for number in signals}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def sigterm_as_interrupt():
    """Within the block, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) instead
    of killing the process, so the same code saves a checkpoint for both."""

    def handler(signum, frame):
        raise Terminated(f"signal {signum}")

    return _handling(handler, signal.SIGTERM)


@contextlib.contextmanager
def deferred_interrupts():
    """Hold Ctrl-C and SIGTERM back while the block runs (a save finishes whole), then
    deliver them. In the main thread only; elsewhere the block runs as it is."""
    pending = []
    with _handling(lambda number, frame: pending.append(number), signal.SIGINT, signal.SIGTERM):
        yield
    for number in pending[:1]:
        signal.raise_signal(number)
