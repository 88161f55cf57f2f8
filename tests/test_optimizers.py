"""Optimizers against scikit-learn's independent implementations, and weight decay
against finite differences of the penalized loss."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, assert_on
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer

from backends import host_rng
from model import MLP, SGD, Adam, make_optimizer
from model.gradcheck import gradcheck

SHAPES = {"W1": (3, 4), "b1": (4,)}


def _run(backend, optimizer, grads_seq, start):
    params = {k: backend.asarray(v) for k, v in start.items()}
    state = optimizer.init(params)
    for grads in grads_seq:
        g = {k: backend.asarray(v) for k, v in grads.items()}
        params, state = optimizer.update(params, g, state)
    for p in params.values():
        assert_on(backend, p)
    return {k: backend.to_numpy(v) for k, v in params.items()}, state


def _reference(sk_optimizer_cls, start, grads_seq, **kwargs):
    params = [start[k].copy() for k in SHAPES]
    opt = sk_optimizer_cls(params, **kwargs)
    for grads in grads_seq:
        opt.update_params(params, [grads[k] for k in SHAPES])
    return dict(zip(SHAPES, params, strict=True))


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (SGD(0.1), dict(momentum=0.0, nesterov=False)),
        (SGD(0.1, momentum=0.9), dict(momentum=0.9, nesterov=False)),
        (SGD(0.1, momentum=0.8, nesterov=True), dict(momentum=0.8, nesterov=True)),
    ],
    ids=["sgd", "momentum", "nesterov"],
)
def test_sgd_variants_match_sklearn(backend, ours, theirs):
    rng = np.random.default_rng(0)
    start = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    grads_seq = [{k: rng.normal(size=s) for k, s in SHAPES.items()} for _ in range(6)]
    got, state = _run(backend, ours, grads_seq, start)
    expected = _reference(SGDOptimizer, start, grads_seq, learning_rate_init=0.1, **theirs)
    assert state["step"] == 6
    for k in SHAPES:
        assert_close(got[k], expected[k], 1e-12)


def test_adam_matches_sklearn(backend):
    rng = np.random.default_rng(1)
    start = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    grads_seq = [{k: rng.normal(size=s) for k, s in SHAPES.items()} for _ in range(6)]
    # eps = 0: sklearn adds eps to sqrt(v), handgrad to sqrt(v_hat); otherwise the same math
    got, _ = _run(backend, Adam(0.01, eps=0.0), grads_seq, start)
    expected = _reference(AdamOptimizer, start, grads_seq, learning_rate_init=0.01, epsilon=0.0)
    for k in SHAPES:
        assert_close(got[k], expected[k], 1e-12)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_weight_decay_is_the_gradient_of_the_l2_penalty(backend, name):
    """One step with decay lambda equals one step on C + lambda/2 sum ||W||^2 (biases free)."""
    xp, lam = backend.xp, 0.3
    model = MLP((3, 4, 2), activation="tanh", loss="mse")
    rng = np.random.default_rng(2)
    X, Y = backend.asarray(rng.normal(size=(5, 3))), backend.asarray(rng.normal(size=(5, 2)))
    params = model.init_params(backend, host_rng(0))
    params = {k: v + 0.1 for k, v in params.items()}  # non-zero biases

    assert model.decayed == ("W1", "W2")  # the weights, by their declared role

    def penalized(p):
        return model.loss_value(p, X, Y) + lam / 2 * sum(xp.sum(p[k] * p[k]) for k in ("W1", "W2"))

    _, cache = model.forward(params, X)
    grads = model.backward(params, cache, Y)
    decayed = {k: g + lam * params[k] if k in ("W1", "W2") else g for k, g in grads.items()}
    assert max(gradcheck(penalized, params, decayed).values()) < 1e-8

    plain, with_decay = make_optimizer(name, 0.1), make_optimizer(name, 0.1, weight_decay=lam)
    expected = {k: xp.asarray(v, copy=True) for k, v in params.items()}
    # the returned parameters, not the dicts passed in: immutable arrays are not updated
    expected, _ = plain.update(expected, decayed, plain.init(expected))
    params, _ = with_decay.update(params, grads, with_decay.init(params), decay=model.decayed)
    for k in params:
        assert_close(backend.to_numpy(params[k]), backend.to_numpy(expected[k]), 1e-12)


def test_weight_decay_without_its_mask_is_refused(numpy_backend):
    """Which parameters decay is declared by the network, never guessed from names."""
    params = {"W1": numpy_backend.asarray(np.ones((2, 2)))}
    opt = make_optimizer("sgd", 0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match=r"pass decay=network\.decayed"):
        opt.update(params, {"W1": params["W1"]}, opt.init(params))


def test_unknown_optimizer_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown optimizer 'newton'; use one of: gd, sgd"):
        make_optimizer("newton", 0.1)
