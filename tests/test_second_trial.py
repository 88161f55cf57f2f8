"""The smaller findings of a new user's second trial (issue 24), end to end: a resume
finishes what a kill left unwritten, a sweep given as --init, the loss a model fixes,
misspelled keywords of Run.start and Run.resume, suffixes in capitals, a data file
replaced by a named pipe, and HANDGRAD_BLAS_THREADS checked before the data loads."""

from __future__ import annotations

import json
import os

import _cli
import numpy as np
import pytest
import train

from backends.errors import ConfigError
from model.config import RunConfig
from model.run import Run
from model.trained import TrainedModel

IRIS = ["--dataset", "iris", "--hidden", "8", "--device", "cpu"]


def run(capsys, *argv):
    rc = _cli.run(train.main, list(argv), train.FLAGS)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _error_line(err: str) -> str:
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err
    return line


@pytest.fixture
def no_data(monkeypatch):
    """Loading data is a test failure: what is checked is checked before."""

    def refuse(*args, **kwargs):
        pytest.fail("the data was loaded")

    monkeypatch.setattr("model.run.prepare_data", refuse)


@pytest.mark.parametrize(
    "lost", [("metrics.json", "loss.png"), ("loss.png",), ("metrics.json",)]
)
def test_a_resume_writes_the_files_a_kill_after_the_last_epoch_left_unwritten(
    capsys, tmp_path, lost
):
    """SIGKILL between the final checkpoint and metrics.json / loss.png: a resume with
    the same --epochs writes them and trains nothing (the checkpoint stays byte for
    byte); once they are there, the same resume is refused as already trained."""
    folder = tmp_path / "r"
    rc, _, err = run(capsys, *IRIS, "--epochs", "5", "--out", str(folder), "--quiet")
    assert rc == 0, err
    checkpoint = (folder / "checkpoint.npz").read_bytes()
    for name in lost:
        (folder / name).unlink()
    rc, out, err = run(capsys, "--resume", str(folder), "--epochs", "5", "--device", "cpu")
    assert rc == 0, err
    assert "the run has trained all its 5 epochs: writing the files it lacks" in err
    assert out.startswith("cpu | 5 epochs | ")
    assert (folder / "checkpoint.npz").read_bytes() == checkpoint
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["changes"] == []
    assert len(metrics["metrics"]["history"]["loss"]) == 5
    assert (folder / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, _, err = run(capsys, "--resume", str(folder), "--epochs", "5", "--device", "cpu")
    assert rc == 2 and "already trained 5 epochs" in _error_line(err)


def test_a_sweep_given_as_init_names_export(capsys, tmp_path):
    rc, _, err = run(capsys, *IRIS, "--epochs", "2", "--sweep", "lr=0.01,0.1", "--out",
                     str(tmp_path / "s"), "--quiet")  # fmt: skip
    assert rc == 0, err
    for init in (tmp_path / "s", tmp_path / "s" / "checkpoint.npz"):
        rc, out, err = run(capsys, *IRIS, "--epochs", "2", "--init", str(init), "--out",
                           str(tmp_path / "new"))  # fmt: skip
        assert rc == 2 and out == ""
        line = _error_line(err)
        assert "holds a sweep: one network per replica" in line
        assert f"python scripts/export.py {tmp_path / 's'} --replica best" in line
        assert line.endswith("(--init)"), line
        assert not (tmp_path / "new").exists()


def test_the_loss_a_single_unit_fixes_is_logged_as_fixed_by_it(capsys, tmp_path):
    rc, _, err = run(capsys, "--model", "logistic", "--dataset", "breast-cancer",
                     "--standardize", "--epochs", "1", "--out", str(tmp_path / "r"),
                     "--device", "cpu")  # fmt: skip
    assert rc == 0, err
    assert "loss: bce (fixed by the model 'logistic'), 1 output(s), classes 0, 1" in err
    assert "as set" not in err


@pytest.mark.parametrize(
    "keyword, hint",
    [("out", "did you mean 'run_dir'?"), ("output", "did you mean 'run_dir'?"),
     ("rundir", "did you mean 'run_dir'?"),
     ("epochs", "'epochs' is a setting of the RunConfig: RunConfig(..., epochs=...)"),
     ("learning_rate", "'lr' is a setting of the RunConfig: RunConfig(..., lr=...)")],
)  # fmt: skip
def test_run_start_names_the_keyword_meant_before_any_work(tmp_path, monkeypatch, no_data,
                                                          keyword, hint):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        Run.start(RunConfig(dataset="iris", epochs=1), **{keyword: "x"})
    assert f"Run.start() has no setting {keyword!r}; {hint}" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no run folder, no runs/


@pytest.mark.parametrize(
    "keyword, hint",
    [("out", "did you mean 'run_dir'?"), ("epoch", "did you mean 'epochs'?"),
     ("learning_rate", "did you mean 'lr'?")],
)  # fmt: skip
def test_run_resume_names_the_keyword_meant_before_any_work(tmp_path, keyword, hint):
    Run.start(RunConfig(dataset="iris", hidden=(4,), epochs=1), tmp_path / "r").train("cpu")
    before = sorted(p.name for p in (tmp_path / "r").iterdir())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("model.run.prepare_data", lambda *a, **k: pytest.fail("data loaded"))
        mp.setattr("model.run.read_model_file", lambda *a, **k: pytest.fail("file read"))
        with pytest.raises(ConfigError) as info:
            Run.resume(tmp_path / "r", **{keyword: "x"})
    assert f"Run.resume() has no setting {keyword!r}; {hint}" in str(info.value)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


@pytest.mark.parametrize("suffix", [".NPZ", ".Npz"])
def test_a_model_file_may_end_in_npz_in_capitals(capsys, tmp_path, suffix):
    model = tmp_path / f"model{suffix}"
    rc, _, err = run(capsys, *IRIS, "--epochs", "2", "--out", str(tmp_path / "r"), "--save",
                     str(model), "--quiet")  # fmt: skip
    assert rc == 0, err
    assert TrainedModel.load(model).predict(np.zeros((1, 4))).shape == (1,)
    rc, _, err = run(capsys, *IRIS, "--epochs", "2", "--out", str(tmp_path / "r2"), "--save",
                     str(tmp_path / "model.npy"))  # fmt: skip
    assert rc == 2 and "a model file is an .npz; end its name with .npz" in _error_line(err)
    # where case is ignored (macOS, Windows), CHECKPOINT.NPZ is the run's checkpoint.npz
    rc, _, err = run(capsys, *IRIS, "--epochs", "2", "--out", str(tmp_path / "r2"), "--save",
                     str(tmp_path / "r2" / f"CHECKPOINT{suffix}"))  # fmt: skip
    assert rc == 2 and "one of the run folder's own files" in _error_line(err)
    rc, _, err = run(capsys, "--resume", str(tmp_path / "r"), "--epochs", "3", "--device", "cpu",
                     "--save", str(tmp_path / "r" / f"Checkpoint{suffix}"))  # fmt: skip
    assert rc == 2 and "is a file of the run in" in _error_line(err)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_resume_whose_data_file_became_a_pipe_says_so_without_reading_it(capsys, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(40, 3)), y=rng.integers(0, 2, 40))
    rc, _, err = run(capsys, "--data", str(tmp_path / "d.npz"), "--epochs", "1", "--device",
                     "cpu", "--out", str(tmp_path / "r"), "--quiet")  # fmt: skip
    assert rc == 0, err
    (tmp_path / "d.npz").unlink()
    os.mkfifo(tmp_path / "d.npz")  # reading it would block until a writer comes
    rc, _, err = run(capsys, "--resume", str(tmp_path / "r"), "--epochs", "2", "--device", "cpu")
    assert rc == 2
    line = _error_line(err)
    assert f"the run's data file {tmp_path / 'd.npz'} is not a regular file (a pipe, " in line
    assert "give the path of the file the run trained on" in line and "is gone" not in line
    assert line.endswith("(--data)"), line


@pytest.mark.parametrize("value", ["abc", "0", "-2", "inf"])
def test_handgrad_blas_threads_is_refused_before_the_data_loads(
    capsys, tmp_path, monkeypatch, value
):
    Run.start(RunConfig(dataset="iris", hidden=(4,), epochs=1), tmp_path / "r").train("cpu")
    monkeypatch.setenv("HANDGRAD_BLAS_THREADS", value)
    monkeypatch.setattr("model.run.prepare_data", lambda *a, **k: pytest.fail("data loaded"))
    start = [*IRIS, "--epochs", "1", "--out", str(tmp_path / "new")]
    resume = ["--resume", str(tmp_path / "r"), "--epochs", "2", "--device", "cpu"]
    for argv in (start, resume):
        rc, out, err = run(capsys, *argv)
        assert rc == 2 and out == ""
        line = _error_line(err)
        assert line.startswith("error: the environment variable HANDGRAD_BLAS_THREADS: ")
        assert repr(value) in line
    assert not (tmp_path / "new").exists()
