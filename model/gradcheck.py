"""Gradient checking by central finite differences in float64.

For every parameter element p_i:

    numeric_i = [8 (C(p + h e_i) - C(p - h e_i)) - (C(p + 2h e_i) - C(p - 2h e_i))] / (12 h)
    error_i   = |analytic_i - numeric_i| / max(|analytic_i|, |numeric_i|, floor)

The fourth-order central stencil has truncation error O(h^4), so h = 1e-3 keeps both it
(~1e-12) and float64 rounding (~1e-16 / h) far below the 1e-6 a correct gradient meets.
Keep every |z| away from activation kinks (ReLU at 0) by more than 2h.

``floor`` keeps entries whose true gradient is 0 or tiny (dead ReLUs, say) from dividing
rounding noise (~1e-12 absolute for a loss of order 1) by noise: below it the error is
absolute. Works on any backend; values are perturbed on the parameters' own device.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from array_api_compat import array_namespace, device

__all__ = ["gradcheck", "gradcheck_model"]


def gradcheck(
    loss: Callable, params: dict, grads: dict, *, h: float = 1e-3, floor: float = 1e-6
) -> dict[str, float]:
    """Worst relative error of ``grads`` (analytic) per parameter name.

    ``loss(params) -> 0-d array`` must be a pure function of ``params`` (float64 arrays).
    """
    xp = array_namespace(*params.values())
    for name, p in params.items():
        if p.dtype != xp.float64:
            raise ValueError(
                f"gradcheck needs float64 parameters, {name!r} is {p.dtype}; "
                "build them with get_backend(..., dtype='float64')"
            )
    worst = {}
    for name, p in params.items():
        g = grads[name]
        err = 0.0
        for idx in itertools.product(*(range(s) for s in p.shape)):
            c = {k: _shifted(loss, params, name, idx, k * h, xp) for k in (-2, -1, 1, 2)}
            numeric = (8.0 * (c[1] - c[-1]) - (c[2] - c[-2])) / (12.0 * h)
            analytic = float(g[idx])
            denom = max(abs(analytic), abs(numeric), floor)
            err = max(err, abs(analytic - numeric) / denom)
        worst[name] = err
    return worst


def _shifted(loss, params, name, idx, delta, xp) -> float:
    """C with ``params[name][idx]`` moved by ``delta``: p + delta e_idx, a new array (no
    item assignment, so immutable arrays take it too; p + 0 leaves the others exact)."""
    p = params[name]
    unit = np.zeros(p.shape)
    unit[idx] = 1.0
    q = p + delta * xp.asarray(unit, dtype=p.dtype, device=device(p))
    return float(loss({**params, name: q}))


def gradcheck_model(model, params: dict, X, Y, **kwargs) -> dict[str, float]:
    """:func:`gradcheck` of ``model.backward`` against ``model.loss_value`` on (X, Y)."""
    _, cache = model.forward(params, X)
    grads = model.backward(params, cache, Y)
    return gradcheck(lambda p: model.loss_value(p, X, Y), params, grads, **kwargs)
