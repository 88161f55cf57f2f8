"""The bundled datasets, read from scikit-learn's files without importing scikit-learn
(issue 24: importing it took most of the default job's start-up): the arrays are those of
scikit-learn's own loaders, bit for bit."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn import datasets
from sklearn.preprocessing import scale

from model import data
from model.data import DataError, load_dataset, read_bundled

ROOT = Path(__file__).resolve().parents[1]
LOADERS = {
    "digits": datasets.load_digits,
    "iris": datasets.load_iris,
    "wine": datasets.load_wine,
    "breast-cancer": datasets.load_breast_cancer,
    "regression": datasets.load_diabetes,
}


def assert_identical(got: np.ndarray, want: np.ndarray) -> None:
    """Same shape, dtype and bits (so -0.0 differs from 0.0, and NaN equals NaN)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


@pytest.mark.parametrize("name", list(LOADERS))
def test_bundled_arrays_are_scikit_learns(name):
    X, y = read_bundled(name)
    X_want, y_want = LOADERS[name](return_X_y=True)
    assert_identical(X, X_want)
    assert_identical(y, y_want)


@pytest.mark.parametrize("name", list(LOADERS))
def test_load_dataset_is_unchanged(name):
    """What load_dataset returned when it called scikit-learn's loaders."""
    X_want, y_want = LOADERS[name](return_X_y=True)
    if name == "digits":
        X_want = X_want / 16.0
    if name == "regression":
        y_want = (y_want - y_want.mean()) / y_want.std()
    X, y = load_dataset(name)
    assert_identical(X, X_want.astype(np.float64))
    assert_identical(y, y_want)


def test_no_bundled_dataset_imports_scikit_learn():
    code = (
        "import sys\n"
        "from model.data import load_dataset, DATASETS\n"
        "for name in DATASETS:\n"
        "    load_dataset(name)\n"
        "assert 'sklearn' not in sys.modules, sorted(m for m in sys.modules if 'sklearn' in m)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_another_layout_falls_back_to_scikit_learns_loader(monkeypatch, tmp_path):
    fake = importlib.util.spec_from_file_location(
        "sklearn", tmp_path / "__init__.py", submodule_search_locations=[str(tmp_path)]
    )
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: fake)
    X, y = read_bundled("wine")  # no file under tmp_path: scikit-learn reads it
    X_want, y_want = datasets.load_wine(return_X_y=True)
    assert_identical(X, X_want)
    assert_identical(y, y_want)


def test_without_scikit_learn_the_error_names_the_fix(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="scikit-learn is not installed; install it") as info:
        load_dataset("digits")
    assert info.value.setting == "dataset"
    X, _ = load_dataset("xor")  # made here, not scikit-learn's
    assert X.shape == (400, 2)


@pytest.mark.parametrize("offset", [0.0, 1e10, -3e12])
def test_scale_is_scikit_learns_step_for_step(offset):
    """Including the re-centring branches, which large offsets take, and a constant
    column."""
    rng = np.random.default_rng(int(abs(offset)) % 1000)
    X = rng.normal(size=(97, 4)) * [1.0, 1e-3, 50.0, 0.0] + offset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Numerical issues were encountered"
        want = scale(X.copy(), copy=False)
    assert_identical(data._scale(X.copy()), want)
