"""A line search meeting the strong Wolfe conditions, on host scalars.

Along a descent direction d from x, with phi(a) = f(x + a d) and phi'(a) = g(x + a d)'d
(phi'(0) < 0), a step a > 0 is accepted when

    phi(a) <= phi(0) + c1 a phi'(0)          (sufficient decrease)
    |phi'(a)| <= c2 |phi'(0)|                (curvature, strong form)

with 0 < c1 < c2 < 1 (1e-4 and 0.9 for quasi-Newton methods). The search is Nocedal &
Wright's (Numerical Optimization, 2nd ed., algorithms 3.5 and 3.6) as SciPy's
``scalar_search_wolfe2`` implements it: from the first trial, double the step until it
brackets an acceptable one (the sufficient decrease fails, phi stops decreasing, or phi'
turns non-negative), then zoom in on the bracket [a_lo, a_hi] by the minimizer of the
cubic through (a_lo, phi_lo, phi'_lo), (a_hi, phi_hi) and the previous a_hi, falling
back to the quadratic through the first two, then to bisection, whenever the minimizer
lies within 20% (cubic) or 10% (quadratic) of the bracket's ends. A non-finite phi or
phi' counts as phi = +inf: the step is too long.

The search is a generator, so that several searches (one per replica) run in lockstep on
one batched evaluation: it yields each trial step and is sent (phi(a), phi'(a)) for it;
it returns (a, phi(a), phi'(a)) of the step it accepts, or None when it finds no step
that lowers phi within ``max_evals`` trials. Out of trials, it returns the lowest point it
found with a sufficient decrease (a_lo of the zoom; the last trial while bracketing),
which meets the first condition but perhaps not the second.
"""

from __future__ import annotations

import math
from collections.abc import Generator

__all__ = ["C1", "C2", "MAX_EVALS", "strong_wolfe"]

C1, C2 = 1e-4, 0.9
MAX_EVALS = 25  # trials per search; PyTorch's LBFGS allows 25, SciPy 10 + 10

Result = tuple[float, float, float] | None
Search = Generator[float, tuple[float, float], Result]


def _value(sent) -> tuple[float, float]:
    phi, dphi = (float(v) for v in sent)
    return (phi, dphi) if math.isfinite(phi) and math.isfinite(dphi) else (math.inf, math.nan)


def strong_wolfe(
    phi0: float, dphi0: float, step: float, *, c1: float = C1, c2: float = C2,
    max_evals: int = MAX_EVALS,
) -> Search:  # fmt: skip
    """Search for a step meeting the strong Wolfe conditions, starting with ``step`` (see
    the module docstring). ``dphi0`` must be negative."""
    if not dphi0 < 0:
        raise ValueError(f"phi'(0) must be negative (a descent direction), got {dphi0}")
    a_prev, phi_prev, dphi_prev = 0.0, phi0, dphi0
    a = step
    for evals in range(1, max_evals + 1):
        phi, dphi = _value((yield a))
        if phi > phi0 + c1 * a * dphi0 or (evals > 1 and phi >= phi_prev):
            bracket = (a_prev, a, phi_prev, phi, dphi_prev)
            return (yield from _zoom(*bracket, phi0, dphi0, c1, c2, max_evals - evals))
        if abs(dphi) <= -c2 * dphi0:
            return a, phi, dphi
        if dphi >= 0:
            bracket = (a, a_prev, phi, phi_prev, dphi)
            return (yield from _zoom(*bracket, phi0, dphi0, c1, c2, max_evals - evals))
        a_prev, phi_prev, dphi_prev = a, phi, dphi
        a = 2.0 * a
    return a_prev, phi_prev, dphi_prev  # still decreasing sufficiently: the last trial


def _zoom(a_lo, a_hi, phi_lo, phi_hi, dphi_lo, phi0, dphi0, c1, c2, evals) -> Search:
    """Algorithm 3.6: [a_lo, a_hi] (either order) brackets an acceptable step; a_lo is the
    best trial so far that decreases phi sufficiently, phi'(a_lo) (a_hi - a_lo) < 0."""
    a_rec, phi_rec = 0.0, phi0
    for i in range(evals):
        a = _trial(i, a_lo, a_hi, phi_lo, phi_hi, dphi_lo, a_rec, phi_rec)
        if a is None:  # the bracket shrank below rounding
            break
        phi, dphi = _value((yield a))
        if phi > phi0 + c1 * a * dphi0 or phi >= phi_lo:
            a_rec, phi_rec = a_hi, phi_hi
            a_hi, phi_hi = a, phi
            continue
        if abs(dphi) <= -c2 * dphi0:
            return a, phi, dphi
        if dphi * (a_hi - a_lo) >= 0:
            a_rec, phi_rec = a_hi, phi_hi
            a_hi, phi_hi = a_lo, phi_lo
        else:
            a_rec, phi_rec = a_lo, phi_lo
        a_lo, phi_lo, dphi_lo = a, phi, dphi
    return (a_lo, phi_lo, dphi_lo) if a_lo > 0 else None


def _trial(i, a_lo, a_hi, phi_lo, phi_hi, dphi_lo, a_rec, phi_rec) -> float | None:
    """The next trial inside the bracket: cubic, else quadratic, else bisection; None
    when the bracket is empty in floating point."""
    lo, hi = min(a_lo, a_hi), max(a_lo, a_hi)
    width = hi - lo
    if not lo < lo + 0.5 * width < hi:
        return None
    if i > 0:
        a = _cubic_min(a_lo, phi_lo, dphi_lo, a_hi, phi_hi, a_rec, phi_rec)
        if a is not None and lo + 0.2 * width <= a <= hi - 0.2 * width:
            return a
    a = _quadratic_min(a_lo, phi_lo, dphi_lo, a_hi, phi_hi)
    if a is not None and lo + 0.1 * width <= a <= hi - 0.1 * width:
        return a
    return a_lo + 0.5 * (a_hi - a_lo)


def _cubic_min(a, fa, fpa, b, fb, c, fc) -> float | None:
    """The minimizer of the cubic through (a, fa), (b, fb), (c, fc) with slope fpa at a
    (f(x) = A (x-a)^3 + B (x-a)^2 + fpa (x-a) + fa); None when it has none."""
    db, dc = b - a, c - a
    try:
        denom = (db * dc) ** 2 * (db - dc)
        rb, rc = fb - fa - fpa * db, fc - fa - fpa * dc
        A = (dc * dc * rb - db * db * rc) / denom
        B = (-dc * dc * dc * rb + db * db * db * rc) / denom
        radical = B * B - 3.0 * A * fpa
        x = a + (-B + math.sqrt(radical)) / (3.0 * A)
    except (ZeroDivisionError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) else None


def _quadratic_min(a, fa, fpa, b, fb) -> float | None:
    """The minimizer of the quadratic through (a, fa), (b, fb) with slope fpa at a."""
    db = b - a
    try:
        B = (fb - fa - fpa * db) / (db * db)
        x = a - fpa / (2.0 * B)
    except (ZeroDivisionError, OverflowError):
        return None
    return x if math.isfinite(x) else None
