"""The backend switch: device strings, errors that name the fix, host-seeded init."""

from __future__ import annotations

import logging
import sys
import types

import numpy as np
import pytest
from helpers import assert_on

import backends
from backends import ConfigError, DeviceUnavailableError, get_backend, host_rng
from backends.comm import rank_device
from model import MLP


@pytest.fixture
def fake_cupy(monkeypatch):
    """Install a stand-in ``cupy`` module; yields a setter for its device count/failure."""

    def install(count=0, error=None):
        runtime = types.SimpleNamespace()

        def get_device_count():
            if error:
                raise error
            return count

        runtime.getDeviceCount = get_device_count
        fake = types.ModuleType("cupy")
        fake.cuda = types.SimpleNamespace(runtime=runtime)
        fake.float32, fake.arange = np.float32, np.arange  # the probe's tiny kernel
        monkeypatch.setitem(sys.modules, "cupy", fake)
        backends.probe_cuda.cache_clear()

    yield install
    backends.probe_cuda.cache_clear()


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    backends.probe_cuda.cache_clear()
    yield
    backends.probe_cuda.cache_clear()


def test_backend_has_its_parts(backend, xp):
    assert backend.xp is xp
    assert backend.dtype == xp.float64
    assert repr(backend) == f"Backend({backend.name}, {backend.spec}, float64)"
    assert backend.with_dtype("float32").dtype == xp.float32


def test_asarray_round_trip_keeps_values_dtype_device(backend):
    host = np.random.default_rng(1).normal(size=(3, 4))
    for dtype in ("float32", "float64"):
        b = backend.with_dtype(dtype)
        a = b.asarray(host)
        assert_on(b, a)
        back = b.to_numpy(a)
        assert isinstance(back, np.ndarray)
        assert back.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(back, host.astype(dtype))


def test_copies_both_ways_so_updates_never_touch_host_data(backend):
    host = np.ones(3)
    a = backend.asarray(host)
    a -= 1.0
    np.testing.assert_array_equal(host, [1.0, 1.0, 1.0])
    back = backend.to_numpy(a)
    a += 5.0
    np.testing.assert_array_equal(back, [0.0, 0.0, 0.0])


def test_asarray_integer_labels(backend, xp):
    labels = backend.asarray(np.array([0, 2, 1]), dtype=xp.int64)
    assert_on(backend, labels, xp.int64)
    np.testing.assert_array_equal(backend.to_numpy(labels), [0, 2, 1])


def test_host_seeded_init_is_identical_on_every_backend(other_backend):
    model = MLP((5, 7, 3), activation="relu", loss="cross_entropy")
    for dtype in ("float32", "float64"):
        b = other_backend.with_dtype(dtype)
        got = model.init_params(b, host_rng(42))
        ref = model.init_params(get_backend("cpu", dtype), host_rng(42))
        assert got.keys() == ref.keys()
        for name in ref:
            assert_on(b, got[name])
            np.testing.assert_array_equal(b.to_numpy(got[name]), ref[name])


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu:0", "", "cuda:-1"])
def test_unknown_device_lists_valid_ones(bad):
    with pytest.raises(
        ValueError, match=r"unknown device .*valid devices: cpu, cuda, cuda:N, auto"
    ):
        get_backend(bad)


def test_unknown_strict_device_lists_valid_ones():
    with pytest.raises(ValueError, match="strict:device1"):
        get_backend("strict:nowhere")


def test_unknown_dtype():
    with pytest.raises(ValueError, match=r"unknown dtype 'float16'; use one of: float32, float64"):
        get_backend("cpu", "float16")


def test_cuda_without_cupy_names_the_extras(no_cupy):
    with pytest.raises(
        DeviceUnavailableError, match=r"-e '\.\[train,cuda12\]'.*-e '\.\[train,cuda13\]'"
    ):
        get_backend("cuda")


def test_cuda_with_cupy_but_no_gpu_gives_cudas_reason(fake_cupy):
    fake_cupy(error=RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected"))
    with pytest.raises(DeviceUnavailableError, match="no CUDA-capable device is detected"):
        get_backend("cuda:0")


def test_cuda_index_beyond_count_says_how_many(fake_cupy):
    fake_cupy(count=2)
    with pytest.raises(
        DeviceUnavailableError, match=r"only 2 CUDA device\(s\) found; use cuda:0 to cuda:1"
    ):
        get_backend("cuda:2")


def test_auto_without_cupy_picks_cpu_and_says_so(no_cupy, caplog):
    with caplog.at_level(logging.INFO, logger="handgrad"):
        b = get_backend("auto")
    assert b.name == "numpy"
    assert "using cpu" in caplog.text


def test_auto_with_broken_cuda_warns(fake_cupy):
    fake_cupy(error=RuntimeError("driver too old"))
    with pytest.warns(RuntimeWarning, match="driver too old"):
        assert get_backend("auto").name == "numpy"


def test_environment_variable_sets_default(monkeypatch):
    monkeypatch.setenv("HANDGRAD_DEVICE", "strict:device1")
    assert get_backend().spec == "strict:device1"
    monkeypatch.setenv("HANDGRAD_DEVICE", "nonsense")
    with pytest.raises(ConfigError, match=r"'nonsense'.*environment variable HANDGRAD_DEVICE"):
        get_backend()
    assert get_backend("cpu").spec == "cpu"  # an explicit device wins over the variable
    monkeypatch.setenv("HANDGRAD_DEVICE", " ")  # blank: unset, as the other variables
    assert get_backend("cpu").spec == "cpu" and get_backend().spec in ("cpu", "cuda:0")
    assert rank_device(None, 1, 0) == "auto" and rank_device(None, 1, 2) == "cuda:1"  # MPI too
    monkeypatch.setenv("HANDGRAD_DEVICE", " CPU ")
    assert rank_device(None, 1, 2) == "cpu"
