"""Fully connected networks of any depth: the functional core and the seed systems.

Notation (row-major, one sample per row; seed 004's convention):

    A_0 = X                                   (N, n_0)
    Z_l = A_{l-1} W_l + b_l                   W_l: (n_{l-1}, n_l), b_l: (n_l,)
    A_l = f_l(Z_l)                            f_L is the output activation

Backward, with dZ_L from the loss (see ``model.losses``):

    dW_l     = A_{l-1}^T dZ_l
    db_l     = sum over rows of dZ_l
    dA_{l-1} = dZ_l W_l^T,   dZ_{l-1} = dA_{l-1} * f'_{l-1}      (``model.activations``)

Parameters live in a dict ``{"W1": ..., "b1": ..., "W2": ...}``. Every formula above holds
unchanged for replica-stacked parameters (see :mod:`model.replicas`): W_l of shape
(R, n_{l-1}, n_l) and b_l (R, n_l) hold R networks, A_0 is shared (N, n_0) or per replica
(R, N, n_0), and the products are batched matrix products over the leading axis (the
transpose ^T is over the last two axes, the bias is added to every row, db_l sums over
rows, axis -2). Unstacked parameters are the same code with no leading axis. The single units of the
tutorials are one-layer networks (``sizes=(n, 1)``); only file and JSON output call their
parameters ``w`` and ``b`` (see ``model.checkpoint``).
"""

from __future__ import annotations

import dataclasses
import functools
import math

from array_api_compat import array_namespace

from backends.errors import ConfigError
from model.activations import get_activation
from model.losses import get_loss, logit_grad, one_hot

__all__ = [
    "INITS",
    "MLP",
    "logistic_regression",
    "relu_neuron",
    "single_neuron",
    "two_layer",
]

INITS = ("auto", "xavier", "he", "uniform", "zeros")


@dataclasses.dataclass(frozen=True)
class MLP:
    """A fully connected network: layer sizes, activations, loss.

    ``activation`` is one name for every hidden layer or a tuple with one per hidden layer;
    ``output`` is the output activation (default: the loss's own link for ``bce`` /
    ``cross_entropy``, otherwise ``identity``). ``bias=False`` drops every bias (seed 004).
    Instances hold configuration only; parameters are passed in and returned.
    """

    sizes: tuple[int, ...]
    activation: str | tuple[str, ...] = "sigmoid"
    output: str | None = None
    loss: str = "mse"
    bias: bool = True

    def __post_init__(self):
        sizes = tuple(self.sizes)
        if len(sizes) < 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
            raise ConfigError(
                f"sizes must list at least 2 positive integers (inputs, ..., outputs), "
                f"got {self.sizes!r}"
            )
        object.__setattr__(self, "sizes", sizes)
        if not isinstance(self.activation, str):
            object.__setattr__(self, "activation", tuple(self.activation))
        loss = get_loss(self.loss)
        output = self.output or loss.link or "identity"
        if loss.on_logits and output != loss.link:
            raise ConfigError(
                f"loss {loss.name!r} includes its own {loss.link} output; use output="
                f"{loss.link!r} (or leave it unset), or pick loss 'mse' or 'sse'"
            )
        object.__setattr__(self, "output", output)
        hidden = self.layer_activations[:-1]
        if len(hidden) != len(sizes) - 2:
            raise ConfigError(
                f"{len(hidden)} hidden activations given for {len(sizes) - 2} hidden layers"
            )
        for name in self.layer_activations:
            get_activation(name)
        if loss.name == "cross_entropy" and sizes[-1] < 2:
            raise ConfigError(
                "cross_entropy needs at least 2 outputs (one per class); "
                "for 2 classes with 1 output use loss 'bce'"
            )
        if loss.name == "bce" and sizes[-1] != 1:
            raise ConfigError(
                f"bce is the binary loss: it needs 1 output, got {sizes[-1]}; for "
                f"{sizes[-1]} classes use loss 'cross_entropy'"
            )

    @functools.cached_property
    def layer_activations(self) -> tuple[str, ...]:
        """The activation of every layer, hidden ones first, the output's last."""
        hidden = self.activation
        hidden = (hidden,) * (len(self.sizes) - 2) if isinstance(hidden, str) else hidden
        return (*hidden, self.output)

    @functools.cached_property
    def layers(self):
        """Per layer: (weight name, bias name or None, activation forward, its backward)."""
        return tuple(
            (f"W{l}", f"b{l}" if self.bias else None, *get_activation(a))
            for l, a in enumerate(self.layer_activations, start=1)
        )

    @functools.cached_property
    def loss_spec(self):
        """The :class:`model.losses.Loss` this network is trained with."""
        return get_loss(self.loss)

    @property
    def depth(self) -> int:
        """Number of weight layers L."""
        return len(self.sizes) - 1

    @property
    def is_classifier(self) -> bool:
        """True for the losses whose targets are classes (bce, cross_entropy)."""
        return self.loss_spec.on_logits

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter, in order W1, b1, W2, b2, ..."""
        shapes = {}
        for l, (fan_in, fan_out) in enumerate(
            zip(self.sizes[:-1], self.sizes[1:], strict=True), start=1
        ):
            shapes[f"W{l}"] = (fan_in, fan_out)
            if self.bias:
                shapes[f"b{l}"] = (fan_out,)
        return shapes

    def init_params(self, backend, rng, init: str = "auto") -> dict:
        """Draw initial parameters on the host with ``rng`` and move them to ``backend``.

        ``auto``: He normal N(0, 2/fan_in) for relu layers, Xavier/Glorot uniform
        U(+-sqrt(6/(fan_in+fan_out))) for the rest. ``uniform``: U[0, 1), drawn layer by
        layer as seed 004's ``np.random.rand`` does. ``zeros``: all zeros. Biases start at 0.
        """
        if init not in INITS:
            raise ConfigError(f"unknown init {init!r}; use one of: {', '.join(INITS)}")
        params = {}
        for name, shape in self.param_shapes().items():
            if name.startswith("b") or init == "zeros":
                params[name] = backend.xp.zeros(shape, dtype=backend.dtype, device=backend.device)
                continue
            if init == "uniform":
                host = rng.random(shape)
            else:
                fan_in, fan_out = shape
                kind = init
                if kind == "auto":
                    kind = "he" if self.layer_activations[int(name[1:]) - 1] == "relu" else "xavier"
                if kind == "he":
                    host = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
                else:
                    bound = math.sqrt(6.0 / (fan_in + fan_out))
                    host = rng.uniform(-bound, bound, shape)
            params[name] = backend.asarray(host)
        return params

    def prepare_targets(self, Y, /, *, dtype, xp=None):
        """Targets in the form backward expects, as floats of ``dtype``: one-hot rows for
        cross_entropy labels, a column for 1-D targets of the other losses (bce's 0/1
        labels included). Do it once, outside the training loop."""
        xp = xp or array_namespace(Y)
        if self.loss_spec.name == "cross_entropy" and Y.ndim == 1:
            return one_hot(Y, self.sizes[-1], dtype=dtype, xp=xp)
        if Y.ndim == 1:
            Y = xp.reshape(Y, (Y.shape[0], 1))
        return Y if Y.dtype == dtype else xp.astype(Y, dtype)

    def forward(self, params, X, /, *, xp=None):
        """Forward pass: returns ``(A_L, cache)``, the cache holding every A_l and Z_L."""
        xp = xp or array_namespace(X)
        cache = [X]
        A = X
        for w, b, f, _ in self.layers:
            Z = A @ params[w]
            if b is not None:
                Z += params[b][..., None, :]  # Z is this pass's own array; b to every row
            A = f(Z, xp=xp)
            cache.append(A)
        return A, (cache, Z)

    def backward(self, params, cache, Y, /, *, xp=None) -> dict:
        """Gradients of the loss with respect to every parameter (new arrays).

        ``Y`` as from :meth:`prepare_targets`; raw labels and 1-D targets are prepared
        here, at some cost per call."""
        acts, _ = cache
        xp = xp or array_namespace(acts[-1])
        Y = self.prepare_targets(Y, dtype=acts[-1].dtype, xp=xp)
        layers = self.layers
        dZ = self.output_grad(acts[-1], Y, xp=xp)
        grads = {}
        for l in range(self.depth - 1, -1, -1):
            w, b, _, _ = layers[l]
            A_prev = acts[l]
            grads[w] = _mT(A_prev, xp) @ dZ
            if b is not None:
                grads[b] = xp.sum(dZ, axis=-2)
            if l:
                dZ = layers[l - 1][3](dZ @ _mT(params[w], xp), A_prev, xp=xp)
        return grads

    def output_grad(self, A_L, Y, /, *, xp):
        """dC/dZ_L from the output A_L and targets ``Y`` as from :meth:`prepare_targets`:
        :func:`model.losses.logit_grad` for losses on logits, else dC/dA_L through the
        output activation's backward pass."""
        loss = self.loss_spec
        if loss.on_logits:
            return logit_grad(A_L, Y, xp=xp)
        return self.layers[-1][3](loss.grad(A_L, Y, xp=xp), A_L, xp=xp)

    def loss_from_cache(self, cache, Y, /, *, xp=None):
        """The loss value (a 0-d array) of the forward pass that made ``cache``. ``Y`` as
        from :meth:`prepare_targets`; raw labels are prepared here, as in :meth:`backward`."""
        acts, Z_L = cache
        xp = xp or array_namespace(Z_L)
        loss = self.loss_spec
        Y = self.prepare_targets(Y, dtype=Z_L.dtype, xp=xp)
        if loss.value_from_output is not None:
            return loss.value_from_output(acts[-1], Y, xp=xp)
        return loss.value(Z_L if loss.on_logits else acts[-1], Y, xp=xp)

    def loss_value(self, params, X, Y, /, *, xp=None):
        """C(params; X, Y) as a 0-d array."""
        _, cache = self.forward(params, X, xp=xp)
        return self.loss_from_cache(cache, Y, xp=xp)

    def predict(self, params, X, /, *, xp=None):
        """Network output A_L: probabilities for classifiers, values otherwise."""
        return self.forward(params, X, xp=xp)[0]

    def predict_class(self, params, X, /, *, xp=None):
        """Class labels: argmax of the softmax, or sigma(z) > 1/2 for bce (as int64)."""
        xp = xp or array_namespace(X)
        out = self.predict(params, X, xp=xp)
        if self.loss_spec.name == "cross_entropy":
            return xp.argmax(out, axis=-1)
        return xp.astype(out[..., 0] > 0.5, xp.int64)


def _mT(a, xp):
    """a^T over the last two axes: ``a.T`` for a matrix (a view, the cheapest call on
    NumPy), ``xp.matrix_transpose`` for a stack of matrices."""
    return a.T if a.ndim == 2 else xp.matrix_transpose(a)


def single_neuron(n_inputs: int = 1) -> MLP:
    """Seeds 000/001: y_hat = sigma(w.x + b), C = sse (1/2 (y_hat - y)^2)."""
    return MLP((n_inputs, 1), output="sigmoid", loss="sse")


def relu_neuron(n_inputs: int) -> MLP:
    """Seed 002: y_hat = max(0, w.x + b), C = mse (1/N sum (y_hat - y)^2)."""
    return MLP((n_inputs, 1), output="relu", loss="mse")


def logistic_regression(n_inputs: int) -> MLP:
    """Seed 003: y_hat = sigma(w.x + b), C = bce; dw = X^T (y_hat - y) / m, db = mean."""
    return MLP((n_inputs, 1), loss="bce")


def two_layer() -> MLP:
    """Seed 004: 3-4-1, sigmoid hidden and output, no bias, C = sse."""
    return MLP((3, 4, 1), activation="sigmoid", output="sigmoid", loss="sse", bias=False)
