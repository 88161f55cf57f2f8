"""Data-parallel training under mpiexec (backends/comm.py): P ranks train the parameters
one process trains (the single-process run is the reference), resume with another number
of ranks, and fail together. Every mpiexec has a timeout; without mpi4py or mpiexec the
MPI cases skip with the reason."""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import _cli
import mpi_worker
import numpy as np
import pytest
import train
from helpers import assert_close

from backends.transfer import batch_bounds
from model.config import RunConfig
from model.data import load_dataset
from model.run import Run
from model.trained import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds for any mpiexec run here (each takes a few)


def _mpiexec() -> str | None:
    """The mpiexec beside this Python (the mpich wheel's), else the one on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="needs mpi4py and mpiexec: pip install -e '.[mpi]'",
)


def _env() -> dict:
    # Open MPI refuses more ranks than cores unless told; MPICH ignores this.
    return {**os.environ, "HANDGRAD_DEVICE": "cpu", "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def mpiexec(ranks: int, *argv, cwd=None, wait=True):
    """``mpiexec -n ranks python argv...``; the finished process (or, ``wait`` False, the
    running one)."""
    command = [MPIEXEC, "-n", str(ranks), sys.executable, *map(str, argv)]
    proc = subprocess.Popen(command, cwd=cwd, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    if wait:
        proc.out, proc.err = proc.communicate(timeout=TIMEOUT)
    return proc


def test_rank_parts_tile_every_batch_in_order():
    """The parts of P ranks, laid end to end, are the batches; sizes differ by <= 1."""
    for n, batch, size in [(301, 100, 3), (301, 100, 2), (7, 7, 3), (2, 5, 3), (10, 3, 4)]:
        parts = [batch_bounds(n, batch, r, size) for r in range(size)]
        for k, (start, stop) in enumerate(batch_bounds(n, batch)):
            mine = [p[k] for p in parts]
            assert mine[0][0] == start and mine[-1][1] == stop
            assert all(a[1] == b[0] for a, b in itertools.pairwise(mine))
            sizes = [b - a for a, b in mine]
            assert max(sizes) - min(sizes) <= 1


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_data_parallel_fit_equals_one_process(tmp_path, ranks):
    """float64, gd (full batch), sgd and adam (301 rows: uneven parts, a last batch of one
    row, so with 3 ranks two have no rows of it), cross-entropy, mse and sse, and L-BFGS
    (its loss and gradient summed over the ranks, its line search deciding alike on
    every rank); with 3 ranks the array-api-strict device (host-staged allreduce) too."""
    runs = [f"{case}@cpu" for case in mpi_worker.cases()]
    runs += ["digits-adam@strict:device1"] if ranks == 3 else []
    proc = mpiexec(ranks, ROOT / "tests" / "mpi_worker.py", tmp_path, *runs)
    assert proc.returncode == 0, proc.err
    for run in runs:
        expected = mpi_worker.train(run.split("@")[0], "cpu")
        got = np.load(tmp_path / f"{run}.npz")
        assert set(got.files) == set(expected)
        for k, v in expected.items():
            assert_close(got[k], v, rtol=1e-10, atol=1e-300)


SMALL = ["--dataset", "digits", "--hidden", "16", "--batch-size", "100", "--optimizer",
         "adam", "--dtype", "float64", "--checkpoint-every", "2", "--seed", "3"]  # fmt: skip


def _params(folder):
    return load_checkpoint(Path(folder) / "checkpoint.npz")[0].params


@needs_mpi
@pytest.mark.mpi
def test_a_two_rank_checkpoint_resumes_on_one_and_on_three_ranks(tmp_path):
    """The CLI: 4 epochs on 2 ranks, then to 8 on 1 rank and on 3 ranks, equal the
    uninterrupted single-process run; rank 0 alone writes and speaks."""
    config = RunConfig(dataset="digits", hidden=(16,), batch_size=100, optimizer="adam",
                       dtype="float64", seed=3, epochs=8)  # fmt: skip
    Run.start(config, tmp_path / "whole").train(train.get_backend("cpu", "float64"))
    expected = _params(tmp_path / "whole")

    proc = mpiexec(2, ROOT / "scripts" / "train.py", *SMALL, "--epochs", "4", "--out", "two",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.err
    assert proc.err.count("distributed: 2 ranks") == 1 and proc.err.count("model: 64-16-10") == 1
    assert len(proc.out.strip().splitlines()) == 1  # one summary line, rank 0's
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "checkpoint.npz", "loss.png", "metrics.json"]  # fmt: skip
    assert load_checkpoint(tmp_path / "two" / "checkpoint.npz")[1]["epoch"] == 4

    rc = _cli.run(train.main, ["--resume", str(tmp_path / "two"), "--epochs", "8", "--out",
                               str(tmp_path / "one"), "--quiet", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    three = mpiexec(3, ROOT / "scripts" / "train.py", "--resume", "two", "--epochs", "8",
                    "--out", "three", "--quiet", cwd=tmp_path)  # fmt: skip
    assert three.returncode == 0, three.err
    for folder in ("one", "three"):
        got = _params(tmp_path / folder)
        for k, v in expected.items():
            assert_close(got[k], v, rtol=1e-10)


@needs_mpi
@pytest.mark.mpi
def test_ranks_stream_their_rows_of_a_data_file_and_train_what_one_process_loads(tmp_path):
    """The CLI on 2 ranks with an uncompressed .npz (memory-mapped on every rank, each
    reading its parts of the batches), standardized, with a validation split: the
    parameters of one process that loads the file whole."""
    X, y = load_dataset("digits")
    np.savez(tmp_path / "d.npz", X=X, y=y)
    config = RunConfig(data=str(tmp_path / "d.npz"), standardize=True, hidden=(16,),
                       batch_size=100, dtype="float64", seed=3, epochs=3)  # fmt: skip
    loaded = Run.start(config, tmp_path / "loaded")
    loaded.train(train.get_backend("cpu", "float64"))
    assert not loaded.data.streamed
    argv = ["--data", "d.npz", "--standardize", "--hidden", "16", "--batch-size", "100",
            "--dtype", "float64", "--seed", "3", "--epochs", "3", "--device", "cpu"]  # fmt: skip
    proc = mpiexec(2, ROOT / "scripts" / "train.py", *argv, "--out", "two", cwd=tmp_path)
    assert proc.returncode == 0, proc.err
    assert proc.err.count("memory-mapped: streamed from disk") == 1
    got = _params(tmp_path / "two")
    for k, v in _params(tmp_path / "loaded").items():
        assert_close(got[k], v, rtol=1e-10)


def _rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of MPI rank ``rank`` started under ``launcher_pid`` (MPICH or Open MPI)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ranks = {b"PMI_RANK=%d" % rank, b"OMPI_COMM_WORLD_RANK=%d" % rank}
        if ranks & set(environ) and _descends(int(entry.name), launcher_pid):
            return int(entry.name)
    return None


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False


def _wait_for(condition, timeout=60.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def _hydra() -> bool:
    """Whether the launcher is MPICH's (Hydra), whose report of a killed rank is known."""
    version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True).stdout
    return "HYDRA" in version


def _check_launcher_line(proc) -> None:
    """What a killed rank leaves on the terminal: the launcher's report (Hydra: "BAD
    TERMINATION", "Killed (signal 9)", on stdout, status 9), no traceback, no bug line."""
    for text in (proc.out, proc.err):
        assert "Traceback" not in text and _cli.REPORT not in text, text
    if _hydra():
        assert "BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES" in proc.out
        assert "Killed (signal 9)" in proc.out and proc.returncode == 9


@needs_mpi
@pytest.mark.mpi
def test_killing_one_rank_ends_every_rank_and_leaves_a_checkpoint(tmp_path):
    """The launcher's line, the last periodic checkpoint whole, and the run resumable at
    once (no rank holds the folder)."""
    proc = mpiexec(3, ROOT / "scripts" / "train.py", "--dataset", "iris", "--hidden", "8",
                   "--epochs", "1000000", "--checkpoint-every", "20", "--out", "k", "--quiet",
                   cwd=tmp_path, wait=False)  # fmt: skip
    try:
        _wait_for(lambda: (tmp_path / "k" / "checkpoint.npz").exists())
        ranks = [_rank_pid(proc.pid, r) for r in range(3)]
        assert None not in ranks
        os.kill(ranks[1], signal.SIGKILL)
        killed = time.monotonic()
        proc.out, proc.err = proc.communicate(timeout=30)
        _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in ranks), timeout=30)
        assert time.monotonic() - killed < 30
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    _check_launcher_line(proc)
    _, info, _ = load_checkpoint(tmp_path / "k" / "checkpoint.npz")  # whole, or raises
    assert info["epoch"] % 20 == 0 and info["epoch"] > 0
    argv = ["--resume", str(tmp_path / "k"), "--epochs", str(info["epoch"] + 2), "--quiet",
            "--device", "cpu"]  # fmt: skip
    assert _cli.run(train.main, argv, train.FLAGS) == 0


LOSE_RANK_1 = """
import os, signal, sys, time
sys.path.insert(0, {scripts!r})
import _cli, train
import model.run
from backends.comm import connect

real = model.run._DeviceSnapshot.take

def take(self, params, state, epoch, record):
    real(self, params, state, epoch, record)
    if epoch == 7 and connect().rank == 0:  # its collective fails as when a rank is gone
        from mpi4py import MPI
        raise MPI.Exception(MPI.ERR_OTHER)
    if epoch == 7 and connect().rank == 1:  # and then that rank is killed
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)

model.run._DeviceSnapshot.take = take
sys.exit(_cli.run(train.main, {argv!r}, train.FLAGS))
"""


@needs_mpi
@pytest.mark.mpi
def test_a_rank_that_notices_a_killed_rank_first_leaves_the_word_to_the_launcher(tmp_path):
    """When rank 0's collective fails before the launcher has ended it (MPICH over TCP
    can notice the lost connection first), rank 0 prints no traceback and no bug line:
    it waits for the launcher, whose report is the one line about the killed rank."""
    argv = ["--dataset", "iris", "--hidden", "8", "--epochs", "100", "--checkpoint-every", "5",
            "--out", "f", "--quiet"]  # fmt: skip
    code = LOSE_RANK_1.format(scripts=str(ROOT / "scripts"), argv=argv)
    start = time.monotonic()
    proc = mpiexec(3, "-c", code, cwd=tmp_path)
    assert time.monotonic() - start < 30
    _check_launcher_line(proc)
    assert "another rank ended" not in proc.err  # the launcher ended it before its grace
    assert load_checkpoint(tmp_path / "f" / "checkpoint.npz")[1]["epoch"] == 5
    assert not (tmp_path / "f" / ".handgrad-run").exists()  # rank 0 freed the folder


FAIL_ON_RANK_1 = """
import sys
sys.path.insert(0, {scripts!r})
import _cli, train
import model.run
from backends.comm import connect
from backends.errors import HandgradError

real = model.run._DeviceSnapshot.take

def take(self, params, state, epoch, record):
    real(self, params, state, epoch, record)
    if epoch == 7 and connect().rank == 1:
        raise HandgradError("disk of rank 1 on fire")

model.run._DeviceSnapshot.take = take
sys.exit(_cli.run(train.main, {argv!r}, train.FLAGS))
"""


@needs_mpi
@pytest.mark.mpi
def test_an_error_on_one_rank_ends_every_rank_with_one_line_naming_it(tmp_path):
    argv = ["--dataset", "iris", "--hidden", "8", "--epochs", "100", "--checkpoint-every", "5",
            "--out", "f", "--quiet"]  # fmt: skip
    code = FAIL_ON_RANK_1.format(scripts=str(ROOT / "scripts"), argv=argv)
    start = time.monotonic()
    proc = mpiexec(3, "-c", code, cwd=tmp_path)
    assert time.monotonic() - start < 30
    assert proc.returncode == 2, proc.err
    lines = [line for line in proc.err.splitlines() if line.startswith("error:")]
    assert lines == ["error: rank 1 of 3: disk of rank 1 on fire"], proc.err
    assert load_checkpoint(tmp_path / "f" / "checkpoint.npz")[1]["epoch"] == 5


@needs_mpi
@pytest.mark.mpi
def test_bad_rows_in_a_streamed_file_are_found_by_rank_0_and_end_every_rank(tmp_path):
    """Rank 0 alone makes the passes over a streamed file; a NaN it finds is one line,
    and the other rank, waiting for rank 0's results, ends with it."""
    X = np.ones((50, 3))
    X[7, 1] = np.nan
    np.savez(tmp_path / "nan.npz", X=X, y=np.arange(50) % 2)
    start = time.monotonic()
    proc = mpiexec(2, ROOT / "scripts" / "train.py", "--data", "nan.npz", "--device", "cpu",
                   "--out", "r", "--quiet", cwd=tmp_path)  # fmt: skip
    assert time.monotonic() - start < 30
    assert proc.returncode == 2, proc.err
    lines = [line for line in proc.err.splitlines() if line.startswith("error:")]
    message = "X has 1 NaN or inf value(s), the first in row 7; drop or impute those rows first"
    assert lines == [f"error: rank 0 of 2: {tmp_path / 'nan.npz'}: {message} (--data)"], proc.err
    assert not (tmp_path / "r").exists()


def test_distributed_without_a_launcher_is_one_line_naming_the_fix(capsys, tmp_path):
    """Outside mpiexec, --distributed is an error; plain training never imports mpi4py."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        assert name not in os.environ
    rc = _cli.run(train.main, ["--device", "cpu", "--distributed", "--out", str(tmp_path / "d")],
                  train.FLAGS)  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: distributed training needs an MPI launcher")
    assert "mpiexec -n P" in err[-1] and err[-1].endswith("(--distributed)")
    assert not (tmp_path / "d").exists()
    rc = _cli.run(train.main, ["--device", "cpu", "--epochs", "1", "--quiet", "--out",
                               str(tmp_path / "p")], train.FLAGS)  # fmt: skip
    assert rc == 0 and "mpi4py" not in sys.modules


def test_a_launch_without_mpi4py_says_how_to_install_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    rc = _cli.run(train.main, ["--device", "cpu", "--out", str(tmp_path / "m")], train.FLAGS)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: distributed training needs mpi4py")
    assert "pip install -e '.[mpi]'" in err[-1]


@pytest.mark.gpu
@needs_mpi
@pytest.mark.mpi
def test_cupy_ranks_equal_one_process(tmp_path):
    """Two CuPy ranks (NCCL when CuPy has it) on cuda:<local rank>, or both on cuda:0 with
    one GPU, against the single-process CuPy run."""
    from conftest import require_device

    from backends import probe_cuda

    require_device("cuda")
    device = "cuda" if probe_cuda()[1] >= 2 else "cuda:0"
    proc = mpiexec(2, ROOT / "tests" / "mpi_worker.py", tmp_path, f"digits-adam@{device}")
    assert proc.returncode == 0, proc.err
    expected = mpi_worker.train("digits-adam", "cuda:0")
    got = np.load(tmp_path / f"digits-adam@{device}.npz")
    for k, v in expected.items():
        assert_close(got[k], v, rtol=1e-10, atol=1e-300)


def test_ranks_sharing_one_gpu_do_not_use_nccl():
    """NCCL refuses two ranks on one device (two ranks on cuda:0 of a one-GPU machine):
    the transport falls back to MPI when two placements name the same GPU."""
    from backends.comm import shares_a_gpu

    assert shares_a_gpu([("node", "0000:01:00.0"), ("node", "0000:01:00.0")])
    assert not shares_a_gpu([("node", "0000:01:00.0"), ("node", "0000:02:00.0")])
    assert not shares_a_gpu([("a", "0000:01:00.0"), ("b", "0000:01:00.0")])
