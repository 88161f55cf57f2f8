"""The in-place training step: the portable step's math with less overhead, for NumPy.

A small-batch step on the CPU is dispatch-bound: a 64-64-10 step makes ~35 array calls
of a few microseconds each, allocates a fresh array for most of them, and runs Python
between them (the gradient dict, the optimizer's per-parameter checks). This step
makes the same computation as ``model.forward`` -> ``loss_from_cache`` -> ``backward``
-> ``optimizer.update`` (the equations are in :mod:`model.mlp`, :mod:`model.activations`,
:mod:`model.losses` and :mod:`model.optimizers`) with three changes, none of which
changes the math:

- elementwise work, the optimizer's included, is done in place (``out=``) on the
  products' own arrays, and no gradient array outlives its layer;
- a scale is folded into the output layer's gradient, D_L = scale dC/dZ_L, so that every
  later product is already scaled: G_l = A_{l-1}^T D_l = scale dC/dW_l. For SGD the
  scale is lr, and the plain update is one subtraction, W_l <- W_l - G_l (weight decay
  adds scale lambda W_l to G_l first); Adam, whose step does not scale with g, takes 1;
- a sigmoid layer adds its bias and negates in one pass, (-b) - Z = -(Z + b).

It covers unstacked parameters (no replica axis), the optimizers SGD (plain, momentum,
Nesterov) and Adam with Python number ``lr`` and ``weight_decay``, and every hidden
activation but softmax; the output layer of ``cross_entropy`` has its own in-place
softmax and loss, the other losses use the portable functions on the (small) output
layer. :func:`fast_step` returns None for anything else, and for namespaces other than
NumPy, whose functions need not take ``out=``: the caller then runs the portable step,
the reference this one is tested against (equal to rounding). ``HANDGRAD_FAST=0`` turns
it off.

Two differences show only on the way to divergence: with SGD the products of the
backward pass are lr times the portable step's, so with a huge lr they overflow to inf
(and the fit stops with ``DivergenceError``) up to an epoch sooner; and relu's backward
multiplies by (A > 0) where the portable one selects, so an infinite gradient at a
zero unit becomes NaN instead of 0.
"""

from __future__ import annotations

import os

from array_api_compat import is_numpy_namespace

from backends.errors import ConfigError
from model.activations import sigmoid_floor
from model.optimizers import SGD, Adam

__all__ = ["ENV_VAR", "fast_enabled", "fast_step", "uses_fast_step"]

ENV_VAR = "HANDGRAD_FAST"


def fast_enabled() -> bool:
    """``$HANDGRAD_FAST``: 1, unset or blank for on, 0 for off (spaces around ignored);
    anything else is a ConfigError."""
    raw = os.environ.get(ENV_VAR, "")
    value = raw.strip() or "1"
    if value not in ("0", "1"):
        raise ConfigError(
            f"the environment variable {ENV_VAR}={raw!r} is not understood; set it to 1 "
            "(the in-place step where it applies, the default) or 0 (the portable step "
            "always), or unset it"
        )
    return value == "1"


def uses_fast_step(model, optimizer, params: dict, /, *, xp, comm=None) -> bool:
    """Whether :func:`fast_step` applies to this training (module docstring): NumPy
    parameters without a replica axis, SGD or Adam with number hyperparameters, no softmax
    hidden layer, no communicator (its allreduce sits between gradient and update), and
    ``$HANDGRAD_FAST`` not 0."""
    return (
        fast_enabled()
        and comm is None
        and is_numpy_namespace(xp)
        and type(optimizer) in (SGD, Adam)
        and all(isinstance(v, int | float) for v in (optimizer.lr, optimizer.weight_decay))
        and all(p.ndim == (2 if k.startswith("W") else 1) for k, p in params.items())
        and all(a in _HIDDEN for a in model.layer_activations[:-1])
    )


def fast_step(model, optimizer, params: dict, batch: int, /, *, xp, comm=None):
    """The in-place step for ``model`` trained by ``optimizer`` on batches of at most
    ``batch`` rows, as ``step(params, state, xb, yb) -> (params, state, loss)`` with the
    portable step's meaning (``yb`` prepared targets, ``loss`` C of the batch before the
    step, ``params`` updated in place); None where it does not apply
    (:func:`uses_fast_step`)."""
    if not uses_fast_step(model, optimizer, params, xp=xp, comm=comm):
        return None
    return _Step(model, optimizer, params, batch, xp)


class _Step:
    """The step, with what it reuses from one call to the next."""

    def __init__(self, model, optimizer, params, batch, xp):
        self.model, self.xp, self.optimizer = model, xp, optimizer
        adam = type(optimizer) is Adam
        self.scale = 1.0 if adam else optimizer.lr  # D_L = scale dC/dZ_L
        self.decay = self.scale * optimizer.weight_decay  # G gains scale lambda W
        self.update = self._adam if adam else self._momentum if optimizer.momentum else self._sgd
        dtype = params["W1"].dtype
        *hidden, self.output = model.layers  # (W name, b name or None, f, f's backward)
        self.names = [(w, b) for w, b, _, _ in model.layers]
        self.hidden = [  # as model.layers, with this module's in-place f and backward
            (w, b, *_HIDDEN[a])
            for (w, b, _, _), a in zip(hidden, model.layer_activations[:-1], strict=True)
        ]
        self.ones_row = xp.ones((1, batch), dtype=dtype)  # 1^T D: a bias's gradient
        self.ones_col = xp.ones((model.sizes[-1], 1), dtype=dtype)  # row sums of the output
        self.low = sigmoid_floor(dtype, xp=xp)
        self.tiny = float(xp.finfo(dtype).smallest_normal)
        ce = model.loss_spec.name == "cross_entropy"
        self.head = self._softmax_head if ce else self._portable_head

    def __call__(self, params, state, xb, yb):
        """Forward, loss, backward and update of one batch; see the module docstring."""
        acts = [xb]  # A_0 .. A_{L-1}
        for w, b, f, _ in self.hidden:  # Z_l = A_{l-1} W_l, then A_l = f(Z_l + b_l) in place
            Z = acts[-1] @ params[w]
            f(self, Z, None if b is None else params[b])
            acts.append(Z)
        w, b, _, _ = self.output
        Z = acts[-1] @ params[w]
        if b is not None:
            Z += params[b]
        loss, D = self.head(Z, yb)  # D = scale dC/dZ_L
        state = {**state, "step": state["step"] + 1}
        update = self.update(state)
        for l in range(len(acts) - 1, -1, -1):  # D = scale dC/dZ_{l+1}, A = A_l
            w, b = self.names[l]
            W, A = params[w], acts[l]
            D_prev = D @ W.T if l else None  # scale dC/dA_l, with W before its step
            G = A.T @ D
            if self.decay:
                G += self.decay * W
            update(w, W, G)
            if b is not None:
                update(b, params[b], (self.ones_row[:, : D.shape[0]] @ D)[0, ...])
            if l:
                self.hidden[l - 1][3](self, D_prev, A)
                D = D_prev
        return params, state, loss

    # Updates: from G = scale g (g the gradient, weight decay included; scale = lr for
    # SGD, 1 for Adam), the equations of model.optimizers, in place.

    def _sgd(self, state):
        def update(name, p, G):
            p -= G  # p <- p - lr g

        return update

    def _momentum(self, state):
        mu, velocity = self.optimizer.momentum, state["velocity"]

        def update(name, p, G):
            v = velocity[name]
            v *= mu
            v -= G  # v <- mu v - lr g
            if self.optimizer.nesterov:
                G -= mu * v
                p -= G  # p <- p + mu v - lr g
            else:
                p += v

        return update

    def _adam(self, state):
        xp, opt, t = self.xp, self.optimizer, state["step"]
        b1, b2 = opt.beta1, opt.beta2
        step_size, s_scale = opt.lr / (1.0 - b1**t), 1.0 / (1.0 - b2**t)

        def update(name, p, G):
            m, s = state["m"][name], state["s"][name]
            T = G * G
            T *= 1.0 - b2
            s *= b2
            s += T  # s <- b2 s + (1 - b2) g^2
            G *= 1.0 - b1
            m *= b1
            m += G  # m <- b1 m + (1 - b1) g
            xp.multiply(s, s_scale, out=T)
            xp.sqrt(T, out=T)
            T += opt.eps
            xp.divide(m, T, out=T)
            T *= step_size
            p -= T  # p <- p - lr m_hat / (sqrt(s_hat) + eps)

        return update

    def _softmax_head(self, Z, Y):
        """Softmax of Z in place (``model.activations.softmax``), the loss as
        ``model.losses.cross_entropy_from_probs`` computes it, and D_L = scale (P - Y) / N."""
        xp, m = self.xp, Z.shape[0]
        Z -= xp.maximum.reduce(Z, axis=-1, keepdims=True)
        xp.exp(Z, out=Z)
        Z /= Z @ self.ones_col
        p = (Z * Y) @ self.ones_col  # p_i = sum_k P_ik Y_ik
        xp.maximum(p, self.tiny, out=p)
        xp.log(p, out=p)
        Z -= Y
        Z *= self.scale / m
        return -xp.add.reduce(p, axis=None) / m, Z

    def _portable_head(self, Z, Y):
        """The output activation, loss and dC/dZ_L of the portable step, times scale."""
        model = self.model
        A = self.output[2](Z, xp=self.xp)
        loss = model.loss_from_cache(([A], Z), Y, xp=self.xp)
        D = model.output_grad(A, Y, xp=self.xp)
        D *= self.scale  # a new array (never A or Z): scaling it in place is safe
        return loss, D

    # Hidden activations: forward (Z to f(Z + b) in place) and backward (D to D f'(Z) in
    # place, from A = f(Z)), the formulas of model.activations.

    def _sigmoid(self, Z, b):
        xp = self.xp
        if b is None:
            xp.negative(Z, out=Z)
        else:
            xp.subtract(-b, Z, out=Z)  # -(Z + b)
        xp.minimum(Z, -self.low, out=Z)  # -max(z, low): e^-z cannot overflow
        xp.exp(Z, out=Z)
        Z += 1.0
        xp.divide(1.0, Z, out=Z)

    def _sigmoid_back(self, D, A):
        T = 1.0 - A
        T *= A
        D *= T

    def _tanh(self, Z, b):
        if b is not None:
            Z += b
        self.xp.tanh(Z, out=Z)

    def _tanh_back(self, D, A):
        T = A * A
        self.xp.subtract(1.0, T, out=T)
        D *= T

    def _relu(self, Z, b):
        if b is not None:
            Z += b
        self.xp.maximum(Z, 0.0, out=Z)

    def _relu_back(self, D, A):
        D *= A > 0

    def _identity(self, Z, b):
        if b is not None:
            Z += b

    def _identity_back(self, D, A):
        pass


_HIDDEN = {
    "sigmoid": (_Step._sigmoid, _Step._sigmoid_back),
    "tanh": (_Step._tanh, _Step._tanh_back),
    "relu": (_Step._relu, _Step._relu_back),
    "identity": (_Step._identity, _Step._identity_back),
}
