"""Layers: each holds its hand-derived forward and backward side by side.

A layer is configuration only (a frozen dataclass); its parameters are passed in and
returned, under the layer's own names (``W``, ``b``, ``gamma``, ...; a
:class:`model.network.Sequential` gives them the network's names ``W1``, ``gamma1``,
...). Every layer has

    params()                               {name: Param}: shapes and roles
    forward(params, X, *, train, noise, inplace) -> (Y, cache)
    backward(params, cache, dY, *, inplace, input_grad) -> (dX, grads)

``grads`` holds dC/dp for the layer's trained parameters. ``train`` selects training
mode (batch statistics, dropout); ``noise`` is the step's host randomness
(:class:`Noise`). With ``inplace`` (the step's in-place variant, NumPy and CuPy only, see
:mod:`model.variants`) a forward may write its result into ``X`` and a backward into
``dY``: the network passes it only for arrays no one else holds. Layers that end a
network under a loss on logits (Dense, Activation) also have ``backward_z(params,
cache, dZ)``, the backward pass from dC/dZ, and ``logits(cache)``.

Every formula holds for replica-stacked parameters (a leading axis of R networks, see
:mod:`model.replicas`): per-feature vectors broadcast as (R, 1, F), products are batched,
and sums over rows are over axis -2.

Parameters declare their role (:class:`Param`): trained by the optimizer or state that
the forward pass updates in training mode (BatchNorm's running statistics), decayed by
weight decay or not. Nothing is read from names.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import numpy as np
from array_api_compat import array_namespace, device

from backends.errors import ConfigError
from model.activations import get_activation
from model.variants import kept_ones, ones

__all__ = [
    "LAYERS",
    "Activation",
    "BatchNorm",
    "Dense",
    "Dropout",
    "Layer",
    "LayerNorm",
    "Noise",
    "Param",
    "layer_from_json",
]


@dataclasses.dataclass(frozen=True)
class Param:
    """A parameter's shape and role. ``trained``: the optimizer updates it (else it is
    state, which the forward pass renews in training mode). ``decay``: weight decay
    applies to it. ``fill``: how it starts: ``"weight"`` (drawn, see
    :meth:`model.network.Sequential.init_params`), ``"zeros"`` or ``"ones"``."""

    shape: tuple[int, ...]
    trained: bool = True
    decay: bool = False
    fill: str = "zeros"


def _rows(v):
    """A per-feature vector (F,) or per-replica (R, F) as (1, F) / (R, 1, F): one value per
    column of every row."""
    return v[..., None, :]


def _count(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class Layer:
    """What every layer has; see the module docstring."""

    type: ClassVar[str] = ""
    caches_output: ClassVar[bool] = False  # whether backward reads the output it returned
    batch_statistics: ClassVar[bool] = False  # whether training mode mixes a batch's rows

    def params(self) -> dict[str, Param]:
        return {}

    def width(self, inputs: int | None) -> int | None:
        """The output width for ``inputs`` features (None: not known yet); a ConfigError
        when the layer cannot take them."""
        return inputs

    def new_state(self, cache) -> dict:
        """State parameters after a training-mode forward pass (BatchNorm's)."""
        return {}

    def to_json(self) -> dict:
        return {"type": self.type, **dataclasses.asdict(self)}  # type: ignore[call-overload]


def _fixed_width(layer: Layer, inputs: int | None, wanted: int, name: str) -> None:
    if inputs is not None and inputs != wanted:
        raise ConfigError(
            f"{type(layer).__name__} takes {wanted} {name} but follows a layer with {inputs} "
            f"outputs; make the widths match"
        )


@dataclasses.dataclass(frozen=True)
class Dense(Layer):
    """A fully connected layer and its activation f (one row per sample):

        Z = X W + b,   A = f(Z)           W: (inputs, outputs), b: (outputs,)

    backward, from dA:

        dZ = dA * f'(Z)   (model.activations: from A)
        dW = X^T dZ,   db = sum over rows of dZ,   dX = dZ W^T
    """

    inputs: int
    outputs: int
    activation: str = "identity"
    bias: bool = True
    type: ClassVar[str] = "dense"

    def __post_init__(self):
        object.__setattr__(self, "inputs", _count("Dense inputs", self.inputs))
        object.__setattr__(self, "outputs", _count("Dense outputs", self.outputs))
        get_activation(self.activation)
        if not isinstance(self.bias, bool):
            raise ConfigError(f"Dense bias must be True or False, got {self.bias!r}")

    @property
    def caches_output(self) -> bool:  # type: ignore[override]
        return self.activation != "identity"  # f' from A; the identity's needs nothing

    def params(self) -> dict[str, Param]:
        shapes = {"W": Param((self.inputs, self.outputs), decay=True, fill="weight")}
        if self.bias:
            shapes["b"] = Param((self.outputs,))
        return shapes

    def width(self, inputs):
        _fixed_width(self, inputs, self.inputs, "inputs")
        return self.outputs

    @functools.cached_property
    def _f(self):
        return get_activation(self.activation)

    def forward(self, params, X, /, *, train=False, noise=None, inplace=False, xp=None):
        """(A, cache (X, Z, A)); Z is A itself when f was applied in place."""
        xp = xp or array_namespace(X)
        Z = X @ params["W"]
        b = params["b"] if self.bias else None
        if b is not None and b.ndim > 1:
            b = b[..., None, :]  # one per replica: (R, 1, F)
        if inplace and self.activation != "identity":  # f(Z + b) into Z, b in the same pass
            return self._f.forward(Z, xp=xp, out=Z, bias=b), (X, Z, Z)
        if b is not None:
            Z += b  # Z is this pass's own array, and the logits a loss may read
        A = Z if self.activation == "identity" else self._f.forward(Z, xp=xp)
        return A, (X, Z, A)

    def backward(self, params, cache, dA, /, *, inplace=False, input_grad=True, xp=None):
        return self.backward_z(params, cache, dA, inplace=inplace, input_grad=input_grad,
                               xp=xp, through_f=True)  # fmt: skip

    def backward_z(self, params, cache, dZ, /, *, inplace=False, input_grad=True, xp=None,
                   through_f=False):  # fmt: skip
        """dW, db and (when ``input_grad``) dX from dZ = dC/dZ; ``through_f``: from dA,
        through the activation's backward first (:meth:`backward`)."""
        xp = xp or array_namespace(dZ)
        if through_f:
            dZ = self._f.backward(dZ, cache[2], xp=xp, out=dZ if inplace else None)
        X = cache[0]
        grads = {"W": (X.T if X.ndim == 2 else xp.matrix_transpose(X)) @ dZ}
        if self.bias:  # the sum over rows as 1^T dZ (model.variants.ones)
            m = dZ.shape[-2]
            if inplace:
                row = kept_ones((1, m), dZ.dtype, getattr(dZ, "device", None), xp)
            else:
                row = ones((1, m), dZ, xp=xp)
            grads["b"] = (row @ dZ)[..., 0, :]
        if not input_grad:
            return None, grads
        W = params["W"]
        return dZ @ (W.T if W.ndim == 2 else xp.matrix_transpose(W)), grads

    def logits(self, cache):
        return cache[1]


@dataclasses.dataclass(frozen=True)
class Activation(Layer):
    """A = f(X) on its own (after a normalization layer); dX = dA * f'(X)."""

    name: str
    type: ClassVar[str] = "activation"
    caches_output: ClassVar[bool] = True

    def __post_init__(self):
        get_activation(self.name)

    def forward(self, params, X, /, *, train=False, noise=None, inplace=False, xp=None):
        f = get_activation(self.name)
        A = f.forward(X, xp=xp or array_namespace(X), out=X if inplace else None)
        return A, (X, A)

    def backward(self, params, cache, dA, /, *, inplace=False, input_grad=True, xp=None):
        f = get_activation(self.name)
        xp = xp or array_namespace(dA)
        return f.backward(dA, cache[1], xp=xp, out=dA if inplace else None), {}

    def backward_z(self, params, cache, dZ, /, *, inplace=False, input_grad=True, xp=None):
        return dZ, {}

    def logits(self, cache):
        return cache[0]


class Noise:
    """The host randomness of one training step: dropout masks drawn with ``rng`` (one
    ``numpy.random.Generator``, or a list of R, one per replica) for a batch of ``rows``
    rows, of which this process computes rows ``part`` (start, stop) (a rank's share under
    a communicator; default all). Every rank and every backend draws the same numbers,
    so a mask is the same everywhere, bit for bit; each call draws the next ones."""

    def __init__(self, rng, rows: int, part: tuple[int, int] | None = None):
        self.rng, self.rows = rng, rows
        self.part = (0, rows) if part is None else part

    def uniform(self, width: int) -> np.ndarray:
        """U[0, 1) of shape (rows in part, width), or (R, rows in part, width)."""
        start, stop = self.part
        if isinstance(self.rng, list):
            return np.stack([g.random((self.rows, width))[start:stop] for g in self.rng])
        return self.rng.random((self.rows, width))[start:stop]


@dataclasses.dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout: in training, Y = X * M with M = 1 / (1 - rate) where a
    U[0, 1) draw is >= rate and 0 elsewhere (each value kept with probability 1 - rate);
    dX = dY * M. In evaluation, Y = X. The draws come from the step's :class:`Noise`."""

    rate: float
    type: ClassVar[str] = "dropout"

    def __post_init__(self):
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
            raise ConfigError(
                f"the dropout rate must be in [0, 1), got {rate!r}", setting="dropout"
            )
        object.__setattr__(self, "rate", float(rate))

    def forward(self, params, X, /, *, train=False, noise=None, inplace=False, xp=None):
        if not train or self.rate == 0.0:
            return X, None
        if noise is None:
            raise ConfigError("dropout in training mode needs the step's noise (Noise(rng, rows))")
        xp = xp or array_namespace(X)
        keep = noise.uniform(X.shape[-1]) >= self.rate
        mask = xp.asarray(
            np.where(keep, 1.0 / (1.0 - self.rate), 0.0), dtype=X.dtype, device=device(X)
        )
        if inplace:
            X *= mask
            return X, mask
        return X * mask, mask

    def backward(self, params, cache, dY, /, *, inplace=False, input_grad=True, xp=None):
        if cache is None:
            return dY, {}
        if inplace:
            dY *= cache
            return dY, {}
        return dY * cache, {}


def _normalized_backward(dY, cache, gamma, axis: int, xp, inplace: bool):
    """The backward pass shared by the normalizations, over ``axis`` (features: -1,
    rows: -2), from X^ = (X - mean) / s with s = sqrt(var + eps) (cache (X^, 1 / s)):

        dbeta = sum over rows of dY,   dgamma = sum over rows of dY * X^
        dX^ = dY * gamma,   dX = (dX^ - mean(dX^) - X^ mean(dX^ X^)) / s   (means over axis)
    """
    xh, inv = cache[0], cache[1]
    grads = _affine_grads(dY, xh, xp)
    if inplace:
        dY *= _rows(gamma)
        dxh = dY
    else:
        dxh = dY * _rows(gamma)
    proj = xp.mean(dxh * xh, axis=axis, keepdims=True)
    dxh -= xp.mean(dxh, axis=axis, keepdims=True)
    dxh -= xh * proj
    dxh *= inv
    return dxh, grads


def _normalize(X, axis: int, eps: float, xp, inplace: bool):
    """(X^, 1 / s, var) with X^ = (X - mean) / s, s = sqrt(var + eps), the mean and the
    biased variance over ``axis`` (kept as a length-1 axis)."""
    mean = xp.mean(X, axis=axis, keepdims=True)
    if inplace:
        X -= mean
        xc = X
    else:
        xc = X - mean
    var = xp.mean(xc * xc, axis=axis, keepdims=True)
    inv = 1.0 / xp.sqrt(var + eps)
    xc *= inv
    return xc, inv, mean, var


def _affine(xh, params):
    """gamma X^ + beta, per feature."""
    y = xh * _rows(params["gamma"])
    y += _rows(params["beta"])
    return y


def _affine_grads(dY, xh, xp) -> dict:
    """Of :func:`_affine`: dbeta = sum over rows of dY, dgamma = sum over rows of dY * X^."""
    return {"beta": xp.sum(dY, axis=-2), "gamma": xp.sum(dY * xh, axis=-2)}


def _eps(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"a normalization's eps must be a number > 0, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class LayerNorm(Layer):
    """Each row normalized over its features, then scaled and shifted (PyTorch's
    convention: biased variance, eps = 1e-5):

        X^ = (X - mean_f X) / sqrt(var_f X + eps),   Y = gamma X^ + beta

    backward: :func:`_normalized_backward` over the features."""

    features: int
    eps: float = 1e-5
    type: ClassVar[str] = "layer_norm"

    def __post_init__(self):
        object.__setattr__(self, "features", _count("LayerNorm features", self.features))
        object.__setattr__(self, "eps", _eps(self.eps))

    def params(self) -> dict[str, Param]:
        return {"gamma": Param((self.features,), fill="ones"), "beta": Param((self.features,))}

    def width(self, inputs):
        _fixed_width(self, inputs, self.features, "features")
        return self.features

    def forward(self, params, X, /, *, train=False, noise=None, inplace=False, xp=None):
        xh, inv, _, _ = _normalize(X, -1, self.eps, xp or array_namespace(X), inplace)
        return _affine(xh, params), (xh, inv)

    def backward(self, params, cache, dY, /, *, inplace=False, input_grad=True, xp=None):
        xp = xp or array_namespace(dY)
        return _normalized_backward(dY, cache, params["gamma"], -1, xp, inplace)


@dataclasses.dataclass(frozen=True)
class BatchNorm(Layer):
    """Each feature normalized over the batch's rows, then scaled and shifted
    (PyTorch's conventions: eps = 1e-5, momentum 0.1):

        training    X^ = (X - mean_rows X) / sqrt(var_rows X + eps)   (biased variance)
                    running_mean <- 0.9 running_mean + 0.1 mean_rows X
                    running_var  <- 0.9 running_var + 0.1 var_rows X * n / (n - 1)
        evaluation  X^ = (X - running_mean) / sqrt(running_var + eps)
        both        Y = gamma X^ + beta

    backward (training): :func:`_normalized_backward` over the rows; (evaluation, a fixed
    affine map): dX = dY gamma / sqrt(running_var + eps). Training needs at least 2 rows
    per batch (the unbiased variance of one row is undefined)."""

    features: int
    eps: float = 1e-5
    momentum: float = 0.1
    type: ClassVar[str] = "batch_norm"
    batch_statistics: ClassVar[bool] = True

    def __post_init__(self):
        object.__setattr__(self, "features", _count("BatchNorm features", self.features))
        object.__setattr__(self, "eps", _eps(self.eps))
        m = self.momentum
        if isinstance(m, bool) or not isinstance(m, int | float) or not 0 <= m <= 1:
            raise ConfigError(f"BatchNorm momentum must be in [0, 1], got {m!r}")
        object.__setattr__(self, "momentum", float(m))

    def params(self) -> dict[str, Param]:
        f = (self.features,)
        return {
            "gamma": Param(f, fill="ones"),
            "beta": Param(f),
            "running_mean": Param(f, trained=False),
            "running_var": Param(f, trained=False, fill="ones"),
        }

    def width(self, inputs):
        _fixed_width(self, inputs, self.features, "features")
        return self.features

    def forward(self, params, X, /, *, train=False, noise=None, inplace=False, xp=None):
        xp = xp or array_namespace(X)
        if not train:
            inv = 1.0 / xp.sqrt(params["running_var"] + self.eps)
            xh = (X - _rows(params["running_mean"])) * _rows(inv)
            return _affine(xh, params), (xh, _rows(inv), None)
        n = X.shape[-2]
        if n < 2:
            raise ConfigError(
                "batch normalization in training needs at least 2 rows per batch, got 1; "
                "choose a batch size that leaves no batch of one row",
                setting="batch_size",
            )
        xh, inv, mean, var = _normalize(X, -2, self.eps, xp, inplace)
        m = self.momentum
        state = {
            "running_mean": (1.0 - m) * params["running_mean"] + m * mean[..., 0, :],
            "running_var": (1.0 - m) * params["running_var"] + (m * n / (n - 1)) * var[..., 0, :],
        }
        return _affine(xh, params), (xh, inv, state)

    def backward(self, params, cache, dY, /, *, inplace=False, input_grad=True, xp=None):
        xp = xp or array_namespace(dY)
        if cache[2] is None:  # evaluation mode: X^ is an affine map of X
            xh, inv, _ = cache
            return dY * (_rows(params["gamma"]) * inv), _affine_grads(dY, xh, xp)
        return _normalized_backward(dY, cache, params["gamma"], -2, xp, inplace)

    def new_state(self, cache) -> dict:
        return cache[2] or {}


LAYERS: dict[str, Any] = {c.type: c for c in (Dense, Activation, Dropout, LayerNorm, BatchNorm)}


def layer_from_json(data) -> Layer:
    """The layer a :meth:`Layer.to_json` dict describes; a ConfigError for anything else."""
    if not isinstance(data, dict) or data.get("type") not in LAYERS:
        kind = data.get("type") if isinstance(data, dict) else data
        raise ConfigError(f"unknown layer {kind!r}; layers are: {', '.join(LAYERS)}")
    cls = LAYERS[data["type"]]
    fields = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in data.items() if k != "type"}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ConfigError(f"layer {data['type']!r} has no setting {unknown[0]!r}")
    try:
        return cls(**given)
    except TypeError as exc:  # a required setting is missing
        raise ConfigError(f"layer {data['type']!r}: {exc}") from None
