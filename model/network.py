"""A network: a sequence of layers and the loss it trains with.

    A_0 = X,   A_i = layer_i(A_{i-1}),   output A_L
    backward: dC/dA_L from the loss (or dC/dZ_L for a loss on logits), then each layer's
              backward in reverse order (model.layers)

Parameters live in one dict under the network's names: a layer's own name followed by
the number of the Dense layer it is or follows (``W1, b1`` for the first Dense layer,
``gamma1, beta1`` for a normalization after it, ``running_mean1, running_var1`` for
BatchNorm's state, ``W2, b2`` ...). The roles come from the layers (:class:`Param`):
:attr:`Sequential.trained` (what the optimizer updates), :attr:`Sequential.decayed`
(what weight decay applies to).

Every formula holds unchanged for replica-stacked parameters (see :mod:`model.replicas`):
each parameter with a leading axis of R networks, X shared (N, n_0) or per replica
(R, N, n_0).
"""

from __future__ import annotations

import dataclasses
import functools
import math

from array_api_compat import array_namespace

from backends.errors import ConfigError
from model.layers import Activation, Dense, Layer, Param, layer_from_json
from model.losses import get_loss, logit_grad, one_hot
from model.optimizers import replica_scale

__all__ = ["INITS", "Sequential"]

INITS = ("auto", "xavier", "he", "uniform", "zeros")


@dataclasses.dataclass(frozen=True)
class Sequential:
    """Layers applied in order, trained with ``loss``. Instances hold configuration
    only; parameters are passed in and returned. A loss on logits (``bce``,
    ``cross_entropy``) needs the last layer to end in its link (sigmoid, softmax): a Dense
    layer with that activation, or that Activation layer."""

    layers: tuple
    loss: str = "mse"

    def __post_init__(self):
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers or not all(isinstance(layer, Layer) for layer in layers):
            raise ConfigError(
                f"a network is a non-empty sequence of layers (Dense, Activation, Dropout, "
                f"LayerNorm, BatchNorm), got {self.layers!r}"
            )
        if not any(isinstance(layer, Dense) for layer in layers):
            raise ConfigError("a network needs at least one Dense layer")
        width = None
        for layer in layers:
            width = layer.width(width)
        loss = get_loss(self.loss)
        last = layers[-1]
        link = getattr(last, "activation", getattr(last, "name", None))
        if loss.on_logits and link != loss.link:
            raise ConfigError(
                f"loss {loss.name!r} includes its own {loss.link} output: end the network "
                f"with a Dense layer of activation {loss.link!r} (or leave the output unset "
                f"in MLP), or pick loss 'mse' or 'sse'"
            )
        outputs = self.sizes[-1]
        if loss.name == "cross_entropy" and outputs < 2:
            raise ConfigError(
                "cross_entropy needs at least 2 outputs (one per class); "
                "for 2 classes with 1 output use loss 'bce'"
            )
        seen: dict[str, int] = {}
        for i, names in enumerate(self._names):
            for name in names.values():
                if name in seen:
                    raise ConfigError(
                        f"layers {seen[name]} and {i} both have a parameter {name!r}: one "
                        "normalization per Dense layer"
                    )
                seen[name] = i

    # ------------------------------------------------------------------ structure

    @functools.cached_property
    def _names(self) -> tuple[dict[str, str], ...]:
        """Per layer, its parameters' names -> the network's names."""
        out, dense = [], 0
        for layer in self.layers:
            dense += isinstance(layer, Dense)
            out.append({k: f"{k}{dense}" for k in layer.params()})
        return tuple(out)

    @functools.cached_property
    def specs(self) -> dict[str, Param]:
        """Every parameter's network name -> its :class:`Param` (shape and role), in
        layer order."""
        return {
            names[k]: p
            for layer, names in zip(self.layers, self._names, strict=True)
            for k, p in layer.params().items()
        }

    @functools.cached_property
    def trained(self) -> tuple[str, ...]:
        """The parameters the optimizer updates, in layer order (an order every process
        shares: ranks lay gradients out by it)."""
        return tuple(k for k, p in self.specs.items() if p.trained)

    @functools.cached_property
    def decayed(self) -> tuple[str, ...]:
        """The parameters weight decay applies to (the Dense weights), in layer order."""
        return tuple(k for k, p in self.specs.items() if p.decay)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter, in order W1, b1, ..., W2, b2, ..."""
        return {k: p.shape for k, p in self.specs.items()}

    @functools.cached_property
    def _dense(self) -> tuple[Dense, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, Dense))

    @property
    def sizes(self) -> tuple[int, ...]:
        """The input width, then each Dense layer's width."""
        return (self._dense[0].inputs, *(d.outputs for d in self._dense))

    @property
    def depth(self) -> int:
        """Number of Dense (weight) layers L."""
        return len(self._dense)

    @functools.cached_property
    def n_inputs(self) -> int:
        return self.sizes[0]

    @functools.cached_property
    def n_outputs(self) -> int:
        return self.sizes[-1]

    @property
    def bias(self) -> bool:
        """Whether every Dense layer has a bias."""
        return all(d.bias for d in self._dense)

    @functools.cached_property
    def layer_activations(self) -> tuple[str, ...]:
        """Per Dense layer, the activation its block applies: its own, or (after a
        normalization) the Activation layer that follows it."""
        out = []
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Dense):
                continue
            act = layer.activation
            for after in self.layers[i + 1 :]:
                if isinstance(after, Dense):
                    break
                if act == "identity" and isinstance(after, Activation):
                    act = after.name
            out.append(act)
        return tuple(out)

    @functools.cached_property
    def loss_spec(self):
        """The :class:`model.losses.Loss` this network is trained with."""
        return get_loss(self.loss)

    @property
    def is_classifier(self) -> bool:
        """True for the losses whose targets are classes (bce, cross_entropy)."""
        return self.loss_spec.on_logits

    @property
    def multi_label(self) -> bool:
        """bce over several outputs: one independent 0/1 label per output (a sigmoid
        each), as scikit-learn's MLPClassifier fits a 0/1 label matrix."""
        return self.loss == "bce" and self.n_outputs > 1

    @functools.cached_property
    def batch_statistics(self) -> bool:
        """Whether a training step mixes the rows of a batch (BatchNorm)."""
        return any(layer.batch_statistics for layer in self.layers)

    @functools.cached_property
    def stochastic(self) -> bool:
        """Whether a training step draws random numbers (dropout)."""
        return any(getattr(layer, "rate", 0.0) > 0 for layer in self.layers)

    def to_json(self) -> dict:
        """The description a model file stores (:meth:`from_json` reads it back)."""
        return {"loss": self.loss, "layers": [layer.to_json() for layer in self.layers]}

    @classmethod
    def from_json(cls, data) -> Sequential:
        """The network a :meth:`to_json` dict describes; a ConfigError for anything else."""
        if not isinstance(data, dict) or set(data) != {"loss", "layers"}:
            raise ConfigError("a network description has exactly the keys 'loss' and 'layers'")
        if not isinstance(data["layers"], list):
            raise ConfigError("a network's 'layers' is a list of layer descriptions")
        return cls(tuple(layer_from_json(d) for d in data["layers"]), data["loss"])

    # ------------------------------------------------------------------ parameters

    def init_params(self, backend, rng, init: str = "auto") -> dict:
        """Initial parameters, drawn on the host with ``rng`` and moved to ``backend``.

        Dense weights: ``auto``: He normal N(0, 2/fan_in) where the block's activation is
        relu, Xavier/Glorot uniform U(+-sqrt(6/(fan_in+fan_out))) elsewhere; ``he``,
        ``xavier``; ``uniform``: U[0, 1), drawn layer by layer as seed 004's
        ``np.random.rand`` does; ``zeros``: all zeros. Biases, shifts and running means
        start at 0, scales and running variances at 1."""
        if init not in INITS:
            raise ConfigError(f"unknown init {init!r}; use one of: {', '.join(INITS)}")
        try:
            draw_uniform = rng.random
        except AttributeError:
            raise ConfigError(
                f"rng must be a numpy.random.Generator (backends.host_rng(seed)), got "
                f"{type(rng).__name__}",
                setting="seed",
            ) from None
        xp, params = backend.xp, {}
        activations = iter(self.layer_activations)
        for name, spec in self.specs.items():
            if spec.fill == "weight":
                kind = init
                if kind == "auto":
                    kind = "he" if next(activations) == "relu" else "xavier"
                if kind != "zeros":
                    params[name] = backend.asarray(_draw(kind, spec.shape, rng, draw_uniform))
                    continue
            fill = xp.ones if spec.fill == "ones" else xp.zeros
            params[name] = fill(spec.shape, dtype=backend.dtype, device=backend.device)
        return params

    # ------------------------------------------------------------------ the passes

    def forward(self, params, X, /, *, train=False, noise=None, inplace=False, xp=None):
        """Forward pass: ``(A_L, cache)``. ``train``: training mode (batch statistics,
        dropout, whose masks ``noise`` draws; see :class:`model.layers.Noise`).
        ``inplace``: layers may overwrite the arrays the pass makes (NumPy, CuPy; see
        :mod:`model.variants`), and :meth:`backward` then the cache."""
        xp = xp or array_namespace(X)
        shape: tuple = getattr(X, "shape", ())
        if len(shape) not in (2, 3) or shape[-1] != self.n_inputs:
            self._refuse_features(X)
        caches, A, own = [], X, False  # own: A is this pass's to overwrite (X is not)
        for layer, pairs, writes_own, keeps_input, caches_output in self._plan:
            # A Dense layer writes into its own product only; the others into their input.
            write = inplace and (own or writes_own) and not keeps_input
            local = {k: params[n] for k, n in pairs}
            out, cache = layer.forward(local, A, train=train, noise=noise, inplace=write, xp=xp)
            own = (out is not A or own) and not caches_output
            caches.append(cache)
            A = out
        return A, (caches, A)

    @functools.cached_property
    def _plan(self) -> tuple:
        """Per layer: (layer, its (name, network name) pairs, whether it writes only into
        its own product (Dense), whether it must keep its input (the last layer, when the
        loss reads its logits), whether its backward reads the output it returned)."""
        loss, last = self.loss_spec, len(self.layers) - 1
        return tuple(
            (layer, tuple(names.items()), isinstance(layer, Dense),
             i == last and loss.on_logits and loss.value_from_output is None,
             layer.caches_output)
            for i, (layer, names) in enumerate(zip(self.layers, self._names, strict=True))
        )  # fmt: skip

    def backward(self, params, cache, Y, /, *, scale=1.0, inplace=False, xp=None) -> dict:
        """Gradients of the loss (times ``scale``, a number or one per replica) with respect
        to every trained parameter (new arrays). ``Y`` as from :meth:`prepare_targets`; raw
        labels are prepared here, at some cost per call. ``inplace`` as the forward pass
        was."""
        caches, A_L = cache
        xp = xp or array_namespace(A_L)
        if Y.ndim != 2 or Y.dtype != A_L.dtype:
            Y = self.prepare_targets(Y, dtype=A_L.dtype, xp=xp)
        if not isinstance(scale, int | float):
            scale = replica_scale(scale, A_L, xp)  # per replica: (R, 1, 1)
        grads: dict = {}
        loss = self.loss_spec
        if loss.on_logits:  # dC/dZ of the last layer's output, the loss's link included
            dX = logit_grad(A_L, Y, xp=xp, scale=scale, out=A_L if inplace else None)
        else:
            dX = loss.grad(A_L, Y, xp=xp, scale=scale)
        for i, backward, pairs in self._backward_plan:
            local = {k: params[n] for k, n in pairs}
            dX, g = backward(local, caches[i], dX, inplace=inplace, input_grad=i > 0, xp=xp)
            for k, n in pairs:
                if k in g:
                    grads[n] = g[k]
        return grads

    @functools.cached_property
    def _backward_plan(self) -> tuple:
        """(index, the backward to call, the layer's name pairs), last layer first; the
        last layer's backward starts from dC/dZ under a loss on logits."""
        last = len(self.layers) - 1
        return tuple(
            (i, layer.backward_z if self.loss_spec.on_logits and i == last else layer.backward,
             pairs)
            for i, (layer, pairs, *_) in reversed(list(enumerate(self._plan)))
        )  # fmt: skip

    @functools.cached_property
    def _widths(self) -> tuple:
        """Each layer's input width (None where no earlier layer fixes it)."""
        widths: list[int | None] = []
        width = None
        for layer in self.layers:
            widths.append(width)
            width = layer.width(width)
        return tuple(widths)

    def skip_noise(self, noise) -> None:
        """Draw what a training step's forward pass draws, and nothing else: a rank with
        no rows in a batch keeps its generator in step with the others."""
        for layer, width in zip(self.layers, self._widths, strict=True):
            if getattr(layer, "rate", 0.0) > 0:
                noise.uniform(width)

    def new_state(self, cache) -> dict:
        """The state parameters a training-mode forward pass renewed (BatchNorm's running
        statistics), under the network's names."""
        out = {}
        for i in self.stateful:
            for k, v in self.layers[i].new_state(cache[0][i]).items():
                out[self._names[i][k]] = v
        return out

    @functools.cached_property
    def stateful(self) -> tuple[int, ...]:
        """The layers with state parameters (renewed by a training-mode forward pass)."""
        return tuple(i for i, layer in enumerate(self.layers)
                     if any(not p.trained for p in layer.params().values()))  # fmt: skip

    def _refuse_features(self, X) -> None:
        shape, d = getattr(X, "shape", None), self.n_inputs
        got = f"shape {tuple(shape)}" if shape is not None else f"a {type(X).__name__}"
        raise ConfigError(
            f"X has {got} but the network takes {d} features per row; pass an array of "
            f"shape (n, {d})"
        )

    # ------------------------------------------------------------------ loss, prediction

    def prepare_targets(self, Y, /, *, dtype, xp=None):
        """Targets in the form backward expects, as floats of ``dtype``: one-hot rows for
        cross_entropy labels, a column for 1-D targets of the other losses (bce's 0/1
        labels included), a 0/1 label matrix (multi-label bce) as floats. Do it once,
        outside the training loop."""
        xp = xp or array_namespace(Y)
        if self.loss == "cross_entropy" and Y.ndim == 1:
            return one_hot(Y, self.n_outputs, dtype=dtype, xp=xp)
        if Y.ndim == 1:
            Y = xp.reshape(Y, (Y.shape[0], 1))
        return Y if Y.dtype == dtype else xp.astype(Y, dtype)

    def loss_from_cache(self, cache, Y, /, *, xp=None, inplace=False):
        """The loss value (a 0-d array, (R,) for replicas) of the forward pass that made
        ``cache``. ``Y`` as from :meth:`prepare_targets`; raw labels are prepared here."""
        caches, A_L = cache
        xp = xp or array_namespace(A_L)
        loss = self.loss_spec
        if Y.ndim != 2 or Y.dtype != A_L.dtype:
            Y = self.prepare_targets(Y, dtype=A_L.dtype, xp=xp)
        if loss.value_from_output is not None:
            return loss.value_from_output(A_L, Y, xp=xp, keep=inplace)
        z = self.layers[-1].logits(caches[-1]) if loss.on_logits else A_L
        return loss.value(z, Y, xp=xp)

    def loss_value(self, params, X, Y, /, *, train=False, noise=None, xp=None):
        """C(params; X, Y) as a 0-d array (evaluation mode unless ``train``)."""
        _, cache = self.forward(params, X, train=train, noise=noise, xp=xp)
        return self.loss_from_cache(cache, Y, xp=xp)

    def predict(self, params, X, /, *, xp=None):
        """Network output A_L (evaluation mode): probabilities for classifiers, values
        otherwise."""
        return self.forward(params, X, xp=xp)[0]

    def predict_class(self, params, X, /, *, xp=None):
        """Class labels: argmax of the softmax, or sigma(z) > 1/2 for bce (as int64): one
        per row, or a 0/1 row of labels for multi-label bce."""
        xp = xp or array_namespace(X)
        return self.classes_of(self.predict(params, X, xp=xp), xp=xp)

    def classes_of(self, out, /, *, xp):
        """The predicted classes of the network's output ``out`` (see :meth:`predict_class`)."""
        if self.loss == "cross_entropy":
            return xp.argmax(out, axis=-1)
        if self.multi_label:
            return xp.astype(out > 0.5, xp.int64)
        return xp.astype(out[..., 0] > 0.5, xp.int64)


def _draw(kind: str, shape, rng, uniform):
    """Host weights of ``shape`` (fan_in, fan_out) drawn as ``kind`` says."""
    if kind == "uniform":
        return uniform(shape)
    fan_in, fan_out = shape
    if kind == "he":
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, shape)
