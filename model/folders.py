"""Run folders and output paths, checked before any work starts.

A run folder is created atomically (``mkdir`` that fails if it exists) and claimed with a
lock file naming the live process that trains in it, so two runs never share one; a
folder that holds nothing may be reused. An output file (``save``) is never one of the
run's inputs or its folder's own files, and replaces an existing file only when asked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from datetime import datetime
from pathlib import Path

from backends.errors import ConfigError
from model.checkpoint import CheckpointError, process_alive
from model.files import read_meta

__all__ = [
    "LOCK",
    "RUN_FILES",
    "check_creatable",
    "check_output_file",
    "check_run_dir",
    "check_save",
    "checkpoint_path",
    "checkpoint_source",
    "make_run_dir",
    "process_state",
    "refuse_replacing",
    "release_run_dir",
    "remove_if_unused",
]


def check_output_file(path, setting: str) -> Path:
    """A file path that can be written: not empty, not a folder, and its nearest existing
    parent a writable folder. Nothing is created."""
    if path is None or not str(path).strip():
        raise ConfigError(f"the {setting} path is empty", setting=setting)
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name", setting=setting)
    check_creatable(path.parent, setting, what=path)
    return path


def check_creatable(folder, setting: str, what=None) -> None:
    """That ``folder`` is, or can be made as, a writable folder: its nearest existing
    ancestor (itself, if it exists) is a writable folder. Nothing is created."""
    parent = Path(folder)
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot write {what or folder}: {parent} is not a writable folder", setting=setting
        )


def make_run_dir(run_dir, *, overwrite: bool, root="runs", setting="run_dir") -> Path:
    """Create the run folder atomically (mkdir fails if it exists). ``run_dir`` None:
    ``root/<timestamp>``, then ``-2``, ``-3``, ... when taken. Errors name ``setting``;
    a folder made here is removed again when claiming it fails (a full disk)."""
    made: list[Path] = []  # the folder this call created
    try:
        if run_dir is not None:
            run_dir = Path(run_dir)
            if not str(run_dir).strip():
                raise ConfigError("the run folder path is empty", setting=setting)
            if run_dir.exists() and not run_dir.is_dir():
                raise ConfigError(f"{run_dir} exists and is not a folder", setting=setting)
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            try:
                run_dir.mkdir(exist_ok=overwrite)
                made.append(run_dir)
            except FileExistsError:
                if _holds_work(run_dir):
                    raise _exists(run_dir) from None
            return _claim(run_dir, setting)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        Path(root).mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            candidate = Path(root) / (stamp if n == 1 else f"{stamp}-{n}")
            with contextlib.suppress(FileExistsError):
                candidate.mkdir()
                made.append(candidate)
                return _claim(candidate, setting)
        raise ConfigError(f"no free run folder name under {root}", setting=setting)
    except OSError as exc:
        action = "use" if run_dir is not None and run_dir.is_dir() and not made else "create"
        for folder in made:
            remove_if_unused(folder)
        raise ConfigError(
            f"cannot {action} the run folder {(made or [run_dir or root])[0]}: {exc.strerror}; "
            "free space there (or make it writable), or choose another folder",
            setting=setting,
        ) from None


LOCK = ".handgrad-run"  # in a run folder: "<host>-<pid>" of the process training there


def _claim(run_dir: Path, setting: str) -> Path:
    """Make ``run_dir`` this process's: create its lock file exclusively, or take over one
    whose process (on this host) is gone. Another live process's lock is an error, so two
    runs never write into one folder."""
    lock = run_dir / LOCK
    for _ in range(2):
        created = False
        try:
            with open(lock, "x") as f:
                created = True
                f.write(_me())
            return run_dir
        except FileExistsError:
            _check_unheld(run_dir, setting)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        except OSError:  # a full disk: an empty lock would name no owner and block the folder
            if created:
                with contextlib.suppress(OSError):
                    lock.unlink()
            raise
    raise ConfigError(f"cannot claim the run folder {run_dir}", setting=setting)


def _me() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _check_unheld(run_dir: Path, setting: str) -> None:
    """A ConfigError naming ``setting`` when another live process holds ``run_dir``'s
    lock: one on another host, or on this one and still running. An owner on this host
    that is dying (killed: the ranks of a killed mpiexec end a moment after it) is waited
    for, :data:`LOCK_WAIT` seconds at most, and then no longer holds the folder."""
    try:
        owner = (run_dir / LOCK).read_text().strip()
    except FileNotFoundError:
        return
    host, _, pid = owner.rpartition("-")
    gone = host == socket.gethostname() and pid.isdigit() and _ended(int(pid))
    if owner != _me() and not gone:
        raise ConfigError(
            f"the run folder {run_dir} is in use by another handgrad process "
            f"({owner or 'unnamed'}, by its lock file {LOCK}); wait for it, or choose another "
            f"folder; if its run was just stopped (the ranks of a killed mpiexec end a "
            f"moment after it), retry in a moment; if no run trains there (a copied folder, "
            f"another machine's run that ended), remove {run_dir / LOCK}",
            setting=setting,
        )


LOCK_WAIT = 5.0  # seconds to wait for a dying lock owner (a GPU process frees its memory)


def _ended(pid: int) -> bool:
    """Whether process ``pid`` of this host can no longer train: gone, a zombie, or dying
    (waited for until it is gone, :data:`LOCK_WAIT` seconds at most; it runs no more code
    of its own either way)."""
    end = time.monotonic() + LOCK_WAIT
    state = process_state(pid)
    while state == "dying" and time.monotonic() < end:
        time.sleep(0.05)
        state = process_state(pid)
    return state != "alive"


_PF_EXITING = 0x4  # the kernel's flag of a process in exit (/proc/<pid>/stat, field 9)


def process_state(pid: int) -> str:
    """``"gone"`` (no such process, or a zombie: it has ended, only its exit status is
    left), ``"dying"`` (in exit, or with SIGKILL pending) or ``"alive"``. Where there is no
    /proc (macOS), ``"alive"`` or ``"gone"``."""
    if not process_alive(pid):
        return "gone"
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "alive" if process_alive(pid) else "gone"
    fields = stat.rsplit(")", 1)[1].split()  # after the command name: state, ..., flags
    if fields[0] in "ZXx":
        return "gone"
    pending = 0
    for line in status.splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")):
            pending |= int(line.split()[1], 16)
    kill = 1 << (signal.SIGKILL - 1)
    return "dying" if int(fields[6]) & _PF_EXITING or pending & kill else "alive"


def remove_if_unused(run_dir: Path) -> None:
    """Remove ``run_dir`` if nothing is in it (a run that failed before its first file)."""
    with contextlib.suppress(OSError):
        run_dir.rmdir()


def release_run_dir(run_dir: Path) -> None:
    """Remove ``run_dir``'s lock file if this process holds it (its training is over)."""
    lock = run_dir / LOCK
    with contextlib.suppress(OSError):
        if lock.read_text().strip() == _me():
            lock.unlink()


def _holds_work(run_dir: Path) -> bool:
    """Whether a run folder holds anything but a lock file."""
    return any(p.name != LOCK for p in run_dir.iterdir())


def check_run_dir(run_dir, overwrite: bool, setting: str = "run_dir") -> None:
    """A run folder that :func:`make_run_dir` will be able to create (or reuse): errors
    name ``setting``."""
    if not str(run_dir).strip():
        raise ConfigError("the run folder path is empty", setting=setting)
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} exists and is not a folder", setting=setting)
    if run_dir.is_dir():
        _check_unheld(run_dir, setting)
    if run_dir.exists() and not overwrite and _holds_work(run_dir):
        raise _exists(run_dir)  # an empty folder holds no work: it may be used
    check_output_file(run_dir / "checkpoint.npz", setting)


RUN_FILES = ("checkpoint.npz", "metrics.json", "loss.png")


def check_save(save, inputs, run_dir, overwrite: bool) -> Path:
    """The ``save`` path of a model file: an .npz that is none of the run's inputs or run
    folder files, and (unless ``overwrite``) not an existing file."""
    save = check_model_file(check_output_file(save, "save"))
    if (
        run_dir is not None
        and save.resolve().parent == Path(run_dir).resolve()
        and save.name.lower() in RUN_FILES  # CHECKPOINT.NPZ is it where case is ignored
    ):
        raise ConfigError(
            f"{save} is one of the run folder's own files; save the model outside it or "
            "under another name",
            setting="save",
        )
    return refuse_replacing(save, inputs, overwrite, "save")


def check_model_file(path, setting: str = "save") -> Path:
    """A model file's path: an .npz (.NPZ too, as data files), and not a run folder's own
    file."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ConfigError(
            f"{path}: a model file is an .npz; end its name with .npz", setting=setting
        )
    return refuse_replacing(path, (), True, setting)


def refuse_replacing(path, inputs, overwrite: bool, setting: str) -> Path:
    """``path`` if writing it replaces none of ``inputs`` (paths, None skipped), no run
    folder's own file (:data:`RUN_FILES` in a folder :func:`is_run_folder`) and, unless
    ``overwrite``, no existing file; a ConfigError naming ``setting`` (``overwrite`` for an
    existing file) otherwise."""
    path = Path(path)
    target = path.resolve()
    folder = target.parent
    if path.name.lower() in RUN_FILES and is_run_folder(folder):
        raise ConfigError(
            f"{path} is a file of the run in {folder}; writing there would break that run "
            "(its resume, record or plot), so choose another name",
            setting=setting,
        )
    for source in inputs:
        if source is not None and Path(source).resolve() == target:
            raise ConfigError(
                f"{path} is an input of this run; writing there would replace it, so choose "
                "another name",
                setting=setting,
            )
    if path.exists() and not overwrite:
        raise ConfigError(
            f"{path} already exists; choose another name or allow overwriting it",
            setting="overwrite",
        )
    return path


def is_run_folder(folder) -> bool:
    """Whether ``folder`` is a run's: a run trains there (its lock file), or its
    checkpoint.npz holds training state (a model file of that name does not)."""
    folder = Path(folder)
    if (folder / LOCK).is_file():
        return True
    try:
        meta = read_meta(folder / "checkpoint.npz")
    except CheckpointError:
        return False
    return isinstance(meta, dict) and "training" in meta


def _exists(run_dir) -> ConfigError:
    return ConfigError(
        f"the run folder {run_dir} already exists; resume it, choose another folder, or "
        "allow overwriting it",
        setting="overwrite",
    )


def checkpoint_path(path, setting: str | None = None) -> Path:
    """A run folder's ``checkpoint.npz``; any other path (a checkpoint or model file) as
    it is. An empty path is an error naming ``setting``: it would mean the current
    folder, where an unset shell variable would quietly find some other model."""
    if path is None or not str(path).strip():
        raise ConfigError(
            "the path is empty; give a run folder, its checkpoint.npz or a model file",
            setting=setting,
        )
    path = Path(path)
    return path / "checkpoint.npz" if path.is_dir() else path


def checkpoint_source(path) -> Path:
    """The checkpoint of the run to resume (:func:`checkpoint_path`)."""
    if path is None or not str(path).strip():
        raise ConfigError("the path of the run to resume is empty", setting="resume")
    return checkpoint_path(path)
