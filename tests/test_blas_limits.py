"""HANDGRAD_BLAS_THREADS and set_blas_threads refuse counts no machine can use (issue
24: 99999999999 was accepted and handed to the BLAS library, which truncated it)."""

from __future__ import annotations

import pytest

from backends import ConfigError
from backends.blas import ENV_VAR, blas_threads, set_blas_threads


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    yield
    set_blas_threads(None)


@pytest.mark.parametrize("cores", [1, 2, 64])
def test_absurd_thread_counts_are_refused(monkeypatch, cores):
    """The bound is 4 threads per core of os.cpu_count()."""
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    most = 4 * cores
    monkeypatch.setenv(ENV_VAR, str(most))
    assert blas_threads(10) == most
    set_blas_threads(most)
    assert blas_threads(10) == most
    set_blas_threads(None)
    for bad in (most + 1, 99999999999):
        monkeypatch.setenv(ENV_VAR, str(bad))
        message = (
            f"the environment variable {ENV_VAR}: BLAS threads must be at most {most} (4 per "
            f"core of this machine's {cores}), got '{bad}'; use at most {cores}, or 'default'"
        )
        with pytest.raises(ConfigError) as info:
            blas_threads(10)
        assert str(info.value) == message
        with pytest.raises(ConfigError, match=r"^set_blas_threads: BLAS threads must be at most"):
            set_blas_threads(bad)


def test_an_unknown_core_count_allows_four_threads(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: None)
    set_blas_threads(4)
    with pytest.raises(ConfigError, match="at most 4 "):
        set_blas_threads(5)


def test_an_infinite_thread_count_is_a_config_error_not_a_crash():
    """int(inf) raised OverflowError, a traceback asking to report a bug."""
    with pytest.raises(ConfigError, match="BLAS threads must be a positive integer or 'default'"):
        set_blas_threads(float("inf"))
