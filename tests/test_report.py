"""The loss plot (model/report.py), drawn with matplotlib's object API instead of pyplot
(issue 24): the same picture, pixel for pixel, and no change to the process's matplotlib
state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.report import plot_history

ROOT = Path(__file__).resolve().parents[1]

DECAY = np.exp(-np.arange(40) / 9.0)
HISTORIES = {
    "log, with validation": ({"loss": list(DECAY), "val_loss": list(1.1 * DECAY**0.8)},
                             "cross_entropy"),
    "linear, training only": ({"loss": [0.5, 0.0, 0.25, 0.125]}, "mse"),
}  # fmt: skip


def _pyplot_png(path: Path, history: dict, loss_name: str) -> None:
    """The plot as the pyplot version of draw_plot drew it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], label="training")
    if history.get("val_loss"):
        ax.plot(epochs, history["val_loss"], label="validation")
    ax.set_yscale("log" if min(history["loss"]) > 0 else "linear")
    ax.set_title("handgrad training")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{loss_name} loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


@pytest.mark.parametrize("case", list(HISTORIES))
def test_the_plot_is_the_pyplot_plot_pixel_for_pixel(tmp_path, case):
    from matplotlib.image import imread

    history, loss_name = HISTORIES[case]
    written = plot_history(tmp_path / "loss.png", history, loss_name)
    _pyplot_png(tmp_path / "pyplot.png", history, loss_name)
    got, want = imread(written), imread(tmp_path / "pyplot.png")
    assert got.shape == want.shape == (400, 600, 4)
    np.testing.assert_array_equal(got, want)


def test_drawing_leaves_the_callers_matplotlib_alone(tmp_path):
    """The pyplot version switched the process's backend to Agg (a notebook's too)."""
    code = (
        "import sys, matplotlib\n"
        "matplotlib.use('svg')\n"
        "from model.report import plot_history\n"
        f"plot_history({str(tmp_path / 'loss.png')!r}, {{'loss': [1.0, 0.5]}}, 'mse')\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_progress_bar_is_tqdms_on_a_terminal_and_nothing_elsewhere(monkeypatch):
    """Elsewhere tqdm is not even imported (it was, to draw nothing)."""
    import io

    from tqdm import tqdm

    from model.report import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = progress_bar(3, initial=1, desc="cpu")
    bar.update(1)
    bar.set_postfix({"loss": "0.5"})
    bar.close()
    assert isinstance(bar, tqdm) and "cpu" in sys.stderr.getvalue()
    assert "2/3" in sys.stderr.getvalue() and "loss=0.5" in sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress_bar(3) as bar:
        bar.update()
        bar.set_postfix({"loss": "0.5"})
    bar.close()
    assert sys.stderr.getvalue() == ""
