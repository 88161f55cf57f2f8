"""Fully connected networks of any depth, and the tutorials' systems, as
:class:`model.network.Sequential` networks.

Notation (row-major, one sample per row; seed 004's convention):

    A_0 = X                                   (N, n_0)
    Z_l = A_{l-1} W_l + b_l                   W_l: (n_{l-1}, n_l), b_l: (n_l,)
    A_l = f_l(Z_l)                            f_L is the output activation

Each hidden block is Dense -> normalization (none, LayerNorm or BatchNorm) -> activation
-> dropout; the output layer is Dense with the output activation. The single units of the
tutorials are one-layer networks (``sizes=(n, 1)``); only file and JSON output call their
parameters ``w`` and ``b`` (see :mod:`model.checkpoint`).
"""

from __future__ import annotations

from backends.errors import ConfigError
from model.activations import get_activation
from model.layers import Activation, BatchNorm, Dense, Dropout, LayerNorm
from model.losses import get_loss
from model.network import INITS, Sequential

__all__ = [
    "INITS",
    "MLP",
    "NORMS",
    "logistic_regression",
    "relu_neuron",
    "single_neuron",
    "two_layer",
]

NORMS: dict[str, type[LayerNorm] | type[BatchNorm] | None] = {
    "none": None,
    "layer": LayerNorm,
    "batch": BatchNorm,
}


def MLP(
    sizes,
    activation="sigmoid",
    output: str | None = None,
    loss: str = "mse",
    bias: bool = True,
    norm: str = "none",
    dropout: float = 0.0,
) -> Sequential:
    """A fully connected network: layer sizes (inputs, hidden..., outputs), activations,
    loss.

    ``activation`` is one name for every hidden layer or a tuple with one per hidden layer;
    ``output`` is the output activation (default: the loss's own link for ``bce`` /
    ``cross_entropy``, otherwise ``identity``). ``bias=False`` drops every bias (seed 004).
    ``norm`` (``none``, ``layer``, ``batch``) normalizes each hidden layer before its
    activation; ``dropout`` (in [0, 1)) follows each hidden activation."""
    sizes = tuple(sizes) if not isinstance(sizes, str | int) else sizes
    if (
        not isinstance(sizes, tuple)
        or len(sizes) < 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)
    ):
        raise ConfigError(
            f"sizes must list at least 2 positive integers (inputs, ..., outputs), got {sizes!r}"
        )
    spec = get_loss(loss)
    if spec.on_logits and output not in (None, spec.link):
        raise ConfigError(
            f"loss {spec.name!r} includes its own {spec.link} output; use output="
            f"{spec.link!r} (or leave it unset), or pick loss 'mse' or 'sse'"
        )
    output = output or spec.link or "identity"
    hidden = (activation,) * (len(sizes) - 2) if isinstance(activation, str) else tuple(activation)
    if len(hidden) != len(sizes) - 2:
        raise ConfigError(
            f"{len(hidden)} hidden activations given for {len(sizes) - 2} hidden layers"
        )
    for name in (*hidden, output):
        get_activation(name)
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; use one of: {', '.join(NORMS)}", setting="norm")
    if dropout:
        Dropout(dropout)  # checks the rate
    layers: list = []
    normalization = NORMS[norm]
    for n_in, n_out, act in zip(sizes[:-2], sizes[1:-1], hidden, strict=True):
        if normalization is None:
            layers.append(Dense(n_in, n_out, act, bias))
        else:
            layers += [Dense(n_in, n_out, "identity", bias), normalization(n_out), Activation(act)]
        if dropout:
            layers.append(Dropout(dropout))
    layers.append(Dense(sizes[-2], sizes[-1], output, bias))
    return Sequential(tuple(layers), loss)


def single_neuron(n_inputs: int = 1) -> Sequential:
    """Seeds 000/001: y_hat = sigma(w.x + b), C = sse (1/2 (y_hat - y)^2)."""
    return MLP((n_inputs, 1), output="sigmoid", loss="sse")


def relu_neuron(n_inputs: int) -> Sequential:
    """Seed 002: y_hat = max(0, w.x + b), C = mse (1/N sum (y_hat - y)^2)."""
    return MLP((n_inputs, 1), output="relu", loss="mse")


def logistic_regression(n_inputs: int) -> Sequential:
    """Seed 003: y_hat = sigma(w.x + b), C = bce; dw = X^T (y_hat - y) / m, db = mean."""
    return MLP((n_inputs, 1), loss="bce")


def two_layer() -> Sequential:
    """Seed 004: 3-4-1, sigmoid hidden and output, no bias, C = sse."""
    return MLP((3, 4, 1), activation="sigmoid", output="sigmoid", loss="sse", bias=False)
