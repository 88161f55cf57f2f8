"""The fit loop: history, validation, divergence, resumption, and no host round-trips."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from helpers import assert_close, assert_on

from backends import ConfigError, get_backend, host_rng
from model import MLP, DivergenceError, evaluate, fit, make_optimizer
from model.data import DataError
from model.fit import run_epoch
from model.optimizers import SGD, Adam, Optimizer


def _problem(backend, n=50, seed=0):
    rng = np.random.default_rng(seed)
    X_h = rng.normal(size=(n, 4))
    y_h = (X_h[:, 0] + X_h[:, 1] > 0).astype(int) + (X_h[:, 2] > 1)
    return backend.asarray(X_h), backend.asarray(y_h, dtype=backend.xp.int64)


def test_history_records_loss_and_validation_each_epoch(backend):
    """... and every array stays on the data's device (strict's device1 included)."""
    X, y = _problem(backend)
    model = MLP((4, 8, 3), activation="tanh", loss="cross_entropy")
    params = model.init_params(backend, host_rng(0))
    res = fit(
        model,
        params,
        X,
        y,
        optimizer=make_optimizer("momentum", 0.2),
        epochs=30,
        batch_size=10,
        validation=(X, y),
    )
    for p in (*res.params.values(), *res.state["velocity"].values()):
        assert_on(backend, p)
    h = res.history
    assert len(h["loss"]) == len(h["val_loss"]) == len(h["val_accuracy"]) == 30
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["val_accuracy"][-1] > 0.9


def test_full_batch_epoch_loss_is_the_loss_before_the_step(backend):
    X, y = _problem(backend)
    model = MLP((4, 5, 3), activation="sigmoid", loss="cross_entropy")
    params = model.init_params(backend, host_rng(3))
    before = float(model.loss_value(params, X, y))
    res = fit(model, params, X, y, optimizer=make_optimizer("gd", 0.1), epochs=1)
    assert_close(res.history["loss"][0], before, 1e-12)


def test_minibatch_epoch_loss_weights_the_short_last_batch(backend):
    """Epoch loss = sum_b C_b n_b / N with C_b at the parameters before batch b's step."""
    X, y = _problem(backend, n=23)
    model = MLP((4, 5, 3), activation="relu", loss="cross_entropy")
    opt = make_optimizer("sgd", 0.1)
    params = model.init_params(backend, host_rng(3))
    res = fit(model, params, X, y, optimizer=opt, epochs=1, batch_size=10, rng=host_rng(9))
    # replay by hand on the host-numpy backend with the same permutation
    cpu = get_backend("cpu", "float64")
    Xh, yh = cpu.asarray(backend.to_numpy(X)), cpu.asarray(backend.to_numpy(y), dtype=np.int64)
    order = host_rng(9).permutation(23)
    p = model.init_params(cpu, host_rng(3))
    state, expected = opt.init(p), 0.0
    for s in range(0, 23, 10):
        idx = order[s : s + 10]
        expected += float(model.loss_value(p, Xh[idx], yh[idx])) * len(idx) / 23
        _, cache = model.forward(p, Xh[idx])
        p, state = opt.update(p, model.backward(p, cache, yh[idx]), state)
    assert_close(res.history["loss"][0], expected, 1e-12)


def test_divergence_names_the_epoch_and_a_smaller_learning_rate(backend):
    rng = np.random.default_rng(0)
    X = backend.asarray(rng.normal(size=(20, 3)) * 10)
    Y = backend.asarray(rng.normal(size=(20, 1)) * 10)
    model = MLP((3, 8, 1), activation="relu", loss="mse")
    params = model.init_params(backend, host_rng(0))
    diverged = pytest.raises(DivergenceError, match=r"at epoch \d+.*e\.g\. 10\)")
    with np.errstate(all="ignore"), diverged:
        fit(model, params, X, Y, optimizer=make_optimizer("sgd", 100.0), epochs=200)


def test_split_fit_equals_one_fit_bitwise():
    """Resuming with the saved optimizer state and RNG continues exactly (same backend)."""
    b = get_backend("cpu", "float64")
    X, y = _problem(b)
    model = MLP((4, 8, 3), activation="tanh", loss="cross_entropy")
    opt = make_optimizer("adam", 0.01)
    p1 = model.init_params(b, host_rng(0))
    fit(model, p1, X, y, optimizer=opt, epochs=6, batch_size=7, rng=host_rng(5))
    p2, rng = model.init_params(b, host_rng(0)), host_rng(5)
    half = fit(model, p2, X, y, optimizer=opt, epochs=3, batch_size=7, rng=rng)
    fit(
        model,
        half.params,
        X,
        y,
        optimizer=opt,
        epochs=6,
        batch_size=7,
        rng=rng,
        state=half.state,
        start_epoch=3,
    )
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])


def test_mismatched_rows_are_refused():
    b = get_backend("cpu", "float64")
    model = MLP((4, 3), loss="cross_entropy")
    X, y = _problem(b)
    with pytest.raises(ValueError, match="X has 50 rows but Y has 49"):
        fit(
            model,
            model.init_params(b, host_rng(0)),
            X,
            y[:49],
            optimizer=make_optimizer("gd", 1),
            epochs=1,
        )


@pytest.mark.parametrize("data", ["device", "streamed", "replicas"])
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam"])
@pytest.mark.parametrize("loss", ["mse", "bce", "cross_entropy"])
def test_training_epoch_never_reads_a_value_back_to_the_host(monkeypatch, optimizer, loss, data):
    """A step that turns an array into a Python scalar or bool (a device sync on a GPU)
    fails here: array-api-strict arrays are made to refuse every such conversion. Streamed
    host data (shuffled) goes only host -> device. Replicas: 3 stacked networks with their
    own shuffles, lr and weight decay arrays, and one frozen (masked) replica."""
    import array_api_strict

    b = get_backend("strict", "float64")
    X, y = _problem(b, n=30)
    k = 3 if loss == "cross_entropy" else 1
    model = MLP((4, 6, 5, k), activation="relu", loss=loss)
    Y = model.prepare_targets(
        y if loss == "cross_entropy" else b.xp.astype(y[:, None] > 0, b.dtype), dtype=b.dtype
    )
    opt = make_optimizer(optimizer, 0.1, weight_decay=0.01)
    params = model.init_params(b, host_rng(0))
    state = opt.init(params)
    order = np.random.default_rng(0).permutation(30)  # batches gathered by index
    if data == "streamed":
        X, Y = b.to_numpy(X), b.to_numpy(Y)
    if data == "replicas":
        from model.replicas import Freezer, init_replicas, per_replica

        params = init_replicas(model, b, [host_rng(s) for s in range(3)])
        opt = per_replica(opt, lr=[0.1, 0.2, 0.3], weight_decay=[0, 0.01, 0.1], like=X)
        state = opt.init(params)
        opt = Freezer(opt, params, state, 3, [None, 1, None], keep=True).optimizer  # 1 frozen
        order = np.stack([np.random.default_rng(s).permutation(30) for s in range(3)])

    def refuse(self, *args, **kwargs):
        raise AssertionError("host round-trip in the training hot loop")

    cls = array_api_strict._array_object.Array
    for name in (
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
        "__complex__",
        "__array__",
        "__dlpack__",
        "tolist",
        "item",
    ):
        if hasattr(cls, name):
            monkeypatch.setattr(cls, name, refuse)
    with pytest.raises(AssertionError, match="host round-trip"):
        float(params["W1"][0, 0, ...])  # the trap works
    run_epoch(model, params, state, X, Y, opt, batch_size=8, order=order)


# --------------------------------------------------------------------------- data pipeline


def _numpy_sgd(X, y, W1, b1, W2, b2, lr, batch, orders):
    """Plain-NumPy reference: sigmoid hidden layer, softmax cross-entropy, SGD, one batch
    after another in the given row orders; returns the final parameters."""
    W1, b1, W2, b2 = (a.copy() for a in (W1, b1, W2, b2))
    T = np.eye(W2.shape[1])[y]
    for order in orders:
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            x, t = X[idx], T[idx]
            h = 1 / (1 + np.exp(-(x @ W1 + b1)))
            z = h @ W2 + b2
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            dz = (p - t) / len(idx)
            dh = dz @ W2.T * h * (1 - h)
            W2, b2 = W2 - lr * h.T @ dz, b2 - lr * dz.sum(0)
            W1, b1 = W1 - lr * x.T @ dh, b1 - lr * dh.sum(0)
    return W1, b1, W2, b2


@pytest.mark.parametrize("where", ["device", "host", "memmap"])
def test_batches_gathered_per_batch_match_a_numpy_reference(backend, where, tmp_path):
    """Data on the device, host NumPy data streamed to it, and a memory-mapped .npz all
    train the same batches (rng.permutation(n) per epoch) as plain NumPy does."""
    from model.streaming import open_memmap

    rng = np.random.default_rng(4)
    X_h = rng.normal(size=(23, 4))
    y_h = rng.integers(0, 3, 23)
    if where == "device":
        X, y = backend.asarray(X_h), backend.asarray(y_h, dtype=backend.xp.int64)
    elif where == "host":
        X, y = X_h, y_h
    else:
        np.savez(tmp_path / "d.npz", X=X_h, y=y_h)
        X, y = open_memmap(tmp_path / "d.npz", "X"), open_memmap(tmp_path / "d.npz", "y")
    model = MLP((4, 5, 3), activation="sigmoid", loss="cross_entropy")
    params = model.init_params(backend, host_rng(1))
    start = [backend.to_numpy(params[k]) for k in ("W1", "b1", "W2", "b2")]
    params = fit(  # the result, not the dict passed in: immutable arrays are not updated
        model,
        params,
        X,
        y,
        optimizer=make_optimizer("sgd", 0.3),
        epochs=3,
        batch_size=5,
        rng=host_rng(2),
    ).params
    perm = host_rng(2)
    expected = _numpy_sgd(X_h, y_h, *start, 0.3, 5, [perm.permutation(23) for _ in range(3)])
    for k, e in zip(("W1", "b1", "W2", "b2"), expected, strict=True):
        assert_on(backend, params[k])
        assert_close(backend.to_numpy(params[k]), e, 1e-12)


def test_training_holds_no_copy_of_the_data():
    """Peak memory NumPy allocates while training on 16 MB of data stays a small fraction
    of it (a shuffled copy per epoch would be 100%, two alive at once 200%)."""
    import tracemalloc

    b = get_backend("cpu", "float64")
    rng = np.random.default_rng(0)
    X = rng.random((10000, 200))
    y = rng.integers(0, 10, 10000)
    model = MLP((200, 16, 10), activation="relu", loss="cross_entropy")
    params = model.init_params(b, host_rng(0))
    Xd, yd = b.asarray(X, copy=False), b.asarray(y, dtype=np.int64, copy=False)
    assert Xd is X  # already on the device with its dtype: not copied again
    tracemalloc.start()
    try:
        fit(model, params, Xd, yd, optimizer=make_optimizer("sgd", 0.1), epochs=2, batch_size=500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.2 * X.nbytes, f"peak {peak / 2**20:.1f} MiB for {X.nbytes / 2**20:.1f} MiB"


def test_evaluate_in_chunks_equals_numpy(backend, monkeypatch):
    """Loss and accuracy over chunks of 4 rows (the last one short) equal the closed
    forms on all rows at once."""
    monkeypatch.setattr(sys.modules["model.fit"], "EVAL_ROWS", 4)
    X, y = _problem(backend, n=11)
    model = MLP((4, 3), activation="identity", loss="cross_entropy")
    params = model.init_params(backend, host_rng(5))
    out = evaluate(model, params, X, y)
    Xh, yh = backend.to_numpy(X), backend.to_numpy(y)
    z = Xh @ backend.to_numpy(params["W1"]) + backend.to_numpy(params["b1"])
    lse = np.log(np.exp(z).sum(1))
    assert_close(out["loss"], np.mean(lse - z[np.arange(11), yh]), 1e-12)
    assert_close(out["accuracy"], np.mean(z.argmax(1) == yh), 1e-15)


# --------------------------------------------------------------------------- input checks


def _mlp_and_params(backend, dtype="float64"):
    model = MLP((4, 5, 3), activation="tanh", loss="cross_entropy")
    return model, model.init_params(backend.with_dtype(dtype), host_rng(0))


def _fit_once(model, params, X, y, **kw):
    return fit(model, params, X, y, optimizer=make_optimizer("sgd", 0.1), epochs=1, **kw)


def test_data_of_another_dtype_is_refused_with_the_fix(backend):
    model, params = _mlp_and_params(backend, "float32")
    X, y = _problem(backend)
    with pytest.raises(
        ConfigError,
        match=r"X is float64 but the parameters are float32; move"
        r" it with backend\.asarray",
    ):
        _fit_once(model, params, X, y)


def test_data_on_another_device_is_refused_with_the_fix():
    model, params = _mlp_and_params(get_backend("strict", "float64"))
    X, y = _problem(get_backend("strict:device1", "float64"))
    with pytest.raises(
        ConfigError,
        match=r"^X is a array_api_strict array on .*device1.* but the "
        r"parameters are .*CPU_DEVICE.*; move it with backend\.asarray",
    ):
        _fit_once(model, params, X, y)
    Xd, _ = _problem(get_backend("strict", "float64"))
    with pytest.raises(ConfigError, match=r"^Y is .*device1.* but the parameters are"):
        _fit_once(model, params, Xd, y)


def test_parameters_must_share_one_backend_and_dtype():
    b = get_backend("strict", "float64")
    model, params = _mlp_and_params(b)
    X, y = _problem(b)
    mixed = {**params, "b2": get_backend("strict:device1", "float64").asarray(np.zeros(3))}
    with pytest.raises(ConfigError, match=r"^parameter b2 is .*device1.* but W1 is"):
        _fit_once(model, mixed, X, y)
    halves = {**params, "W2": b.xp.astype(params["W2"], b.xp.float32)}
    with pytest.raises(ConfigError, match=r"^parameter W2 is float32 and W1 is float64"):
        _fit_once(model, halves, X, y)


def test_targets_must_fit_the_loss(backend):
    X, y = _problem(backend)
    model = MLP((4, 1), loss="mse")
    params = model.init_params(backend, host_rng(0))
    with pytest.raises(ConfigError, match=r"^Y holds integer labels, but the loss 'mse' needs"):
        _fit_once(model, params, X, y)


def test_host_and_device_data_cannot_be_mixed():
    b = get_backend("strict", "float64")
    model, params = _mlp_and_params(b)
    X, y = _problem(b)
    with pytest.raises(
        ConfigError,
        match=r"^Y is a array_api_strict array on .* but X is host "
        r"NumPy data, streamed",
    ):
        _fit_once(model, params, b.to_numpy(X), y)


class _Poison(Optimizer):
    """An optimizer whose update leaves NaN parameters."""

    lr, weight_decay = 0.1, 0.0

    def _step(self, name, p, g, state, scale, xp):
        return xp.full_like(p, math.nan)  # no item assignment


def test_nan_parameters_stop_at_epoch_1_before_the_callback(backend):
    """Full-batch GD takes the loss before the step, so the loss alone is finite here:
    only the check of the parameters catches it."""
    X, y = _problem(backend)
    model, params = _mlp_and_params(backend)
    seen = []
    with pytest.raises(DivergenceError, match=r"loss is nan at epoch 1") as err:
        fit(model, params, X, y, optimizer=_Poison(), epochs=3, callback=lambda *a: seen.append(a))
    assert err.value.epoch == 1 and seen == []


def test_a_perfect_fit_records_a_loss_of_0_not_minus_0(numpy_backend):
    """Logits so far apart that the softmax is exactly one-hot: the loss, -sum(log 1)/N,
    computes as -0.0; the host values record 0.0 (metrics.json would show -0.0)."""
    model = MLP((1, 2), loss="cross_entropy")
    X = numpy_backend.asarray([[1.0], [-1.0]])
    y = numpy_backend.asarray([1, 0], dtype=numpy_backend.xp.int64)
    params = {"W1": numpy_backend.asarray([[-1e3, 1e3]]), "b1": numpy_backend.asarray([0.0, 0.0])}
    loss = evaluate(model, params, X, y)["loss"]
    assert loss == 0.0 and math.copysign(1.0, loss) == 1.0


def _bad_fit_inputs(backend, X, y):
    """name -> (fit's arguments changed, error class, message): what the command line
    checks, the library checks too."""
    xp = backend.xp
    labels = backend.to_numpy(y)
    moved = {v: backend.asarray(np.where(labels == 2, v, labels), dtype=xp.int64) for v in (7, -1)}
    nan_x = backend.to_numpy(X)
    nan_x[3, 1] = np.nan
    model = r", but this model \(3 outputs, loss 'cross_entropy'\) "
    return {
        "label 7 of 3 classes": (
            {"Y": moved[7]}, DataError,
            r"^Y holds labels from 0 to 7, but the model has 3 classes, labelled 0 to 2; map",
        ),
        "label -1": ({"Y": moved[-1]}, DataError, r"labels from -1 to 1"),
        "float labels for cross-entropy": (
            {"Y": xp.astype(y, xp.float64)}, ConfigError,
            r"^Y has shape \(50,\)" + model
            + r"trains on integer class labels of shape \(n,\) or one-hot rows of shape \(n, 3\); "
            r"make float labels integers: backend.asarray\(y, dtype=backend.xp.int64\)$",
        ),
        "one-hot of 2 columns": (
            {"Y": backend.asarray(np.ones((50, 2)))}, ConfigError, r"^Y has shape \(50, 2\)" + model
        ),
        "X of 3 columns": (
            {"X": X[:, :3]}, ConfigError,
            r"^X has shape \(50, 3\) but the model takes 4 features per row; pass an array of "
            r"shape \(n, 4\)",
        ),
        "X a list": (
            {"X": [[0.0] * 4] * 50}, ConfigError,
            r"^X is a list, not an array; convert it with backend.asarray",
        ),
        "NaN in X": (
            {"X": backend.asarray(nan_x)}, DataError,
            r"^X holds NaN or infinite values; drop or impute",
        ),
        "epochs -1": ({"epochs": -1}, ConfigError, r"^epochs must be an integer >= 0, got -1"),
        "epochs before start_epoch": (
            {"epochs": 2, "start_epoch": 5}, ConfigError, r"^epochs must be an integer >= 5, got 2"
        ),
        "start_epoch -1": (
            {"start_epoch": -1}, ConfigError, r"^start_epoch must be an integer >= 0"
        ),
        "epochs 2.5": (
            {"epochs": 2.5}, ConfigError, r"^epochs must be an integer \(finite\), got 2.5"
        ),
        "batch_size 0": (
            {"batch_size": 0}, ConfigError, r"^batch_size must be an integer >= 1, got 0"
        ),
        "labels of shape (n, 1)": (
            {"Y": xp.reshape(y, (50, 1))}, ConfigError,
            r"^Y has shape \(50, 1\).*; pass the labels as one column of shape \(n,\): "
            r"y.reshape\(-1\)$",
        ),
        "one-hot rows of 2": (
            {"Y": backend.asarray(np.eye(3)[labels] * 2)}, DataError,
            r"^Y holds targets from 0 to 2, but the loss 'cross_entropy' takes probabilities "
            r"in \[0, 1\]",
        ),
        "no rows": ({"X": X[:0, :], "Y": y[:0]}, DataError, r"^X has no rows; pass at least one"),
        "validation labels 7": (
            {"validation": (X, moved[7])}, DataError, r"^Y_val holds labels from 0 to 7"
        ),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["label 7 of 3 classes", "label -1", "float labels for cross-entropy", "one-hot of 2 columns",
     "X of 3 columns", "X a list", "NaN in X", "epochs -1", "epochs before start_epoch",
     "start_epoch -1", "epochs 2.5", "batch_size 0", "labels of shape (n, 1)",
     "one-hot rows of 2", "no rows", "validation labels 7"],
)  # fmt: skip
def test_fit_refuses_what_cannot_train_before_it_trains(backend, case):
    """Each bad argument is one error naming it and the fix, raised before any step:
    the parameters are as drawn (labels out of range used to train on a loss of ~700,
    NaN data to end in "diverged, use a smaller learning rate")."""
    X, y = _problem(backend)
    model, params = _mlp_and_params(backend)
    drawn = {k: backend.to_numpy(p) for k, p in params.items()}
    change, error, message = _bad_fit_inputs(backend, X, y)[case]
    args = {"X": X, "Y": y, "epochs": 2, "batch_size": 16, **change}
    X, Y = args.pop("X"), args.pop("Y")
    with pytest.raises(error, match=message):
        fit(model, params, X, Y, optimizer=make_optimizer("sgd", 0.1), **args)
    for k, p in params.items():
        np.testing.assert_array_equal(backend.to_numpy(p), drawn[k])


def test_a_bce_model_takes_labels_0_and_1_and_an_empty_schedule_trains_nothing(numpy_backend):
    """bce's labels are 0/1 whatever its one output; epochs == start_epoch (a resume of a
    finished run) is allowed and leaves the parameters alone."""
    X, _ = _problem(numpy_backend)
    model = MLP((4, 1), loss="bce")
    params = model.init_params(numpy_backend, host_rng(0))
    two = numpy_backend.asarray(np.arange(50) % 3, dtype=np.int64)
    with pytest.raises(DataError, match=r"labels from 0 to 2, but the model has 2 classes"):
        fit(model, params, X, two, optimizer=make_optimizer("sgd", 0.1), epochs=1)
    with pytest.raises(DataError, match=r"^Y holds targets from 0 to 5, but the loss 'bce'"):
        fit(model, params, X, np.full(50, 5.0) * (two > 0), optimizer=SGD(0.1), epochs=1)
    column = np.reshape(two % 2, (50, 1))  # 0/1 labels as a column: bce takes them
    fit(model, params, X, column, optimizer=SGD(0.1), epochs=1)
    sgd = make_optimizer("sgd", 0.1)
    result = fit(model, params, X, two % 2, optimizer=sgd, epochs=3, start_epoch=3)
    assert result.history == {"loss": []}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: make_optimizer("adam", 0), r"^lr must be a number > 0, got 0"),
        (lambda: make_optimizer("sgd", -0.1), r"^lr must be a number > 0, got -0.1"),
        (lambda: make_optimizer("gd", float("nan")), r"^lr must be a number \(finite\), got nan"),
        (lambda: make_optimizer("nesterov", 0.1, momentum=1.5), r"^momentum must be a number >= 0"),
        (lambda: make_optimizer("adam", 0.1, weight_decay=-1), r"^weight_decay must be a number"),
        (lambda: Adam(beta2=1.0), r"^beta2 must be a number >= 0 and < 1, got 1.0"),
        (lambda: Adam(eps=-1e-8), r"^eps must be a number >= 0"),
        (lambda: SGD(np.float64("nan")), r"^lr must be a number \(finite\), got np.float64\(nan\)"),
        (lambda: SGD(0.1, weight_decay=np.float32(-1)), r"^weight_decay must be a number >= 0"),
    ],
)  # fmt: skip
def test_optimizers_refuse_hyperparameters_that_cannot_train(make, message):
    with pytest.raises(ConfigError, match=message) as err:
        make()
    assert err.value.setting == message[1:].split()[0]


def test_numpy_scalars_are_numbers_to_fit_and_the_optimizers(numpy_backend):
    """np.int64 epochs and batch size, np.float32 hyperparameters: accepted as the Python
    numbers they stand for (an optimizer stores them as floats, so every step path takes
    them), and the same training as with Python numbers."""
    X, y = _problem(numpy_backend)
    runs = []
    for number, integer in ((float, int), (np.float32, np.int64)):
        model, params = _mlp_and_params(numpy_backend)
        opt = Adam(number(0.5), beta1=number(0.75), eps=number(0.25))
        assert all(type(getattr(opt, k)) is float for k in ("lr", "beta1", "eps"))
        fit(model, params, X, y, optimizer=opt, epochs=integer(2), batch_size=integer(16))
        runs.append(params)
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])


def test_float_labels_of_streamed_data_are_told_to_become_host_integers(tmp_path):
    """Streamed data stays host NumPy: the fix for float labels keeps it there."""
    from model.streaming import open_memmap

    np.save(tmp_path / "X.npy", np.random.default_rng(0).normal(size=(50, 4)))
    X = open_memmap(tmp_path / "X.npy")
    model, params = _mlp_and_params(get_backend("strict", "float64"))
    with pytest.raises(ConfigError, match=r"integers: np.asarray\(y, dtype=np.int64\)$"):
        fit(model, params, X, np.zeros(50), optimizer=SGD(0.1), epochs=1)
