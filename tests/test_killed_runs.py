"""A killed rank and what it leaves (issue 24), without a launcher: how a rank tells a
lost rank from a bug, what it prints while the launcher ends it, and a run folder whose
lock names a process that is dying or dead (a resume right after a killed mpiexec).
tests/test_mpi.py does the same under mpiexec."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import _cli
import pytest
import train

import backends.comm
import model.folders
from backends.comm import Communicator
from backends.errors import ConfigError
from model.config import RunConfig
from model.folders import LOCK, check_run_dir, process_state
from model.run import Run


class _MPI:
    """The part of mpi4py.MPI that :meth:`Communicator.lost_rank` reads."""

    ERR_OTHER, ERR_TRUNCATE, ERR_COUNT, ERR_PROC_FAILED = 15, 14, 2, 75

    class Exception(Exception):
        def __init__(self, code):
            super().__init__(code)
            self.code = code

        def Get_error_class(self):
            return self.code


def test_a_failed_connection_is_a_lost_rank_and_a_misused_call_a_bug():
    comm = object.__new__(Communicator)
    comm._mpi = _MPI
    assert comm.lost_rank(_MPI.Exception(_MPI.ERR_OTHER))  # MPICH: a peer's socket closed
    assert comm.lost_rank(_MPI.Exception(_MPI.ERR_PROC_FAILED))
    assert not comm.lost_rank(_MPI.Exception(_MPI.ERR_TRUNCATE))  # buffers that differ
    assert not comm.lost_rank(_MPI.Exception(_MPI.ERR_COUNT))
    assert not comm.lost_rank(ValueError("not MPI's"))


class _Ranks:
    """Rank 0 of 3 whose collectives fail because another rank is gone."""

    rank, size = 0, 3

    def __init__(self):
        self.aborted = []

    def lost_rank(self, exc):
        return isinstance(exc, ConnectionResetError)

    def abort(self, status):
        self.aborted.append(status)


@pytest.mark.parametrize("lost", [True, False])
def test_a_rank_that_lost_another_prints_no_traceback_and_waits_for_the_launcher(
    capsys, monkeypatch, lost
):
    """It prints nothing while the launcher may end it (:data:`_cli.LAUNCHER_GRACE`); a
    launcher that does not gets one line, and the abort ends every rank. A bug on a rank
    keeps its traceback."""
    ranks = _Ranks()
    monkeypatch.setitem(backends.comm._world, "comm", ranks)
    monkeypatch.setattr(_cli, "LAUNCHER_GRACE", 0.2)
    error = ConnectionResetError("peer gone") if lost else KeyError("a bug")

    def main(argv):
        raise error

    start = time.monotonic()
    assert _cli.run(main, []) == 1
    err = capsys.readouterr().err
    assert ranks.aborted == [1]
    if lost:
        assert time.monotonic() - start >= 0.2
        assert err == "rank 0 of 3: another rank ended; ending every rank\n"
    else:
        assert "Traceback" in err and _cli.REPORT in err


def _zombie() -> subprocess.Popen:
    """A child that has ended but is not reaped: a zombie, which os.kill(pid, 0) finds."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{proc.pid}/stat")
    end = time.monotonic() + 30
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < end
        time.sleep(0.02)
    return proc


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_lock_of_a_process_that_ended_unreaped_does_not_hold_the_folder(capsys, tmp_path):
    """The orphaned rank of a killed mpiexec, ended but not yet reaped (or never, where
    the container's first process reaps nothing): the run resumes at once."""
    Run.start(RunConfig(dataset="iris", hidden=(4,), epochs=2), tmp_path / "r").train("cpu")
    proc = _zombie()
    try:
        assert process_state(proc.pid) == "gone"
        (tmp_path / "r" / LOCK).write_text(f"{socket.gethostname()}-{proc.pid}")
        argv = ["--resume", str(tmp_path / "r"), "--epochs", "3", "--device", "cpu", "--quiet"]
        assert _cli.run(train.main, argv, train.FLAGS) == 0, capsys.readouterr().err
    finally:
        proc.wait()


def _lock(folder: Path, pid: int) -> None:
    folder.mkdir()
    (folder / LOCK).write_text(f"{socket.gethostname()}-{pid}")


def test_a_dying_lock_owner_is_waited_for_then_the_folder_is_free(tmp_path, monkeypatch):
    states = iter(["dying", "dying", "dying", "gone"])
    monkeypatch.setattr(model.folders, "process_state", lambda pid: next(states))
    _lock(tmp_path / "r", 12345)
    start = time.monotonic()
    check_run_dir(tmp_path / "r", overwrite=True)
    assert 0.1 <= time.monotonic() - start < model.folders.LOCK_WAIT


def test_a_lock_owner_still_dying_after_the_wait_no_longer_holds_the_folder(
    tmp_path, monkeypatch
):
    """A process in exit runs no code of its own: once the bounded wait is over, it is
    not waited for any longer."""
    monkeypatch.setattr(model.folders, "process_state", lambda pid: "dying")
    monkeypatch.setattr(model.folders, "LOCK_WAIT", 0.3)
    _lock(tmp_path / "r", 12345)
    start = time.monotonic()
    check_run_dir(tmp_path / "r", overwrite=True)
    assert 0.3 <= time.monotonic() - start < 5


def test_a_live_lock_owner_is_refused_at_once_with_a_word_on_retrying(tmp_path, monkeypatch):
    monkeypatch.setattr(model.folders, "process_state", lambda pid: "alive")
    _lock(tmp_path / "r", 12345)
    start = time.monotonic()
    with pytest.raises(ConfigError, match="in use by another handgrad process") as info:
        check_run_dir(tmp_path / "r", overwrite=True)
    assert time.monotonic() - start < 0.1
    assert "if its run was just stopped (the ranks of a killed mpiexec end a moment after " \
           "it), retry in a moment" in str(info.value)  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_process_states_of_this_host():
    assert process_state(os.getpid()) == "alive"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_state(proc.pid) == "alive"
    finally:
        proc.kill()
        proc.wait()
    assert process_state(proc.pid) == "gone"
