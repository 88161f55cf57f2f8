"""The validation split, ported from scikit-learn's train_test_split to NumPy (issue 24:
importing scikit-learn took most of the default job's start-up). A run folder is resumed
by re-running the split from its stored seed, so the port must give scikit-learn's rows,
in scikit-learn's order, for every split a run can ask for."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import train_test_split

from model.data import DataError, _approximate_mode, load_dataset, split_rows

FRACTIONS = (0.01, 0.05, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.7, 0.9, 0.99)
SEEDS = (0, 1, 7, 123456, 2**32 - 1)


def sklearn_split(y, fraction, seed, stratify):
    return train_test_split(
        np.arange(y.shape[0]),
        test_size=fraction,
        random_state=seed,
        stratify=y if stratify else None,
    )


def assert_same_split(y, fraction, seed, stratify, case: str = "") -> bool:
    """The port equals scikit-learn where split_rows accepts the split; False where
    split_rows refuses it (as a DataError naming val_split)."""
    try:
        got = split_rows(y, fraction, seed, stratify)
    except DataError as exc:
        assert exc.setting == "val_split"
        return False
    want = sklearn_split(y, fraction, seed, stratify)
    where = f"{case} n={y.shape[0]} fraction={fraction} seed={seed} stratify={stratify}"
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape, where
        np.testing.assert_array_equal(g, w, err_msg=where)
    return True


def layouts(n: int, rng) -> dict[str, np.ndarray]:
    """Class labels of n rows: balanced, unbalanced, rare classes, labels with gaps."""
    out = {"two classes": np.arange(n) % 2}
    if n >= 6:
        out["balanced, shuffled"] = rng.permutation(np.arange(n) % 3)
    if n >= 10:
        share = 0.5 ** np.arange(1, 6)
        counts = np.maximum(2, np.floor(share / share.sum() * n)).astype(int)
        counts[0] += n - counts.sum()
        if counts[0] >= 2:
            out["geometric"] = rng.permutation(np.repeat(np.arange(5), counts))
        rare = np.zeros(n, dtype=np.int64)
        rare[rng.choice(n, 4, replace=False)] = [1, 1, 2, 2]  # two classes of 2 rows
        out["two rare classes"] = rare
        gaps = rng.choice([0, 3, 4, 9], size=n)  # classes absent from y (a resumed run's)
        if np.bincount(gaps)[[0, 3, 4, 9]].min() >= 2:
            out["labels with gaps"] = gaps
    if n >= 40:
        out["many classes"] = rng.permutation(np.arange(n) % (n // 4))
    return out


def test_the_default_runs_split_is_unchanged():
    """digits, validation 0.2, seed 0, stratified: the rows every default run trained on
    (pinned too, so that neither the port nor scikit-learn can move them unnoticed)."""
    _, y = load_dataset("digits")
    train, val = split_rows(y, 0.2, 0, True)
    want = sklearn_split(y, 0.2, 0, True)
    np.testing.assert_array_equal(train, want[0])
    np.testing.assert_array_equal(val, want[1])
    assert train.shape == (1437,) and val.shape == (360,)
    assert val[:10].tolist() == [1496, 188, 705, 820, 413, 744, 1466, 500, 254, 1750]
    digest = hashlib.sha256(train.astype("<i8").tobytes() + val.astype("<i8").tobytes())
    assert digest.hexdigest() == "c2c37eddf53c5760fcdd74abac61600a5d88406ff48a08fa172800c1236593b6"


@pytest.mark.parametrize("name", ["iris", "wine", "breast-cancer", "xor"])
def test_every_bundled_classifiers_split_is_scikit_learns(name):
    _, y = load_dataset(name)
    for fraction in FRACTIONS:
        for seed in SEEDS:
            assert_same_split(y, fraction, seed, True)


def test_stratified_splits_are_scikit_learns_over_many_layouts():
    rng = np.random.default_rng(24)
    accepted = refused = 0
    for n in (2, 3, 4, 5, 7, 10, 11, 17, 40, 50, 101, 333, 1000):
        for layout, y in layouts(n, rng).items():
            for fraction in FRACTIONS:
                for seed in SEEDS:
                    if assert_same_split(y.astype(np.int64), fraction, seed, True, layout):
                        accepted += 1
                    else:
                        refused += 1
    assert accepted > 1400 and refused > 500, (accepted, refused)  # both kinds were tried


def test_unstratified_splits_are_scikit_learns():
    """Regression targets, (n, k) float: the split looks at the row count alone."""
    for n in (2, 3, 5, 10, 99, 442, 1000):
        y = np.linspace(-1, 1, 2 * n).reshape(n, 2)
        for fraction in FRACTIONS:
            for seed in SEEDS:
                if n * fraction <= n - 1:
                    assert_same_split(y, fraction, seed, False)


@settings(max_examples=150, deadline=None)
@given(
    counts=st.lists(st.integers(2, 40), min_size=1, max_size=8),
    fraction=st.floats(0.005, 0.995),
    seed=st.integers(0, 2**32 - 1),
    shuffle=st.integers(0, 2**32 - 1),
)
def test_any_class_layout_splits_as_scikit_learn_does(counts, fraction, seed, shuffle):
    y = np.random.default_rng(shuffle).permutation(np.repeat(np.arange(len(counts)), counts))
    assert_same_split(y, fraction, seed, len(counts) > 1)


def test_approximate_mode_is_scikit_learns():
    from sklearn.utils.extmath import _approximate_mode as want

    rng = np.random.default_rng(0)
    for _ in range(300):
        counts = rng.integers(1, 30, size=rng.integers(1, 9))
        draws = int(rng.integers(0, counts.sum() + 1))
        seed = int(rng.integers(0, 2**31))
        got = _approximate_mode(counts, draws, np.random.RandomState(seed))
        expected = want(counts, draws, np.random.RandomState(seed))
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_splitting_does_not_import_scikit_learn():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "import numpy as np\n"
        "from model.data import split_rows\n"
        "split_rows(np.arange(100) % 4, 0.2, 0, True)\n"
        "split_rows(np.zeros((100, 1)), 0.2, 0, False)\n"
        "assert 'sklearn' not in sys.modules, 'split_rows imported scikit-learn'\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
