"""The library's own errors for what a user's second trial (issue 24) got as raw NumPy or
Python errors: each call raises a HandgradError (ConfigError or DataError) whose message
names the problem and the fix, before any work."""

from __future__ import annotations

import numpy as np
import pytest

from backends import get_backend, host_rng
from backends.errors import ConfigError, DataError, HandgradError
from model.fit import evaluate, fit
from model.mlp import MLP
from model.optimizers import make_optimizer
from model.trained import TrainedModel


@pytest.fixture(scope="module")
def setup():
    """A 4-5-3 classifier, its parameters and 10 rows of data on the CPU (float64)."""
    backend = get_backend("cpu", "float64")
    net = MLP((4, 5, 3), loss="cross_entropy")
    params = net.init_params(backend, host_rng(0))
    X = backend.asarray(np.random.default_rng(0).normal(size=(10, 4)))
    y = backend.asarray(np.arange(10) % 3, backend.xp.int64)
    return backend, net, params, X, y


def _raises(kind, call, *fragments) -> HandgradError:
    with pytest.raises(kind) as info:
        call()
    assert isinstance(info.value, HandgradError)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    return info.value


@pytest.mark.parametrize(
    "rows, kind, fragments",
    [
        (np.zeros((10, 5)), ConfigError, ("X has shape (10, 5)", "4 features per row",
                                          "shape (n, 4)")),
        (np.zeros(4), ConfigError, ("X has shape (4,)", "shape (n, 4)")),
        (np.zeros((0, 4)), DataError, ("X has no rows", "pass at least one")),  # was range()
    ],
    ids=["wide", "1-D", "empty"],
)  # fmt: skip
def test_evaluate_refuses_rows_it_cannot_score(setup, rows, kind, fragments):
    backend, net, params, _, y = setup
    _raises(kind, lambda: evaluate(net, params, backend.asarray(rows), y[: len(rows)]),
            *fragments)  # fmt: skip


@pytest.mark.parametrize("method", ["predict", "predict_class"])
def test_predict_refuses_rows_of_the_wrong_width_and_answers_none_for_no_rows(setup, method):
    """A wrong width or a single 1-D row is an error naming the shape to pass; no rows
    have no predictions: an empty answer, as NumPy's reductions over rows give."""
    backend, net, params, _, _ = setup
    call = getattr(net, method)
    for rows in (np.zeros((10, 5)), np.zeros(4)):
        _raises(ConfigError, lambda r=rows: call(params, backend.asarray(r)),
                f"X has shape {rows.shape}", "pass an array of shape (n, 4)")  # fmt: skip
    out = call(params, backend.asarray(np.zeros((0, 4))))
    assert tuple(out.shape) == ((0, 3) if method == "predict" else (0,))


def test_fit_refuses_parameters_it_cannot_train(setup):
    backend, net, params, X, y = setup
    opt = make_optimizer("adam", 0.01)

    def fit_with(p):
        return lambda: fit(net, p, X, y, optimizer=opt, epochs=1)

    missing = {k: v for k, v in params.items() if k != "W1"}
    _raises(ConfigError, fit_with(missing), "params lacks W1",
            "draw them with network.init_params(backend, rng)")  # fmt: skip
    wrong = {**params, "W1": backend.asarray(np.zeros((3, 5)))}
    _raises(ConfigError, fit_with(wrong), "parameter W1 has shape (3, 5)", "needs (4, 5)")
    lists = {k: backend.to_numpy(v).tolist() for k, v in params.items()}
    _raises(ConfigError, fit_with(lists), "parameter W1 is a list, not an array",
            "backend.asarray")  # fmt: skip
    _raises(ConfigError, fit_with([params]), "params must be a dict of arrays")


def test_fit_takes_an_optimizer_object_not_its_name(setup):
    backend, net, params, X, y = setup
    start = {k: backend.xp.asarray(v, copy=True) for k, v in params.items()}
    error = _raises(ConfigError, lambda: fit(net, start, X, y, optimizer="adam", epochs=1),
                    "optimizer must be an optimizer object, got str 'adam'",
                    "model.optimizers.make_optimizer('adam')")  # fmt: skip
    assert error.setting == "optimizer"
    _raises(ConfigError, lambda: fit(net, start, X, y, optimizer=None, epochs=1),
            "got NoneType None", "make_optimizer('adam')")  # fmt: skip
    for k, v in params.items():  # checked before any step
        np.testing.assert_array_equal(backend.to_numpy(start[k]), backend.to_numpy(v))


def test_fit_and_init_params_take_a_generator_not_a_seed(setup):
    backend, net, params, X, y = setup
    opt = make_optimizer("adam", 0.01)
    for call in (lambda: fit(net, dict(params), X, y, optimizer=opt, epochs=1, batch_size=2,
                             rng=5),
                 lambda: net.init_params(backend, 0)):  # fmt: skip
        error = _raises(ConfigError, call, "rng must be a numpy.random.Generator",
                        "backends.host_rng(seed)", "got int")  # fmt: skip
        assert error.setting == "seed"


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "7", True, float("nan")])
def test_host_rng_takes_a_seed_of_0_to_2_to_the_32_minus_1(seed):
    error = _raises(ConfigError, lambda: host_rng(seed),
                    "seed must be an integer from 0 to 2**32 - 1 (4294967295), or None",
                    f"got {seed!r}")  # fmt: skip
    assert error.setting == "seed"


def test_host_rng_takes_every_valid_seed():
    for seed in (0, 2**32 - 1, np.int64(7), None):
        assert isinstance(host_rng(seed), np.random.Generator)
    assert host_rng(np.uint32(7)).random() == np.random.default_rng(7).random()


@pytest.mark.parametrize("classifier", [True, False])
def test_trained_model_evaluate_refuses_labels_that_are_not_one_number_per_row(
    setup, classifier
):
    backend, net, params, X, _ = setup
    from model.preprocessing import LabelEncoder

    if classifier:
        model = TrainedModel(net, {k: backend.to_numpy(v) for k, v in params.items()},
                             "float64", None, LabelEncoder.fit(np.array([0, 1, 2])))  # fmt: skip
        wanted = "class labels"
    else:
        mse = MLP((4, 5, 1))
        host = {k: backend.to_numpy(v) for k, v in mse.init_params(backend, host_rng(0)).items()}
        model = TrainedModel(mse, host, "float64")
        wanted = "target values"
    rows = backend.to_numpy(X)
    _raises(DataError, lambda: model.evaluate(rows, 3), "y holds a single int64 value",
            f"pass one row of numbers ({wanted}) per row of X")  # fmt: skip
    for labels in (np.array(["a", "b"] * 5), ["a", "b"] * 5):
        _raises(DataError, lambda v=labels: model.evaluate(rows, v), "y holds <U1 values",
                f"({wanted})")  # fmt: skip
