"""What a run shows people: its progress bar, its loss plot, its validation score, its
summary as strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from model.checkpoint import atomic_write

__all__ = ["draw_plot", "plot_history", "progress_bar", "score_text", "strict_json"]


def strict_json(value, **kwargs) -> str:
    """``json.dumps(value)`` with every NaN or infinite float written as null: strict
    JSON (Python writes NaN and Infinity, which jq and JavaScript refuse)."""

    def finite(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(value), allow_nan=False, **kwargs)


def score_text(validation: dict) -> str:
    """``validation accuracy 0.9639`` (classifiers), ``validation loss 0.01`` (others)."""
    if "accuracy" in validation:
        return f"validation accuracy {validation['accuracy']:.4f}"
    return f"validation loss {validation['loss']:.4g}" if validation else "no validation split"


def progress_bar(total: int, *, initial: int = 0, desc: str | None = None):
    """A tqdm bar of epochs on stderr, drawn only when stderr is a terminal; otherwise a
    bar that draws nothing (and tqdm is not imported)."""
    import sys

    if not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="epoch", file=sys.stderr, desc=desc)


class _NoBar:
    """The part of tqdm's bar the callers use, doing nothing (tqdm's ``disable=True``)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def plot_history(path: Path, history: dict, loss_name: str) -> Path:
    """Training and validation loss per epoch, written atomically as a PNG."""

    def draw(ax):
        epochs = np.arange(1, len(history["loss"]) + 1)
        ax.plot(epochs, history["loss"], label="training")
        if history.get("val_loss"):
            ax.plot(epochs, history["val_loss"], label="validation")
        ax.set_yscale("log" if min(history["loss"]) > 0 else "linear")
        ax.set_title("handgrad training")

    return draw_plot(path, draw, f"{loss_name} loss")


def draw_plot(path: Path, draw, ylabel: str) -> Path:
    """A 6 x 4 in loss-per-epoch figure that ``draw(ax)`` fills in, with axis labels, grid
    and legend, written atomically as a PNG.

    Drawn with matplotlib's object API (a Figure on an Agg canvas), not pyplot: pyplot
    would switch the process's backend (a notebook's included) and keep the figure in its
    registry, and the figure is the same pixel for pixel. matplotlib is imported here, when
    a plot is drawn: importing it takes ~0.25 s (2 cores), drawing and saving this figure
    ~0.1 s, of which the tight layout's first text measurement (fonts, mathtext tick
    labels) is half; only a missing font cache (matplotlib's first run, or a cache folder it
    cannot write) costs more."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    # Losses near the float maximum overflow the log scale's margins: not an error.
    with np.errstate(all="ignore"):
        draw(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        return atomic_write(path, lambda f: fig.savefig(f, format="png"))
