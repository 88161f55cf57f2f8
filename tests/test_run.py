"""The library's training run (model/run.py): resume, checkpoints, interrupts, kills,
run folders and files, and that nothing crosses to the host between checkpoints."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import _cli
import numpy as np
import pytest
import train

from backends import Backend, get_backend
from backends.errors import ConfigError
from model.checkpoint import CheckpointError, atomic_write
from model.config import RunConfig
from model.data import DataError
from model.fit import DivergenceError
from model.report import strict_json
from model.run import Run
from model.trained import TrainedModel, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"dataset": "iris", "hidden": (8,), "batch_size": 16, "optimizer": "adam",
         "dtype": "float64", "standardize": True}  # fmt: skip


def _params(path):
    return load_checkpoint(path)[0].params


def test_library_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path):
    cpu = get_backend("cpu", "float64")
    Run.start(RunConfig(**SMALL, epochs=12), tmp_path / "a").train(cpu)
    Run.start(RunConfig(**SMALL, epochs=5), tmp_path / "b").train(cpu)
    resumed = Run.resume(tmp_path / "b", epochs=12)
    assert resumed.epoch == 5
    resumed.train(cpu)
    a, b = _params(tmp_path / "a" / "checkpoint.npz"), _params(tmp_path / "b" / "checkpoint.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_an_interrupt_saves_the_last_completed_epoch_with_metrics_and_plot(tmp_path):
    """Ctrl-C in epoch 4 keeps epoch 3, which resumes to the same result as no interrupt."""
    cpu = get_backend("cpu", "float64")
    Run.start(RunConfig(**SMALL, epochs=6), tmp_path / "a").train(cpu)
    run = Run.start(RunConfig(**SMALL, epochs=6), tmp_path / "b")
    real_take = _snapshot_take()

    def take_then_interrupt(self, params, state, epoch, record):
        real_take(self, params, state, epoch, record)
        if epoch == 3:
            params["W1"][...] = np.nan  # the half-done epoch 4 must not be saved
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("model.run._DeviceSnapshot.take", take_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            run.train(cpu)
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs"] == 3
    assert (tmp_path / "b" / "loss.png").exists()
    Run.resume(tmp_path / "b", epochs=6).train(cpu)
    a, b = _params(tmp_path / "a" / "checkpoint.npz"), _params(tmp_path / "b" / "checkpoint.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def _snapshot_take():
    from model.run import _DeviceSnapshot

    return _DeviceSnapshot.take


def test_divergence_keeps_the_last_finite_epoch(tmp_path):
    from model.fit import DivergenceError

    run = Run.start(RunConfig(dataset="regression", optimizer="sgd", lr=1e6, epochs=50,
                              dtype="float64"), tmp_path / "r")  # fmt: skip
    with np.errstate(all="ignore"), pytest.raises(DivergenceError, match="at epoch"):
        run.train(get_backend("cpu", "float64"))
    trained, info, _ = load_checkpoint(tmp_path / "r" / "checkpoint.npz")
    assert all(np.all(np.isfinite(v)) for v in trained.params.values())
    assert info["epoch"] == run.epoch and all(np.isfinite(info["history"]["loss"]))
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["status"] == "diverged"


def test_no_parameter_reaches_the_host_between_checkpoints(tmp_path, monkeypatch):
    """Only checkpoints copy parameters and optimizer state to the host: at epochs 4 and 8
    and at the end (10), each copying 4 parameters + 2 x 4 Adam buffers."""
    copies = []
    real = Backend.to_numpy

    def counting(self, array):
        copies.append(tuple(array.shape))
        return real(self, array)

    monkeypatch.setattr(Backend, "to_numpy", counting)
    run = Run.start(RunConfig(**SMALL, epochs=10), tmp_path / "r", checkpoint_every=4)
    run.train(get_backend("strict", "float64"))
    assert len(copies) == 3 * (4 + 8)
    trained = TrainedModel.load(tmp_path / "r" / "checkpoint.npz")
    assert {k: v.shape for k, v in trained.params.items()} == dict(run.model.param_shapes())


def test_run_folders_started_in_the_same_second_never_collide(tmp_path):
    runs = [Run.start(RunConfig(**SMALL, epochs=1), root=tmp_path / "runs") for _ in range(3)]
    assert len({r.dir for r in runs}) == 3


def test_files_respect_the_umask_and_orphans_are_removed(tmp_path):
    old = os.umask(0o022)
    try:
        Run.start(RunConfig(**SMALL, epochs=2), tmp_path / "r").train(get_backend("cpu", "float64"))
    finally:
        os.umask(old)
    for name in ("checkpoint.npz", "metrics.json", "loss.png"):
        assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == 0o644
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # its pid is surely gone now
    orphan = tmp_path / f".m.npz.{socket.gethostname()}-{proc.pid}.abc.tmp"
    orphan.write_bytes(b"half")
    atomic_write(tmp_path / "m.npz", lambda f: f.write(b"whole"))
    assert not orphan.exists() and (tmp_path / "m.npz").read_bytes() == b"whole"


def _train_until_killed(run_dir: str, epochs: int) -> None:  # runs in a forked child
    run = Run.resume(run_dir, epochs=epochs, checkpoint_every=1)
    run.train(get_backend("cpu", "float64"))


def test_sigkill_at_random_moments_leaves_a_checkpoint_that_resumes(tmp_path):
    """20 kill -9s of a run that checkpoints every epoch (so many land inside a write):
    every checkpoint left behind is complete, loads, and resumes."""
    run = Run.start(RunConfig(**SMALL, epochs=1), tmp_path / "r", checkpoint_every=1)
    run.train(get_backend("cpu", "float64"))
    ctx = multiprocessing.get_context("fork")
    rng = np.random.default_rng(0)
    epochs = [load_checkpoint(run.checkpoint)[1]["epoch"]]
    for _ in range(20):
        child = ctx.Process(target=_train_until_killed, args=(str(run.dir), 10**6))
        child.start()
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        epochs.append(load_checkpoint(run.checkpoint)[1]["epoch"])  # complete, or raises
    assert epochs == sorted(epochs) and epochs[-1] > epochs[0]
    Run.resume(run.dir, epochs=epochs[-1] + 2).train(get_backend("cpu", "float64"))
    assert [p.name for p in run.dir.iterdir() if p.name.endswith(".tmp")] == []  # cleaned


def _cli_run(*argv, **kwargs):
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=kwargs.get("cwd"))  # fmt: skip


def test_sigterm_saves_and_exits_143_and_kill_9_loses_at_most_n_epochs(tmp_path):
    common = ["--device", "cpu", "--dataset", "iris", "--hidden", "8", "--epochs", "100000"]
    proc = _cli_run(*common, "--out", str(tmp_path / "t"), "--checkpoint-every", "1000000")
    _wait_for(lambda: (tmp_path / "t").exists())
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted; checkpoint (epoch" in err and "--resume" in err and "Traceback" not in err
    assert load_checkpoint(tmp_path / "t" / "checkpoint.npz")[1]["epoch"] > 0

    proc = _cli_run(*common, "--out", str(tmp_path / "k"), "--checkpoint-every", "10")
    _wait_for(lambda: (tmp_path / "k" / "checkpoint.npz").exists())
    time.sleep(0.3)
    proc.kill()
    proc.communicate(timeout=60)
    epoch = load_checkpoint(tmp_path / "k" / "checkpoint.npz")[1]["epoch"]
    assert epoch % 10 == 0 and epoch > 0


def test_json_reports_a_diverged_or_interrupted_run_as_metrics_json_does(tmp_path):
    """--json prints the summary on stdout for a run that ends early too (the status says
    how), beside the usual line on stderr and exit code."""
    out = tmp_path / "d"
    proc = _cli_run("--device", "cpu", "--dataset", "regression", "--optimizer", "sgd",
                    "--lr", "1e6", "--epochs", "50", "--json", "--out", str(out))  # fmt: skip
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.count("\n") == 1 and "diverged" in err, err
    assert "start a new run rather than resume it" in err  # epoch 2 is kept, but huge
    assert json.loads(stdout) == json.loads((out / "metrics.json").read_text())
    assert json.loads(stdout)["status"] == "diverged"

    out = tmp_path / "i"
    proc = _cli_run("--device", "cpu", "--dataset", "iris", "--hidden", "8", "--epochs",
                    "100000", "--json", "--out", str(out))  # fmt: skip
    _wait_for(lambda: (out / "checkpoint.npz").exists())
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "interrupted; checkpoint" in err, err
    summary = json.loads(stdout)
    assert summary["status"] == "interrupted" and summary["epochs"] > 0
    assert summary == json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("where", ["model.run.Run.start", "model.run.step_name",
                                   "model.run.Run.resume"])  # fmt: skip
def test_json_reports_an_interrupt_before_the_first_save(tmp_path, capsys, monkeypatch, where):
    """Ctrl-C while the data loads (no run yet) or while training sets up (a run folder,
    nothing saved): stdout still holds one JSON object, status interrupted, epoch 0, or
    null for a resume whose checkpoint was not read yet."""
    argv = ["--device", "cpu", "--dataset", "iris", "--json", "--out", str(tmp_path / "r")]
    epochs = 0
    if where.endswith("resume"):
        Run.start(RunConfig(**SMALL, epochs=1), tmp_path / "a").train("cpu")
        argv, epochs = ["--resume", str(tmp_path / "a"), "--epochs", "2", "--json"], None

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(where, interrupt)
    assert _cli.run(train.main, argv, train.FLAGS) == 130
    out, err = capsys.readouterr()
    assert json.loads(out) == {"status": "interrupted", "epochs": epochs, "paths": {}}
    assert err.count("\n") == 1 and err.startswith("interrupted"), err


def test_an_unfinished_run_says_its_model_file_is_not_written(tmp_path, capsys, monkeypatch):
    """--save is written when the run completes: an interrupted run says to give it again
    on resume, a diverged one that it was not written."""
    real_take = _snapshot_take()

    def take_then_interrupt(self, params, state, epoch, record):
        real_take(self, params, state, epoch, record)
        if epoch == 1:
            raise KeyboardInterrupt

    run, model = tmp_path / "r", tmp_path / "m.npz"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("model.run._DeviceSnapshot.take", take_then_interrupt)
        argv = ["--device", "cpu", "--dataset", "iris", "--hidden", "4", "--epochs", "5",
                "--out", str(run), "--save", str(model)]  # fmt: skip
        assert _cli.run(train.main, argv, train.FLAGS) == 130
    err = capsys.readouterr().err
    assert f"continue with --resume {run} --save {model} (the model files are written" in err
    assert not model.exists()
    argv = ["--device", "cpu", "--dataset", "regression", "--optimizer", "sgd", "--lr", "1e6",
            "--out", str(tmp_path / "d"), "--save", str(model)]  # fmt: skip
    assert _cli.run(train.main, argv, train.FLAGS) == 2
    err = capsys.readouterr().err
    assert f"({model} not written: the run did not complete)" in err and not model.exists()


def test_a_kept_epoch_whose_step_blew_up_is_not_offered_for_resuming(tmp_path):
    """lr 1e30 in float32: epoch 1's loss, taken before its steps, is finite, but its
    parameters (~1e29) are not worth resuming, and its validation loss says so."""
    config = RunConfig(dataset="regression", optimizer="sgd", lr=1e30, epochs=5)
    run = Run.start(config, tmp_path / "r")
    with pytest.raises(DivergenceError, match="at epoch 2"):
        run.train(get_backend("cpu", "float32"))
    assert run.kept() == (
        "epoch 1, the last finite one (its validation loss is nan, so start a new run rather "
        "than resume it),"
    )
    assert math.isfinite(run.history["loss"][0])


def test_the_model_line_says_the_batch_as_trained(tmp_path, caplog):
    """A batch size of at least the training rows is full batch, and the log says so."""
    caplog.set_level(logging.INFO, logger="handgrad")
    for batch, text in [(None, "full batch"), (16, "batch 16"),
                        (10**5, "batch 100000 >= the 120 rows: full batch")]:  # fmt: skip
        Run.start(RunConfig(**{**SMALL, "batch_size": batch}), tmp_path / f"r{batch}")
        assert caplog.records[-1].getMessage().endswith(f", float64, {text}")


def _wait_for(condition, timeout=60.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_ctrl_c_during_start_up_is_one_line_and_130(tmp_path):
    """SIGINT while train.py is still importing NumPy (right after its first import, _cli,
    is in place) or loading data: one line, status 130, no traceback. (Loading the data is
    made to wait for the signal: it takes milliseconds, and a fixed delay overshot it.)"""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); import _cli\n"
        "print('ready', flush=True)\n"
        "import train\n"
        "import time, model.data\n"
        "def loading(name):\n"
        "    print('loading', flush=True)\n"
        "    time.sleep(60)\n"
        "model.data.read_bundled = loading\n"
        "sys.exit(_cli.run(train.main, ['--device', 'cpu'], train.FLAGS))\n"
    )
    for wait_for in ("ready", "loading"):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=tmp_path)  # fmt: skip
        assert proc.stdout.readline() == "ready\n"
        if wait_for == "loading":
            assert proc.stdout.readline() == "loading\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        assert proc.returncode in (130, -signal.SIGINT), err  # a shell shows both as 130
        assert err.strip().splitlines()[-1] == "interrupted", err


_IMPORT_FAILS = {  # how NumPy / SciPy met a Ctrl-C while importing compiled code
    "chained": "try:\n    raise KeyboardInterrupt\nexcept KeyboardInterrupt:\n"
    "    raise ImportError('initialization failed')\n",
    "lost": "import os, signal, time\ntry:\n    os.kill(os.getpid(), signal.SIGINT)\n"
    "    time.sleep(5)\nexcept KeyboardInterrupt:\n    pass\n"
    "raise ImportError('PyCapsule_Import could not import module \"datetime\"')\n",
}


@pytest.mark.parametrize("where", ["module", "main"])
@pytest.mark.parametrize("how", sorted(_IMPORT_FAILS))
def test_ctrl_c_that_a_library_turns_into_an_import_error_is_one_line_and_130(tmp_path, how, where):
    """The ImportError comes with the KeyboardInterrupt as its context, or without it
    after a SIGINT: at module level (the excepthook) or inside main (_cli.run)."""
    body = _IMPORT_FAILS[how]
    if where == "module":
        code = f"import sys; sys.path.insert(0, 'scripts'); import _cli\n{body}"
    else:
        indented = "".join(f"    {line}\n" for line in body.splitlines())
        code = (f"import sys; sys.path.insert(0, 'scripts'); import _cli\n"
                f"def main(argv):\n{indented}\nsys.exit(_cli.run(main, []))\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)  # fmt: skip
    assert done.stderr == "interrupted\n" and done.returncode == 130, done.stderr


@pytest.mark.parametrize("resume, epochs", [(False, 0), (True, None)])
def test_json_reports_a_ctrl_c_during_the_imports(tmp_path, resume, epochs):
    """train.py --json promises one object on stdout: also when Ctrl-C lands while its
    imports run (here: as the backend switch is imported), before main runs."""
    argv = ["train.py", "--json", *(["--resume", str(tmp_path)] if resume else [])]
    code = (
        f"import sys; sys.path.insert(0, 'scripts'); sys.argv = {argv!r}\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'backends':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "import train\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)  # fmt: skip
    assert done.stderr == "interrupted\n", done.stderr
    assert json.loads(done.stdout) == {"status": "interrupted", "epochs": epochs, "paths": {}}


def test_a_bug_keeps_its_traceback_and_asks_to_be_reported(tmp_path):
    code = (
        "import sys; sys.path.insert(0, 'scripts'); import _cli, train\n"
        "train.start_run = lambda *args: 1 / 0\n"
        "sys.exit(_cli.run(train.main, ['--device', 'cpu']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    assert "ZeroDivisionError" in proc.stderr and "please report it" in proc.stderr


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_a_write_cut_short_keeps_the_previous_file_whole(tmp_path, failure):
    """A full disk, or a second Ctrl-C while a checkpoint is being saved."""
    target = tmp_path / "checkpoint.npz"
    target.write_bytes(b"old complete file")

    def cut_short(f):
        f.write(b"half of the new")
        raise failure

    with pytest.raises(type(failure)):
        atomic_write(target, cut_short)
    assert target.read_bytes() == b"old complete file"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]


def test_the_plot_of_a_loss_near_the_float_maximum_is_drawn_without_warnings(tmp_path):
    from model.report import plot_history

    path = plot_history(tmp_path / "loss.png", {"loss": [1e10, 1e300, 1.5e308]}, "mse")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_float64_data_on_numpy_is_trained_in_place_not_copied(tmp_path, monkeypatch):
    import model.run

    seen = {}
    real_fit = model.run.fit

    def spy(model_, params, X, Y, **kwargs):
        seen["X"], seen["X_val"] = X, kwargs["validation"][0]
        return real_fit(model_, params, X, Y, **kwargs)

    monkeypatch.setattr(model.run, "fit", spy)
    run = Run.start(RunConfig(**SMALL, epochs=1), tmp_path / "r")
    run.train(get_backend("cpu", "float64"))
    assert np.shares_memory(seen["X"], run.data.X)
    assert np.shares_memory(seen["X_val"], run.data.X_val)


def test_resume_refuses_data_that_changed(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    config = RunConfig(data=str(tmp_path / "d.npz"), epochs=2, dtype="float64")
    Run.start(config, tmp_path / "r").train("cpu")
    np.savez(tmp_path / "d.npz", X=X, y=1 - y)  # same shapes and classes, other labels
    with pytest.raises(CheckpointError, match="changed since the run was made") as info:
        Run.resume(tmp_path / "r", epochs=4)
    assert info.value.setting == "data"


def test_a_second_interrupt_waits_for_the_save(tmp_path):
    from model.signals import deferred_interrupts

    done = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the signal arrives here, and is held
        done.append("saved")
    assert done == ["saved"]


def test_train_takes_a_device_string_and_refuses_other_things(tmp_path):
    run = Run.start(RunConfig(**SMALL, epochs=1), tmp_path / "r")
    with pytest.raises(ConfigError, match="train\\(\\) takes a Backend"):
        run.train(123)
    assert run.train("cpu")["device"] == "cpu"


def test_an_empty_run_folder_may_be_used_but_one_with_files_may_not(tmp_path):
    (tmp_path / "empty").mkdir()
    Run.start(RunConfig(**SMALL, epochs=1), tmp_path / "empty").train("cpu")
    with pytest.raises(ConfigError, match="already exists"):
        Run.start(RunConfig(**SMALL, epochs=1), tmp_path / "empty")


def test_a_run_folder_in_use_by_another_live_process_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "r" / ".handgrad-run").write_text(f"{socket.gethostname()}-{other.pid}")
        with pytest.raises(ConfigError, match=f"in use by another handgrad process .*{other.pid}"):
            Run.start(RunConfig(**SMALL, epochs=1), tmp_path / "r")
    finally:
        other.kill()
        other.wait()
    run = Run.start(RunConfig(**SMALL, epochs=1), tmp_path / "r")  # its process is gone now
    run.train("cpu")
    assert not (tmp_path / "r" / ".handgrad-run").exists()  # released when training ended


def test_resuming_a_run_another_process_trains_names_resume_before_loading(tmp_path, capsys):
    """The folder being resumed is in use: one error naming --resume (not --out, which
    was not given), raised before the data is loaded."""
    Run.start(RunConfig(**SMALL, epochs=1), tmp_path / "r").train("cpu")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "r" / ".handgrad-run").write_text(f"{socket.gethostname()}-{other.pid}")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("model.run.prepare_data", lambda *a, **k: pytest.fail("data loaded"))
            argv = ["--resume", str(tmp_path / "r"), "--epochs", "2", "--device", "cpu"]
            assert _cli.run(train.main, argv, train.FLAGS) == 2
    finally:
        other.kill()
        other.wait()
    err = capsys.readouterr().err
    owner = f"{socket.gethostname()}-{other.pid}"
    assert f"in use by another handgrad process ({owner}, by its lock file .handgrad-run)" in err
    assert err.rstrip().endswith("(--resume)"), err


def test_a_moved_data_file_resumes_at_its_new_path_and_other_data_does_not(tmp_path):
    """The run's .npz moved: resuming without it says so; with its new path the run
    continues bit for bit (and records the move); a file with other rows is refused."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(90, 3)), rng.integers(0, 3, 90)
    np.savez(tmp_path / "a.npz", X=X, y=y)
    np.savez(tmp_path / "other.npz", X=X + 1, y=y)
    backend = get_backend("cpu", "float64")
    config = RunConfig(data=str(tmp_path / "a.npz"), hidden=(4,), batch_size=16, epochs=4,
                       dtype="float64")  # fmt: skip
    Run.start(config, tmp_path / "whole").train(backend)
    Run.start(dataclasses.replace(config, epochs=2), tmp_path / "r").train(backend)
    (tmp_path / "a.npz").rename(tmp_path / "b.npz")
    with pytest.raises(DataError, match=r"a\.npz is gone; if it moved, give its new path"):
        Run.resume(tmp_path / "r", epochs=4)
    np.savez(tmp_path / "many.npz", X=X, y=np.arange(90))  # 90 classes, not the run's 3
    for other in ("other.npz", "many.npz"):  # the data's change named, not its targets
        with pytest.raises(CheckpointError, match="its fingerprint differs"):
            Run.resume(tmp_path / "r", epochs=4, data=tmp_path / other)
    with pytest.raises(ConfigError, match="is an input of this run"):  # where it moved to
        Run.resume(tmp_path / "r", epochs=4, data=tmp_path / "b.npz",
                   save=tmp_path / "b.npz", overwrite=True)  # fmt: skip
    run = Run.resume(tmp_path / "r", epochs=4, data=tmp_path / "b.npz")
    summary = run.train(backend)
    assert summary["changes"][-1]["data"] == [str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]
    want, got = (load_checkpoint(tmp_path / f / "checkpoint.npz")[0].params for f in ("whole", "r"))
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_summaries_are_strict_json_with_nan_and_inf_as_null():
    """metrics.json and --json go through strict_json: a NaN score (a replica's
    validation on overflowing rows, say) must not make the file unreadable to jq."""

    def refuse(token):
        raise ValueError(f"non-strict JSON token {token}")

    text = strict_json({"loss": math.nan, "history": [1.5, math.inf], "pair": (-math.inf, 2)})
    assert json.loads(text, parse_constant=refuse) == {
        "loss": None, "history": [1.5, None], "pair": [None, 2]}  # fmt: skip


def test_a_kept_epoch_is_called_worth_resuming_unless_its_loss_blew_up(tmp_path):
    """The divergence message: the last finite epoch, and whether resuming it can help
    (its loss within 100x of the first epoch's)."""
    run = Run.start(RunConfig(dataset="iris", hidden=(4,), epochs=2), tmp_path / "r")
    run.saved_epoch = 3
    run.history = {"loss": [1.2, 0.9, 50.0]}
    assert run.kept() == "epoch 3, the last finite one,"
    run.history = {"loss": [1.2, 0.9, 1e5]}
    assert run.kept() == (
        "epoch 3, the last finite one (its loss 1e+05 against 1.2 in epoch 1, so start a "
        "new run rather than resume it),"
    )
