"""What the scripts share: the common flags, one-line errors, and exit statuses.

Importing this module installs a ``sys.excepthook`` and a SIGINT handler (it imports only
the standard library, so both are in place before NumPy and the rest load): Ctrl-C at any
moment ends with one line and status 130, also where a library importing compiled code
turns it into an ImportError, and an unexpected exception, which is a bug, keeps its
traceback and asks to be reported. :func:`run` turns the project's own errors
(:class:`HandgradError`) into ``error: <message> (<flag>)`` and status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

REPORT = (
    "This is a bug in handgrad, not a problem with your input: please report it with the "
    "command you ran and the traceback above."
)


_sigints: list[float] = []  # when each SIGINT arrived
_early_stdout: list[str] = []  # what stdout gets when Ctrl-C ends the imports (train --json)


def on_early_interrupt(text: str) -> None:
    """Print ``text`` on stdout (a script's promised output, such as train.py --json's one
    object) when Ctrl-C ends the process before its ``main`` runs."""
    _early_stdout.append(text)


def _on_sigint(signum, frame):
    """Python's own SIGINT handler (raise KeyboardInterrupt), noting that one came."""
    _sigints.append(time.monotonic())
    raise KeyboardInterrupt


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is a Ctrl-C: a KeyboardInterrupt, or an ImportError after one. A
    Ctrl-C that lands while NumPy or SciPy import a compiled module surfaces as the
    ImportError the library raises in its place ("initialization failed"), its cause
    chained or lost."""
    chain = exc
    for _ in range(16):  # __cause__ / __context__, as far as they go
        if chain is None:
            break
        if isinstance(chain, KeyboardInterrupt):
            return True
        chain = chain.__cause__ or chain.__context__
    return isinstance(exc, ImportError) and bool(_sigints)


def _excepthook(kind, exc, tb) -> None:
    interrupted = _interrupted(exc)
    if interrupted:
        print(*_early_stdout, sep="\n", end="\n" if _early_stdout else "", flush=True)
        print("interrupted", file=sys.stderr, flush=True)
    if issubclass(kind, KeyboardInterrupt):
        return  # Python then exits with status 130
    if interrupted:
        os._exit(130)  # as Python ends a KeyboardInterrupt; nothing has started yet
    traceback.print_exception(kind, exc, tb)
    print(REPORT, file=sys.stderr)


sys.excepthook = _excepthook
if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where SIGINT is ignored
    signal.signal(signal.SIGINT, _on_sigint)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (and a pointer to --help) instead of the usage block."""

    def error(self, message: str):
        if any(os.environ.get(v, "0") != "0" for v in RANK_VARIABLES):
            self.exit(2)  # under mpiexec every rank parses the same argv: rank 0 says it
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def parser(doc: str) -> ArgumentParser:
    """A parser whose --help shows the script's docstring as written."""
    return ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )


def add_backend_args(
    parser: argparse.ArgumentParser, dtype: str | None = "float32", dtype_default: str = ""
) -> None:
    """--device, --dtype (default ``dtype``, or as ``dtype_default`` describes) and --debug."""
    from backends import DTYPES, VALID_DEVICES

    parser.add_argument(
        "--device",
        default=None,
        help=f"{VALID_DEVICES} (strict: array-api-strict, for testing; dask is refused); "
        "default: $HANDGRAD_DEVICE or auto (the GPU when CuPy and one work, else cpu)",
    )
    parser.add_argument(
        "--dtype",
        default=dtype,
        choices=DTYPES,
        help=f"floating dtype (default: {dtype or dtype_default})",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the log line."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _FlagFormatter(logging.Formatter):
    """The message; a line about a setting (``extra={"setting": ...}``, as a
    HandgradError names one) ends with the flag that sets it, as an error line does."""

    def __init__(self, flags: dict[str, str]):
        super().__init__("%(message)s")
        self.flags = flags

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        setting = getattr(record, "setting", None)
        if setting is None:
            return line
        return f"{line} ({self.flags.get(setting, '--' + setting.replace('_', '-'))})"


def configure_logging(quiet: bool, flags: dict[str, str] | None = None) -> None:
    """handgrad's log lines (the device chosen, what was inferred) to stderr, unless
    ``quiet`` (then warnings only). ``flags``: setting -> flag, where the flag is not
    ``--<setting>``."""
    logger = logging.getLogger("handgrad")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_FlagFormatter(flags or {}))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def describe(exc, flags: dict[str, str]) -> str:
    """The one-line message of a HandgradError, with the flag that sets what it names."""
    message = str(exc)
    if exc.setting is None:
        return message
    flag = flags.get(exc.setting, "--" + exc.setting.replace("_", "-"))
    hint = f"{flag} {exc.suggestion}" if exc.suggestion is not None else flag
    return f"{message} ({hint})"


def run(
    main: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None = None,
    flags: dict[str, str] | None = None,
) -> int:
    """Call ``main`` with SIGTERM raised as an interrupt; the project's errors become one
    ``error:`` line and status 2, an interrupt outside training status 130 (143 for
    SIGTERM). ``flags`` maps a setting name to the flag (or argument) that sets it.

    Under a communicator of several ranks (:func:`backends.comm.connect`), a failing rank
    names itself in that line (a bug keeps its traceback) and ends every rank with its
    status (MPI abort), since the others may be waiting for it in a collective. Ranks
    other than 0 wait :data:`ABORT_GRACE` seconds first: an error that every rank meets
    is then reported once, by rank 0, whose abort ends them. The abort comes
    :data:`FORWARD_GRACE` seconds after the line: launchers forward output asynchronously,
    and an abort may drop what is in flight. A rank whose communication failed because
    another rank is gone (killed) prints nothing, no traceback: the launcher reports the
    lost rank and ends the others (:func:`_await_launcher`)."""
    from backends.comm import active

    status, line = _outcome(main, argv, flags or {})
    comm = active()
    distributed = comm is not None and comm.size > 1
    if status == LOST_RANK:  # the launcher says which rank ended; it then ends this one
        line = _await_launcher()
        status = 1
    elif status and distributed and comm.rank != 0:
        time.sleep(ABORT_GRACE)
    if line:
        rank = f"rank {comm.rank} of {comm.size}: " if distributed else ""
        print(f"{line[0]}{rank}{line[1]}", file=sys.stderr, flush=True)
    if status and distributed:
        if line:  # the launcher forwards it asynchronously; an abort at once may drop it
            time.sleep(FORWARD_GRACE)
        comm.abort(status)
    return status


ABORT_GRACE = 1.5  # seconds
FORWARD_GRACE = 0.3  # seconds the launcher has to forward a rank's line before its abort
LAUNCHER_GRACE = 10.0  # seconds a rank that lost another waits for the launcher to end it
LOST_RANK = -1  # _outcome's status when another rank is gone


def _await_launcher() -> tuple[str, str]:
    """Wait for the launcher to end this rank after another rank ended (it prints its own
    line, MPICH's "BAD TERMINATION ... Killed (signal 9)"), printing nothing; if it has
    not within :data:`LAUNCHER_GRACE` seconds (a launcher that leaves the others running),
    the line to print before every rank is aborted."""
    with contextlib.suppress(KeyboardInterrupt):  # the launcher's SIGINT: end now
        time.sleep(LAUNCHER_GRACE)
    return "", "another rank ended; ending every rank"


def _outcome(main, argv, flags) -> tuple[int, tuple[str, str] | None]:
    """``(status, (prefix, message) of the line to print, or None)`` of ``main(argv)``."""
    from backends.comm import active
    from backends.errors import HandgradError
    from model.signals import Terminated, sigterm_as_interrupt

    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    try:
        with sigterm_as_interrupt():
            return main(argv), None
    except HandgradError as exc:
        if debug:
            traceback.print_exc()
        return 2, ("error: ", describe(exc, flags))
    except MemoryError as exc:
        if debug:
            traceback.print_exc()
        return 2, (
            "error: ",
            f"out of memory ({exc or 'allocation failed'}); use a smaller model, "
            "batch size or dataset",
        )
    except KeyboardInterrupt as exc:
        return 143 if isinstance(exc, Terminated) else 130, ("", "interrupted")
    except BaseException as exc:
        if _interrupted(exc):
            return 130, ("", "interrupted")
        comm = active()
        if comm is None or comm.size == 1:
            raise  # the excepthook prints it
        if comm.lost_rank(exc):  # not a bug here: another rank is gone
            return LOST_RANK, None
        traceback.print_exc()
        return 1, ("", REPORT)


def backend_from_args(args, quiet: bool = False):
    """The Backend that --device and --dtype ask for; the auto choice is logged."""
    from backends import get_backend

    configure_logging(quiet)
    return get_backend(args.device, args.dtype)
