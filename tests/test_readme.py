"""The README stays true: its two set-up commands (CI runs the test one verbatim), its
library examples, and its train -> predict commands all run."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _commands():
    lines = README.splitlines()
    return [line.strip() for line in lines[:16] if line.startswith("    python3 -m venv")]


def _blocks(language: str) -> list[str]:
    return [part.split("\n```", 1)[0] for part in README.split(f"```{language}\n")[1:]]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    main_job, tests = _commands()
    assert main_job.endswith("scripts/train.py")
    assert tests.endswith("bash ci/test.sh")
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_readme_library_examples_run(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the run example writes runs/<timestamp>/ here
    blocks = _blocks("python")  # the 6th: a fragment
    run_example, core_example, layers_example, sweep_example = blocks[:4]
    exec(compile(run_example, "README.md", "exec"), {})
    validation, classes = capsys.readouterr().out.strip().splitlines()[-1].split("} ")
    assert eval(validation + "}")["accuracy"] > 0.9 and classes == "[0 1 2]"
    assert len(list((tmp_path / "runs").iterdir())) == 1
    exec(compile(core_example, "README.md", "exec"), {})
    loss_line, gradcheck_line = capsys.readouterr().out.strip().splitlines()[-2:]
    assert "'accuracy'" in loss_line
    assert max(eval(gradcheck_line).values()) < 1e-6
    exec(compile(layers_example, "README.md", "exec"), {})
    assert float(capsys.readouterr().out.strip().splitlines()[-1]) > 0.9  # training rows
    assert (tmp_path / "runs" / "custom.npz").is_file()
    exec(compile(sweep_example, "README.md", "exec"), {})
    best, accuracies = capsys.readouterr().out.strip().splitlines()[-1].split("} ")
    assert eval(best + "}")["by"] == "val_accuracy" and len(eval(accuracies)) == 4


def test_readme_train_then_predict_commands_run(tmp_path):
    block = next(b for b in _blocks("sh") if "scripts/predict.py" in b)
    for line in block.splitlines():
        argv = shlex.split(line)
        assert argv[0] == "python"
        argv = [
            sys.executable,
            *(str(ROOT / a) if a.startswith("scripts/") else a for a in argv[1:]),
        ]
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "HANDGRAD_DEVICE": "cpu"})  # fmt: skip
        assert proc.returncode == 0, (line, proc.stderr)
    # every file the commands wrote is under runs/, which git ignores in a checkout
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]
    table = np.loadtxt(tmp_path / "runs" / "predictions.csv", delimiter=",", skiprows=1)
    assert set(np.unique(table[:, 0])) <= {3, 4, 5} and table.shape == (178, 4)
    assert "accuracy" in proc.stdout and "confusion matrix" in proc.stdout


def test_readme_training_options_example_runs(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # it writes runs/<timestamp>/ here
    example = next(b for b in _blocks("python") if "EarlyStopping" in b)
    exec(compile(example, "README.md", "exec"), {})
    best, accuracy = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert 1 <= int(best) <= 60 and float(accuracy) > 0.9
