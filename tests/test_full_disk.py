"""A full disk, through scripts/train.py as a user meets it (issue 24): one ``error:`` line
naming the disk problem, the file and what the checkpoint on disk holds, exit status 2,
no traceback, nothing half-written (no temporary file, no lock, no empty run folder).

The disk fills where the writes happen: every write into the temporary file of the
chosen file (checkpoint.npz, the model file, metrics.json, loss.png: NumPy's zip writer
and matplotlib's PNG writer alike) fails as the OS reports it, ENOSPC, from its
``n``-th write on."""

from __future__ import annotations

import errno
import json
import os
import tempfile

import _cli
import numpy as np
import pytest
import train

from model.trained import load_checkpoint

FULL = "No space left on device"


class _FullFile:
    """A file on a full disk: every write fails with ENOSPC."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, FULL)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(name, n)``: from the ``n``-th atomic write of a file called ``name`` on,
    its writes fail as on a full disk."""
    real_mkstemp, real_fdopen = tempfile.mkstemp, os.fdopen
    plan = {"name": None, "from": 1, "seen": 0, "full": set()}

    def mkstemp(*args, prefix=None, **kwargs):
        fd, path = real_mkstemp(*args, prefix=prefix, **kwargs)
        if plan["name"] and (prefix or "").startswith(f".{plan['name']}."):
            plan["seen"] += 1
            if plan["seen"] >= plan["from"]:
                plan["full"].add(fd)
        return fd, path

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        if fd in plan["full"]:
            plan["full"].discard(fd)  # its number is free for other files once closed
            return _FullFile(f)
        return f

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "fdopen", fdopen)

    def fill(name: str, n: int = 1) -> None:
        plan.update(name=name, **{"from": n})

    return fill


def run(capsys, *argv):
    rc = _cli.run(train.main, [*argv, "--device", "cpu", "--quiet"], train.FLAGS)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "bug in handgrad" not in err
    return lines[0]


def _left(folder) -> list[str]:
    """What a run folder holds (hidden files included: temporaries, the lock)."""
    return sorted(p.name for p in folder.iterdir())


IRIS = ("--dataset", "iris", "--hidden", "8", "--seed", "1")


def test_a_periodic_checkpoint_on_a_full_disk_keeps_the_last_one(capsys, tmp_path, full_disk):
    full_disk("checkpoint.npz", 2)  # epoch 10 is written, epoch 20 is not
    rc, out, err = run(capsys, *IRIS, "--epochs", "30", "--checkpoint-every", "10",
                       "--out", str(tmp_path / "r"))  # fmt: skip
    assert rc == 2 and out == ""
    line = _one_error_line(err)
    assert f"cannot write {tmp_path / 'r' / 'checkpoint.npz'}: {FULL}" in line
    assert line.endswith("; the checkpoint on disk holds epoch 10 (--out)"), line
    assert _left(tmp_path / "r") == ["checkpoint.npz"]  # no temporary file, no lock
    assert load_checkpoint(tmp_path / "r" / "checkpoint.npz")[1]["epoch"] == 10


@pytest.mark.parametrize(
    "argv",
    [("--epochs", "5"),  # the final save of a run shorter than --checkpoint-every
     ("--epochs", "12", "--hidden", "512,512")],  # its first periodic checkpoint
    ids=["final", "first-periodic"],
)  # fmt: skip
def test_a_first_checkpoint_on_a_full_disk_leaves_no_run_folder(capsys, tmp_path, full_disk, argv):
    full_disk("checkpoint.npz")
    rc, _, err = run(capsys, *IRIS, *argv, "--out", str(tmp_path / "r"))
    assert rc == 2
    line = _one_error_line(err)
    assert FULL in line and line.endswith("; no checkpoint was saved (--out)"), line
    assert not (tmp_path / "r").exists()
    assert _left(tmp_path) == []


@pytest.mark.parametrize(
    "name, flag",
    [("model.npz", "--save"), ("loss.png", "--out"), ("metrics.json", "--out")],
)
def test_a_file_after_the_final_checkpoint_on_a_full_disk_is_written_by_a_resume(
    capsys, tmp_path, full_disk, name, flag
):
    """The model file, loss.png or metrics.json cannot be written: the error names it and
    says that the checkpoint holds every epoch; once there is space, resuming with the
    same epochs writes what is missing, training nothing."""
    run_dir, model = tmp_path / "r", tmp_path / "model.npz"
    full_disk(name)
    rc, _, err = run(capsys, *IRIS, "--epochs", "5", "--out", str(run_dir), "--save", str(model))
    assert rc == 2
    line = _one_error_line(err)
    path = model if name == "model.npz" else run_dir / name
    assert f"cannot write {path}: {FULL}" in line
    assert "the checkpoint on disk holds all 5 epochs" in line
    assert line.endswith(f"to write the rest (--resume {run_dir})"), line
    assert model.exists() == (name != "model.npz")  # written before loss.png
    assert not (run_dir / "metrics.json").exists()  # written last
    assert ".handgrad-run" not in _left(run_dir)
    assert not [p for p in _left(run_dir) + _left(tmp_path) if p.endswith(".tmp")]
    trained = load_checkpoint(run_dir / "checkpoint.npz")[0].params

    full_disk(None)  # space again
    again = ("--save", str(model)) if flag == "--save" else ()
    rc, _, err = run(capsys, "--resume", str(run_dir), "--epochs", "5", *again)
    assert rc == 0, err
    assert {"checkpoint.npz", "loss.png", "metrics.json"} <= set(_left(run_dir))
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
    for k, v in load_checkpoint(run_dir / "checkpoint.npz")[0].params.items():
        np.testing.assert_array_equal(v, trained[k])  # nothing trained
    assert model.exists()


def test_a_full_disk_when_claiming_the_run_folder_leaves_nothing(capsys, tmp_path, monkeypatch):
    """Creating the lock file succeeds but writing its owner fails: neither an empty lock
    (it would name no owner, and block the folder) nor the new folder is left."""
    import model.folders

    real_open = open

    def lock_on_full_disk(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return _FullFile(f) if mode == "x" else f

    monkeypatch.setattr(model.folders, "open", lock_on_full_disk, raising=False)
    for out, exists in ((tmp_path / "new", False), (tmp_path / "empty", True)):
        if exists:
            out.mkdir()
        rc, _, err = run(capsys, *IRIS, "--epochs", "1", "--out", str(out))
        assert rc == 2
        line = _one_error_line(err)
        assert f"the run folder {out}: {FULL}; free space there" in line and line.endswith(
            "(--out)"
        )
        assert out.exists() == exists and (not exists or _left(out) == [])
    monkeypatch.undo()
    rc, _, err = run(capsys, *IRIS, "--epochs", "1", "--out", str(tmp_path / "empty"))
    assert rc == 0, err  # the folder is free
