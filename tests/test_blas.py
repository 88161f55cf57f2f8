"""BLAS threads: the automatic choice, its two overrides, and that fit applies it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from backends import ConfigError, get_backend, host_rng
from backends.blas import ENV_VAR, SMALL_GEMM, blas_threads, limit_blas, set_blas_threads
from model import MLP, fit, make_optimizer


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    yield
    set_blas_threads(None)


def test_small_products_get_one_thread_large_ones_the_default():
    assert blas_threads(SMALL_GEMM) == 1
    assert blas_threads(SMALL_GEMM + 1) is None


def test_library_setting_beats_the_environment_which_beats_the_default(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "3")
    assert blas_threads(10) == 3
    monkeypatch.setenv(ENV_VAR, "default")
    assert blas_threads(10) is None
    set_blas_threads(2)
    assert blas_threads(10**9) == 2
    set_blas_threads("default")
    assert blas_threads(10) is None


@pytest.mark.parametrize("bad", ["0", "two", "1.5"])
def test_bad_thread_counts_are_refused(monkeypatch, bad):
    monkeypatch.setenv(ENV_VAR, bad)
    with pytest.raises(ConfigError, match=f"{ENV_VAR}: BLAS threads must be a positive integer"):
        blas_threads(10)
    with pytest.raises(ConfigError, match="set_blas_threads"):
        set_blas_threads(bad)


def test_the_limit_reaches_the_blas_library_and_is_undone():
    def threads():
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    before = threads()
    with limit_blas(1):
        assert threads() == {1}
    assert threads() == before


def test_fit_runs_under_the_threads_chosen_for_its_largest_product(monkeypatch):
    """digits-sized: batch 32 x 64 x 16 multiply-adds -> blas_threads gets exactly that."""
    seen = []
    fit_module = sys.modules["model.fit"]
    monkeypatch.setattr(fit_module, "blas_threads", lambda work: seen.append(work) or 1)
    b = get_backend("cpu", "float64")
    model = MLP((64, 16, 10), loss="cross_entropy")
    X = b.asarray(np.random.default_rng(0).random((40, 64)))
    y = b.asarray(np.arange(40) % 10, dtype=b.xp.int64)
    fit(
        model,
        model.init_params(b, host_rng(0)),
        X,
        y,
        optimizer=make_optimizer("sgd", 0.1),
        epochs=1,
        batch_size=32,
    )
    assert seen == [32 * 64 * 16]
