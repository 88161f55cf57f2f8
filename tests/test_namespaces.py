"""Every array API namespace through the backend switch: PyTorch and JAX device strings,
errors that name the fix (the libraries simulated missing, or without a GPU), dtypes,
host round trips; and the immutability guard (tests/immutable.py), which proves on NumPy
that training does not rely on mutation, as JAX needs."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import types

import array_api_compat
import numpy as np
import pytest
from conftest import ROOT
from helpers import assert_close, assert_on, host
from immutable import ImmutableArray, immutable_backend
from immutable import xp as immutable_xp

import backends
from backends import ConfigError, DeviceUnavailableError, get_backend, host_rng, to_numpy
from backends.transfer import host_batches, take_rows
from model import MLP, SGD, evaluate, fit, gradcheck_model, make_optimizer

LIBRARIES = {
    "torch": ("PyTorch", "torch", "torch:cuda", "torch:cuda:1", "torch:mps"),
    "jax": ("JAX", "jax", "jax:cpu", "jax:gpu", "jax:gpu:1"),
}


def _installed(name: str):
    return pytest.importorskip(name, reason=f"{name} is not installed: pip install -e '.[{name}]'")


# ----------------------------------------------------------------- device strings, errors


@pytest.mark.parametrize("name", list(LIBRARIES))
def test_a_missing_library_names_its_extra(monkeypatch, name):
    label, *specs = LIBRARIES[name]
    monkeypatch.setitem(sys.modules, name, None)  # makes `import torch` raise ImportError
    for spec in specs:
        with pytest.raises(
            DeviceUnavailableError,
            match=rf"^device '{spec}' needs {label}: it is not installed\. Install it with "
            rf"pip install -e '\.\[{name}\]' in the handgrad checkout, or use device 'cpu'$",
        ):
            get_backend(spec)


def test_a_missing_library_from_the_environment_says_where_the_device_came_from(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    monkeypatch.setenv("HANDGRAD_DEVICE", "jax")
    with pytest.raises(DeviceUnavailableError, match=r"\.\[jax\].*HANDGRAD_DEVICE='jax'"):
        get_backend()


def test_a_broken_install_says_how_it_failed(monkeypatch):
    real = backends.importlib.import_module

    def import_module(name, *args):
        if name == "torch":
            raise OSError("libtorch_cpu.so: cannot open shared object file")
        return real(name, *args)

    monkeypatch.setattr(backends.importlib, "import_module", import_module)
    with pytest.raises(DeviceUnavailableError, match=r"failed to import \(OSError: libtorch"):
        get_backend("torch")


def test_the_grid_skips_a_missing_library_with_the_fix(monkeypatch):
    from conftest import require_device

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(pytest.skip.Exception, match=r"pip install -e '\.\[torch\]'"):
        require_device("torch")


@pytest.mark.parametrize(
    "bad",
    [
        "torch:",
        "torch:cuda:",
        "torch:cuda:x",
        "torch:mps:0",
        "torch:tpu",
        "torchx",
        "jax:",
        "jax:tpu",
        "jax:cpu:0",
        "jax:gpu:-1",
        "jaxx",
    ],
)
def test_unknown_torch_and_jax_strings_list_the_valid_devices(bad):
    with pytest.raises(
        ConfigError,
        match=r"unknown device .*valid devices: cpu, cuda, cuda:N, auto, strict, strict:device1, "
        r"torch, torch:cpu, torch:cuda, torch:cuda:N, torch:mps, jax, jax:cpu, jax:gpu, jax:gpu:N$",
    ):
        get_backend(bad)


def _fake_torch(monkeypatch, *, cuda: int = 0, cuda_build: bool = True, mps: bool = False):
    """A stand-in ``torch`` with ``cuda`` CUDA devices (a CPU-only build without
    ``cuda_build``) and MPS or not: enough for the switch to refuse a device."""
    fake = types.ModuleType("torch")
    fake.cuda = types.SimpleNamespace(is_available=lambda: cuda > 0, device_count=lambda: cuda)
    fake.version = types.SimpleNamespace(cuda="12.8" if cuda_build else None)
    fake.backends = types.SimpleNamespace(mps=types.SimpleNamespace(is_available=lambda: mps))
    monkeypatch.setitem(sys.modules, "torch", fake)


def test_torch_cuda_without_cuda_says_why(monkeypatch):
    _fake_torch(monkeypatch, cuda_build=False)
    with pytest.raises(
        DeviceUnavailableError,
        match=r"^device 'torch:cuda': this PyTorch is a "
        r"CPU-only build\. Install a CUDA build.*or use device 'torch'",
    ):
        get_backend("torch:cuda")
    _fake_torch(monkeypatch, cuda_build=True)
    with pytest.raises(DeviceUnavailableError, match="PyTorch finds no usable CUDA GPU or driver"):
        get_backend("torch:cuda:0")


def test_torch_cuda_index_beyond_count_says_how_many(monkeypatch):
    _fake_torch(monkeypatch, cuda=2)
    with pytest.raises(
        DeviceUnavailableError,
        match=r"^device 'torch:cuda:2': only 2 CUDA device\(s\) found; use torch:cuda:0 to "
        r"torch:cuda:1$",
    ):
        get_backend("torch:cuda:2")


def test_torch_mps_without_mps_and_mps_float64_are_refused(monkeypatch):
    _fake_torch(monkeypatch, mps=False)
    with pytest.raises(
        DeviceUnavailableError,
        match=r"PyTorch finds no MPS device.*use device "
        "'torch'",
    ):
        get_backend("torch:mps")
    _fake_torch(monkeypatch, mps=True)
    with pytest.raises(ConfigError, match=r"'torch:mps' has no float64.*use dtype float32"):
        get_backend("torch:mps", "float64")


def _fake_jax(monkeypatch, gpus: int):
    fake = types.ModuleType("jax")

    def devices(platform=None):
        if platform == "gpu":
            if not gpus:
                raise RuntimeError(
                    "Unknown backend: 'gpu' requested, but no platforms that are "
                    "instances of gpu are present. Platforms present are: cpu"
                )
            return [types.SimpleNamespace(platform="gpu", id=i) for i in range(gpus)]
        return [types.SimpleNamespace(platform="cpu", id=0)]

    fake.devices = devices
    monkeypatch.setitem(sys.modules, "jax", fake)


def test_jax_gpu_without_a_gpu_says_so_in_one_line(monkeypatch):
    _fake_jax(monkeypatch, gpus=0)
    with pytest.raises(DeviceUnavailableError) as err:
        get_backend("jax:gpu")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("device 'jax:gpu': JAX finds no GPU (Unknown backend: 'gpu'")
    assert message.endswith("or use device 'jax' (the CPU here)")


def test_jax_gpu_index_beyond_count_says_how_many(monkeypatch):
    _fake_jax(monkeypatch, gpus=1)
    with pytest.raises(
        DeviceUnavailableError, match=r"only 1 JAX GPU device\(s\) found; use jax:gpu:0$"
    ):
        get_backend("jax:gpu:1")


def test_real_torch_without_cuda_or_mps_refuses_them():
    torch = _installed("torch")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="device 'torch:cuda'"):
            get_backend("torch:cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceUnavailableError, match="no MPS device"):
            get_backend("torch:mps")


def test_real_jax_without_a_gpu_refuses_it():
    jax = _installed("jax")
    if jax.default_backend() == "cpu":
        with pytest.raises(DeviceUnavailableError, match="JAX finds no GPU"):
            get_backend("jax:gpu")


# ----------------------------------------------------- namespaces, devices, dtypes, hosts


def test_torch_backend_is_array_api_compats_torch_on_the_cpu():
    torch = _installed("torch")
    for spec in ("torch", "torch:cpu", " Torch "):
        b = get_backend(spec, "float32")
        assert b.xp is array_api_compat.torch
        assert b.xp is array_api_compat.array_namespace(torch.zeros(1))
        assert (b.name, b.spec, b.is_gpu) == ("torch", "torch:cpu", False)
        assert b.device == torch.device("cpu")
        assert b.dtype is torch.float32 and b.with_dtype("float64").dtype is torch.float64
        assert repr(b) == "Backend(torch, torch:cpu, float32)"


def test_jax_backend_is_jax_numpy_on_its_cpu_device():
    jax = _installed("jax")
    import jax.numpy as jnp

    b = get_backend("jax:cpu", "float32")
    assert b.xp is array_api_compat.array_namespace(jnp.zeros(1)) is jnp
    assert (b.name, b.spec, b.is_gpu) == ("jax", "jax:cpu", False)
    assert b.device == jax.devices("cpu")[0]
    assert b.dtype == jnp.float32
    default = get_backend("jax", "float32")  # JAX's default device: the CPU here, or a GPU
    assert default.device == jax.devices()[0]
    assert default.spec == ("jax:cpu" if jax.default_backend() == "cpu" else "jax:gpu:0")


@pytest.mark.parametrize("spec", ["torch", "jax"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtypes_map_to_the_librarys_own(spec, dtype):
    _installed(spec)
    b = get_backend(spec, dtype)
    assert b.dtype_name == dtype and b.dtype == getattr(b.xp, dtype)
    a = b.asarray(np.linspace(0, 1, 6).reshape(2, 3))
    assert_on(b, a)
    assert_on(b, b.xp.matmul(a, b.xp.permute_dims(a, (1, 0))))
    labels = b.asarray(np.array([2, 0, 1]), dtype=b.xp.int64)
    assert_on(b, labels, b.xp.int64)
    back = to_numpy(labels)
    assert back.dtype == np.int64 and back.tolist() == [2, 0, 1]


@pytest.mark.parametrize("spec", ["torch", "jax"])
def test_to_numpy_is_a_writable_host_copy_both_ways(spec):
    _installed(spec)
    b = get_backend(spec, "float64")
    h = np.random.default_rng(0).normal(size=(3, 4))
    want = h.copy()
    a = b.asarray(h)
    h += 1.0  # the device array is a copy of the host data
    back = b.to_numpy(a)
    assert type(back) is np.ndarray and back.flags.writeable and back.dtype == np.float64
    np.testing.assert_array_equal(back, want)
    back[0, 0] = 99.0  # and the host array a copy of the device data
    np.testing.assert_array_equal(b.to_numpy(a), want)
    a += 1.0  # in place on torch, a new array on JAX: `back` keeps its values either way
    assert back[1, 1] == want[1, 1]
    assert b.asarray(a, copy=False) is a  # already there: not copied again


def test_to_numpy_detaches_a_torch_tensor_that_requires_grad():
    torch = _installed("torch")
    t = torch.ones(3, dtype=torch.float64, requires_grad=True) * 2
    np.testing.assert_array_equal(to_numpy(t), [2.0, 2.0, 2.0])


def test_float64_on_jax_is_really_float64():
    jax = _installed("jax")
    b = get_backend("jax", "float64")
    assert jax.config.jax_enable_x64
    x = 1.0 + 2.0**-40  # 1.0 in float32
    a = b.asarray(np.array([x]))
    assert a.dtype == np.float64 and to_numpy(a)[0] == x
    assert to_numpy(b.xp.sum(a * a))[()] == x * x
    b32 = get_backend("jax", "float32")  # float32 runs stay float32 with x64 on
    assert_on(b32, b32.asarray(np.array([x])) * 0.5 + 1.0)


def test_a_jax_backend_turns_on_x64_for_int64_labels_and_float64():
    """In a new process (x64 is process-global): before any JAX backend, JAX truncates
    int64 to int32; a float32 JAX backend turns jax_enable_x64 on, so that labels stay
    int64 and float64 is float64, while its own arrays stay float32."""
    _installed("jax")
    code = (
        "import numpy as np, jax\n"
        "from backends import get_backend, to_numpy\n"
        "assert not jax.config.jax_enable_x64\n"
        "b = get_backend('jax', 'float32')\n"
        "assert jax.config.jax_enable_x64\n"
        "assert b.asarray(np.array([1, 2]), dtype=b.xp.int64).dtype == np.int64\n"
        "assert (b.asarray(np.ones(2)) * 0.5 + 1.0).dtype == np.float32\n"
        "a = b.with_dtype('float64').asarray(np.array([1.0 + 2.0**-40]))\n"
        "assert a.dtype == np.float64 and to_numpy(a)[0] == 1.0 + 2.0**-40\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    proc = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("spec", ["torch", "jax", "strict:device1"])
def test_rows_gathered_and_streamed_onto_the_backend(spec):
    if not spec.startswith("strict"):
        _installed(spec)
    b = get_backend(spec, "float64")
    X_h, y_h = np.arange(14.0).reshape(7, 2), np.arange(7)
    X = b.asarray(X_h)
    idx = b.asarray(np.array([5, 0, 3]), dtype=b.xp.int64)
    out = b.xp.empty((3, 2), dtype=b.dtype, device=b.device)
    rows = take_rows(X, idx, xp=b.xp, out=out)  # `out` is only a hint off NumPy and CuPy
    assert_on(b, rows)
    np.testing.assert_array_equal(to_numpy(rows), X_h[[5, 0, 3]])
    order = np.array([6, 1, 2, 0, 5, 4, 3])
    batches = list(
        host_batches((X_h, y_h), order, 3, xp=b.xp, device=b.device, dtypes=(b.dtype, b.xp.int64))
    )
    assert [to_numpy(yb).tolist() for _, yb in batches] == [[6, 1, 2], [0, 5, 4], [3]]
    for xb, yb in batches:
        assert_on(b, xb)
        assert_on(b, yb, b.xp.int64)
    np.testing.assert_array_equal(to_numpy(batches[1][0]), X_h[[0, 5, 4]])


def test_assert_close_takes_arrays_of_any_backend(backend):
    a = backend.asarray(np.array([1.0, 2.0]))
    assert_close(a, [1.0, 2.0], 1e-15)
    assert_close(a, a, 1e-15)
    assert type(host(a)) is np.ndarray


def test_synchronize_on_the_cpu_is_a_no_op(backend):
    backend.synchronize()


# ------------------------------------------------------------------ the immutability guard


def test_immutable_arrays_behave_as_jaxs():
    b = immutable_backend()
    a = b.asarray(np.arange(3.0))
    assert isinstance(a, ImmutableArray)
    assert array_api_compat.array_namespace(a) is immutable_xp is b.xp
    assert not array_api_compat.is_numpy_namespace(b.xp)
    assert array_api_compat.device(a) == b.device and a.dtype == b.dtype
    alias = a
    a += 1.0  # a new array, as on JAX: the other reference keeps the old values
    a *= 2.0
    np.testing.assert_array_equal(to_numpy(alias), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(to_numpy(a), [2.0, 4.0, 6.0])
    params = {"w": alias}
    p = params["w"]
    p -= 1.0
    np.testing.assert_array_equal(to_numpy(params["w"]), [0.0, 1.0, 2.0])  # the silent no-op
    with pytest.raises(TypeError, match="does not support item assignment"):
        a[0] = 1.0
    with pytest.raises(TypeError, match="does not support item assignment"):
        a[...] = 1.0
    with pytest.raises(TypeError, match=r"use backends\.to_numpy"):
        np.asarray(a)
    assert isinstance(np.ones(3) + a, ImmutableArray)  # NumPy defers to it, never converts it
    host_copy = to_numpy(a)  # through DLPack
    host_copy[0] = -1.0
    assert float(a[0]) == 2.0


def test_immutable_namespace_computes_as_numpy():
    h = np.random.default_rng(3).normal(size=(4, 3))

    def compute(be):
        xp, a = be.xp, be.asarray(h)
        out = xp.sum(xp.exp(xp.matmul(a, xp.permute_dims(a, (1, 0)))), axis=1, keepdims=True)
        return be.to_numpy(xp.where(a[:, :1] > 0, out, -out))

    b = immutable_backend()
    np.testing.assert_allclose(compute(b), compute(get_backend("cpu", "float64")), rtol=1e-15)
    assert b.with_dtype("float32").asarray(h).dtype == np.float32


def _immutable_problem():
    b = immutable_backend("float64")
    rng = np.random.default_rng(0)
    X, y = b.asarray(rng.normal(size=(40, 4))), b.asarray(rng.integers(0, 3, 40), dtype=np.int64)
    model = MLP((4, 6, 3), activation="tanh", loss="cross_entropy")
    return b, model, X, y


def test_the_functional_core_runs_on_immutable_arrays():
    """forward, backward and evaluate do not mutate: they agree with NumPy on the guard."""
    b, model, X, y = _immutable_problem()
    ref = get_backend("cpu", "float64")
    params, ref_params = (model.init_params(be, host_rng(1)) for be in (b, ref))
    Xr, yr = ref.asarray(to_numpy(X)), ref.asarray(to_numpy(y), dtype=np.int64)
    grads = model.backward(params, model.forward(params, X)[1], y)
    ref_grads = model.backward(ref_params, model.forward(ref_params, Xr)[1], yr)
    for k in ref_grads:
        assert isinstance(grads[k], ImmutableArray)
        assert_close(grads[k], ref_grads[k], 1e-12)
    assert evaluate(model, params, X, y) == pytest.approx(evaluate(model, ref_params, Xr, yr))


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_fit_trains_immutable_arrays(optimizer):
    """The guard: parameters change and the loss falls. Optimizers that relied on
    ``p -= lr * g`` changing the dict's array made every step a silent no-op on immutable
    arrays, as on JAX; every result is now stored back."""
    b, model, X, y = _immutable_problem()
    ref = get_backend("cpu", "float64")
    lr = 0.01 if optimizer == "adam" else 0.1
    results = []
    for be, (Xb, yb) in ((b, (X, y)), (ref, (ref.asarray(to_numpy(X)), to_numpy(y)))):
        params = model.init_params(be, host_rng(1))
        results.append(fit(model, params, Xb, yb, optimizer=make_optimizer(optimizer, lr),
                           epochs=5, batch_size=8, rng=host_rng(2)))  # fmt: skip
    start = model.init_params(ref, host_rng(1))
    result, expected = results
    loss = result.history["loss"]
    assert all(math.isfinite(v) for v in loss) and loss[-1] < loss[0]
    assert all(isinstance(p, ImmutableArray) for p in result.params.values())
    for k, p in expected.params.items():
        assert not np.array_equal(p, start[k])
        assert_close(result.params[k], p, 1e-12)  # as NumPy trains them, in place


def test_gradcheck_runs_on_immutable_arrays():
    b, model, X, y = _immutable_problem()
    errors = gradcheck_model(model, model.init_params(b, host_rng(1)), X, y)
    assert max(errors.values()) < 1e-6


def test_replicas_train_immutable_arrays():
    from model.replicas import init_replicas

    b, model, X, y = _immutable_problem()
    params = init_replicas(model, b, [host_rng(0), host_rng(1)])
    result = fit(model, params, X, y, optimizer=make_optimizer("sgd", 0.1), epochs=3,
                 batch_size=8, rng=[host_rng(0), host_rng(1)], divergence="freeze")  # fmt: skip
    assert all(h["loss"][-1] < h["loss"][0] for h in result.history)


def test_a_run_trains_immutable_arrays(tmp_path):
    from model import Run, RunConfig

    config = RunConfig(dataset="iris", hidden=(4,), epochs=3, dtype="float64")
    run = Run.start(config, tmp_path / "run")
    summary = run.train(immutable_backend("float64"))
    assert summary["status"] == "completed"


@pytest.mark.parametrize("device", ["torch", "jax"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_train_py_on_torch_and_jax_equals_cpu(tmp_path, capsys, device, optimizer):
    """float64, shuffled minibatches, several epochs: the parameters train.py writes on
    the torch and jax backends are cpu's to 1e-10 (relative)."""
    pytest.importorskip(device)
    import _cli
    import train

    from model.trained import load_checkpoint

    argv = ["--dtype", "float64", "--optimizer", optimizer, "--batch-size", "32", "--epochs", "5",
            "--hidden", "16", "--quiet"]  # fmt: skip
    params = {}
    for spec in ("cpu", device):
        out = tmp_path / spec
        assert _cli.run(train.main, [*argv, "--device", spec, "--out", str(out)], train.FLAGS) == 0
        params[spec] = load_checkpoint(out / "checkpoint.npz")[0].params
    for k, v in params["cpu"].items():
        assert_close(params[device][k], v, 1e-10)


def test_the_dask_device_is_refused_in_one_line_saying_why():
    with pytest.raises(ConfigError, match=r"dask arrays are lazy.*device cpu, torch or jax"):
        get_backend("dask")


def test_fit_refuses_dask_arrays_saying_why():
    da = pytest.importorskip("dask.array")
    model = MLP((2, 3, 2), loss="cross_entropy")
    params = {k: da.zeros(s) for k, s in model.param_shapes().items()}
    with pytest.raises(ConfigError, match="dask arrays are lazy"):
        fit(model, params, da.zeros((4, 2)), da.zeros(4, dtype=int), optimizer=SGD(0.1),
            epochs=1)  # fmt: skip
