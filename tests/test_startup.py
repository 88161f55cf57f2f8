"""Start-up of the main job (issue 24): the default run took 2.2x the time of importing
scikit-learn, most of it importing scikit-learn (for the digits and the split) and pyplot.
What the scripts import is checked here; the times are measured by hand (docs/startup.md),
never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RUN = """
import json, runpy, sys
sys.argv = {argv!r}
sys.path.insert(0, {folder!r})  # as `python scripts/<script>` puts it first
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as exc:
    status = exc.code
heavy = ("sklearn", "scipy", "matplotlib", "matplotlib.pyplot", "tqdm", "torch")
print(json.dumps({{"status": status, "loaded": [m for m in heavy if m in sys.modules]}}))
"""


def _run(script: str, argv: list[str], cwd: Path) -> dict:
    folder = ROOT / "scripts"
    code = RUN.format(argv=[script, *argv], script=str(folder / script), folder=str(folder))
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "HANDGRAD_DEVICE": "cpu"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("startup")
    out = _run("train.py", ["--epochs", "3", "--out", str(folder / "run"), "--save",
                            str(folder / "m.npz"), "--quiet"], folder)  # fmt: skip
    assert out["status"] == 0
    return folder / "m.npz"


def test_the_default_job_imports_neither_scikit_learn_nor_pyplot(tmp_path):
    out = _run("train.py", ["--epochs", "3", "--out", str(tmp_path / "run")], tmp_path)
    assert out["status"] == 0
    assert out["loaded"] == ["matplotlib"], out  # for loss.png, without pyplot
    assert (tmp_path / "run" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predicting_imports_no_plotting_or_scikit_learn(tmp_path, model_file):
    import numpy as np

    np.savetxt(tmp_path / "rows.csv", np.random.default_rng(0).random((5, 64)), delimiter=",")
    out = _run("predict.py", [str(model_file), "--data", str(tmp_path / "rows.csv")], tmp_path)
    assert out == {"status": 0, "loaded": []}


def test_a_math_module_loads_no_run_file_or_plotting_module():
    """import model.activations (or the loop, model.fit) loads the math it needs, none of
    the run, data-file, folder, file-format or reporting modules, and nothing heavy."""
    code = (
        "import sys, json, model.activations, model.fit, model.layers, model.network\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('model', 'sklearn', "
        "'matplotlib', 'scipy')))))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    io = {"run", "config", "data", "folders", "files", "trained", "report", "sweep",
          "checkpoint", "streaming"}  # fmt: skip
    io = {f"model.{name}" for name in io}
    assert not loaded & io, loaded & io
    assert not {m for m in loaded if not m.startswith("model")}, loaded
