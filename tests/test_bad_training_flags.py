"""Every bad value of the flags of L-BFGS, the schedules, early stopping and clipping,
through scripts/train.py as a user runs it: exit status 2, one ``error:`` line naming the
problem and the flag, nothing on stdout, no run folder made, before any data is read
(tests/test_bad_input.py's contract)."""

from __future__ import annotations

import json
import re

import _cli
import numpy as np
import pytest
import train

BAD = {
    # case: (argv, text the error line must contain)
    "unknown schedule": (["--schedule", "nope"], "unknown schedule 'nope'; use one of: constant"),
    "step size 0": (["--schedule", "step", "--lr-step-size", "0"],
                    "lr_step_size must be an integer >= 1, got 0 (--lr-step-size)"),
    "step size 2.5": (["--schedule", "step", "--lr-step-size", "2.5"],
                      "argument --lr-step-size: invalid int value"),
    "factor 0": (["--schedule", "step", "--lr-factor", "0"], "lr_factor must be a number > 0"),
    "factor 1": (["--schedule", "plateau", "--lr-factor", "1"], "and < 1, got 1.0 (--lr-factor)"),
    "factor nan": (["--schedule", "step", "--lr-factor", "nan"], "lr_factor must be a number (fin"),
    "patience -1": (["--schedule", "plateau", "--lr-patience", "-1"],
                    "lr_patience must be an integer >= 0, got -1 (--lr-patience)"),
    "threshold -0.1": (["--schedule", "plateau", "--lr-threshold", "-0.1"],
                       "lr_threshold must be a number >= 0"),
    "threshold inf": (["--schedule", "plateau", "--lr-threshold", "inf"], "(finite), got inf"),
    "power 0": (["--schedule", "invscaling", "--lr-power", "0"], "lr_power must be a number > 0"),
    "power -1": (["--schedule", "invscaling", "--lr-power", "-1"], "got -1.0 (--lr-power)"),
    "lr min -1": (["--schedule", "cosine", "--lr-min", "-1"], "lr_min must be a number >= 0"),
    "lr min above lr": (["--schedule", "cosine", "--lr", "0.1", "--lr-min", "0.5"],
                        "floor lr_min (0.5) must be below the learning rate (0.1) (--lr-min)"),
    "lr min equal to lr": (["--schedule", "plateau", "--lr", "0.1", "--lr-min", "0.1"],
                           "must be below the learning rate"),
    "period 0": (["--schedule", "cosine", "--lr-period", "0"], "lr_period must be an integer >= 1"),
    "factor without its schedule": (["--lr-factor", "0.5"],
                                    "lr_factor is a parameter of the step and plateau schedules, "
                                    "not of 'constant'"),
    "patience for step": (["--schedule", "step", "--lr-patience", "3"],
                          "lr_patience is a parameter of the plateau schedule, not of 'step'"),
    "period for step": (["--schedule", "step", "--lr-period", "5"], "(--lr-period)"),
    "early stopping 0": (["--early-stopping", "0"],
                         "early_stopping must be an integer >= 1, got 0 (--early-stopping)"),
    "early stopping -2": (["--early-stopping", "-2"], "got -2 (--early-stopping)"),
    "early stopping x": (["--early-stopping", "x"], "argument --early-stopping: invalid int"),
    "min delta -1": (["--early-stopping", "3", "--min-delta", "-1"],
                     "min_delta must be a number >= 0, got -1.0 (--min-delta)"),
    "min delta nan": (["--early-stopping", "3", "--min-delta", "nan"], "(finite), got nan"),
    "min delta alone": (["--min-delta", "0.1"], "min_delta is early stopping's"),
    "clip 0": (["--clip-grad", "0"], "clip_grad must be a number > 0, got 0.0 (--clip-grad)"),
    "clip -1": (["--clip-grad", "-1"], "clip_grad must be a number > 0, got -1.0"),
    "clip inf": (["--clip-grad", "inf"], "clip_grad must be a number (finite), got inf"),
    "clip nan": (["--clip-grad", "nan"], "clip_grad must be a number (finite), got nan"),
    "lbfgs with minibatches": (["--optimizer", "lbfgs", "--batch-size", "8"],
                               "optimizer 'lbfgs' is full-batch"),
    "lbfgs with a schedule": (["--optimizer", "lbfgs", "--schedule", "cosine"],
                              "optimizer 'lbfgs' takes no schedule"),
    "lbfgs with clipping": (["--optimizer", "lbfgs", "--clip-grad", "1"],
                            "optimizer 'lbfgs' takes no clip grad"),
    "lbfgs with dropout": (["--optimizer", "lbfgs", "--dropout", "0.2"],
                           "optimizer 'lbfgs' takes no dropout"),
    "lbfgs lr 0": (["--optimizer", "lbfgs", "--lr", "0"], "lr must be a number > 0"),
    "sweep of early stopping 0": (["--sweep", "early-stopping=2,0"],
                                  "sweep: early_stopping must be an integer >= 1"),
    "sweep of an unknown schedule": (["--sweep", "schedule=constant,bogus"],
                                     "sweep: unknown schedule 'bogus'"),
    "sweep of clip -1": (["--sweep", "clip-grad=1,-1"], "sweep: clip_grad must be a number > 0"),
    "sweep of a step size not an integer": (["--sweep", "lr-step-size=2,x"],
                                            "has a value that is not an integer"),
    "schedule beside a sweep of it": (["--schedule", "step", "--sweep", "schedule=constant,step"],
                                      "both set it"),
}  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("bad")


def _run(capsys, argv):
    try:
        rc = _cli.run(train.main, argv, train.FLAGS)
    except SystemExit as exc:  # argparse exits by itself
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("case", BAD)
def test_bad_value_exits_2_with_one_line_and_trains_nothing(capsys, monkeypatch, folder, case):
    monkeypatch.chdir(folder)
    argv, message = BAD[case]
    rc, out, err = _run(capsys, [*argv, "--device", "cpu", "--out", str(folder / "new")])
    lines = err.splitlines()
    assert rc == 2 and out == "", err
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert re.search(r"(^| |\()--[a-z]", lines[0]), "the line names no flag"
    assert not (folder / "new").exists() and not (folder / "runs").exists()


def test_bce_on_a_matrix_that_is_not_0_1_is_refused(capsys, tmp_path):
    path = tmp_path / "wide.npz"
    np.savez(path, X=np.zeros((10, 2)), y=np.full((10, 3), 0.5))
    rc, out, err = _run(capsys, ["--data", str(path), "--loss", "bce", "--device", "cpu",
                                 "--out", str(tmp_path / "r")])  # fmt: skip
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "takes a matrix of 0s and 1s" in err and "(--loss)" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "flags, setting",
    [
        (["--schedule", "step"], "schedule"),
        (["--early-stopping", "5"], "early_stopping"),
        (["--clip-grad", "2"], "clip_grad"),
        (["--lr-min", "0.0001"], "lr_min"),
    ],
)
def test_resume_refuses_to_change_how_the_run_trains(capsys, tmp_path, flags, setting):
    r = str(tmp_path / "r")
    common = ["--device", "cpu", "--dataset", "iris", "--quiet"]
    assert _run(capsys, [*common, "--epochs", "2", "--out", r, "--schedule", "cosine"])[0] == 0
    before = (tmp_path / "r" / "checkpoint.npz").read_bytes()
    rc, out, err = _run(capsys, ["--resume", r, *common, "--epochs", "4", *flags])
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert f"{setting} cannot change when resuming" in err
    assert (tmp_path / "r" / "checkpoint.npz").read_bytes() == before
    info = json.loads(str(np.load(tmp_path / "r" / "checkpoint.npz")["meta"]))
    assert info["training"]["config"]["schedule"] == "cosine"
