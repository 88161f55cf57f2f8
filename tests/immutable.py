"""An immutable array API namespace, to prove that code never relies on mutation.

JAX (and Dask, ndonnx) arrays are immutable: ``p -= g`` rebinds the name ``p`` to a new
array and whatever else held the old one (a dict of parameters) keeps the old values, so
an optimizer that updates in place "trains" without changing anything, silently. This
module gives the same semantics on top of NumPy, so that the check runs everywhere, in
milliseconds, without JAX:

- :class:`ImmutableArray` wraps a NumPy array. Arithmetic returns new arrays; the
  in-place operators (``+=``, ``*=``, ...) return new arrays too, as on JAX, leaving every
  other reference to the old array unchanged; item assignment (``a[i] = v``) raises
  TypeError, as on JAX; implicit conversion to NumPy (``np.asarray(a)``) raises TypeError,
  as on CuPy: arrays cross to the host through DLPack (``backends.to_numpy``).
- :data:`xp` is its namespace (``a.__array_namespace__()``, so
  ``array_api_compat.array_namespace(a) is xp``): every function of array-api-compat's
  NumPy namespace, taking and returning ImmutableArrays. It is not NumPy's namespace to
  ``array_api_compat.is_numpy_namespace``, so NumPy-only fast paths are not taken.
- :func:`immutable_backend` builds a :class:`backends.Backend` around it, which
  ``model.fit`` and the rest can be driven with::

      backend = immutable_backend("float64")
      params = model.init_params(backend, host_rng(0))
      X = backend.asarray(X_host)
"""

from __future__ import annotations

import operator
import types

import array_api_compat.numpy as _np_xp
import numpy as np

from backends import Backend

__all__ = ["ImmutableArray", "immutable_backend", "xp"]

DEVICE = "cpu"


def _unwrap(obj):
    """NumPy arrays inside ``obj`` (an ImmutableArray, or tuples, lists, dicts of them)."""
    if isinstance(obj, ImmutableArray):
        return obj._a
    if isinstance(obj, tuple):
        return (
            type(obj)(*map(_unwrap, obj)) if hasattr(obj, "_fields") else tuple(map(_unwrap, obj))
        )
    if isinstance(obj, list):
        return [_unwrap(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(obj):
    """ImmutableArrays for the NumPy arrays (and NumPy scalars) inside ``obj``."""
    if isinstance(obj, np.ndarray | np.generic):
        return ImmutableArray(np.asarray(obj))
    if isinstance(obj, tuple):
        return type(obj)(*map(_wrap, obj)) if hasattr(obj, "_fields") else tuple(map(_wrap, obj))
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


class ImmutableArray:
    """A NumPy array that cannot change: see the module docstring."""

    __slots__ = ("_a",)
    __array_ufunc__ = None  # NumPy defers to our reflected operators (x_np * a)
    __hash__ = None  # as NumPy's: == is elementwise

    def __init__(self, array: np.ndarray):
        a = np.array(array, copy=True)  # ours alone: nothing outside can write into it
        a.flags.writeable = False
        object.__setattr__(self, "_a", a)

    def __setattr__(self, name, value):
        raise AttributeError(f"ImmutableArray has no attribute to set ({name!r})")

    # -- the standard's attributes -------------------------------------------------------
    def __array_namespace__(self, api_version=None):
        return xp

    @property
    def dtype(self):
        return self._a.dtype

    @property
    def shape(self):
        return self._a.shape

    @property
    def ndim(self):
        return self._a.ndim

    @property
    def size(self):
        return self._a.size

    @property
    def device(self):
        return DEVICE

    @property
    def T(self):
        return ImmutableArray(self._a.T)

    @property
    def mT(self):
        return ImmutableArray(np.swapaxes(self._a, -1, -2))

    def to_device(self, device, /, *, stream=None):
        if device != DEVICE:
            raise ValueError(f"unknown device {device!r}; the immutable namespace has {DEVICE!r}")
        return self

    # -- host crossings: DLPack and Python scalars only -----------------------------------
    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()

    def __array__(self, *args, **kwargs):
        raise TypeError(
            "implicit conversion of an ImmutableArray to NumPy is not allowed (as on CuPy): "
            "use backends.to_numpy, or np.from_dlpack"
        )

    def __bool__(self):
        return bool(self._a)

    def __int__(self):
        return int(self._a)

    def __float__(self):
        return float(self._a)

    def __complex__(self):
        return complex(self._a)

    def __index__(self):
        return operator.index(self._a)

    # -- indexing: reads only -------------------------------------------------------------
    def __getitem__(self, key):
        return ImmutableArray(self._a[_unwrap(key)])

    def __setitem__(self, key, value):
        raise TypeError(
            "ImmutableArray does not support item assignment (as JAX arrays do not): build "
            "a new array (xp.where, xp.concat, array-api-extra's at())"
        )

    def __repr__(self):
        return f"ImmutableArray({self._a!r})"

    # -- operators: every one returns a new array -----------------------------------------
    def _op(self, other, fn):
        return ImmutableArray(np.asarray(fn(self._a, _unwrap(other))))

    def _rop(self, other, fn):
        return ImmutableArray(np.asarray(fn(_unwrap(other), self._a)))

    def __neg__(self):
        return ImmutableArray(-self._a)

    def __pos__(self):
        return ImmutableArray(+self._a)

    def __abs__(self):
        return ImmutableArray(abs(self._a))

    def __invert__(self):
        return ImmutableArray(~self._a)


def _binary(name: str, fn) -> None:
    setattr(ImmutableArray, f"__{name}__", lambda self, other: self._op(other, fn))
    setattr(ImmutableArray, f"__r{name}__", lambda self, other: self._rop(other, fn))
    # As on JAX: a += b is a = a + b, a new array; other references keep the old one.
    setattr(ImmutableArray, f"__i{name}__", lambda self, other: self._op(other, fn))


for _name in (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul",
    "and", "or", "xor", "lshift", "rshift",
):  # fmt: skip
    _binary(_name, getattr(operator, _name if _name not in ("and", "or") else f"{_name}_"))

for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(
        ImmutableArray,
        f"__{_name}__",
        (lambda fn: lambda self, other: self._op(other, fn))(getattr(operator, _name)),
    )


def _function(fn):
    def wrapped(*args, **kwargs):
        return _wrap(fn(*_unwrap(args), **_unwrap(kwargs)))

    wrapped.__name__ = wrapped.__qualname__ = getattr(fn, "__name__", "function")
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _namespace(name: str, source) -> types.ModuleType:
    """A module with every public name of ``source``: functions wrapped, the rest as is
    (dtypes, constants, ``__array_namespace_info__``, ``__array_api_version__``)."""
    module = types.ModuleType(name, "The immutable array namespace (tests/immutable.py).")
    for attr in dir(source):
        if attr.startswith("_") and attr not in ("__array_api_version__",):
            continue
        value = getattr(source, attr)
        if isinstance(value, types.ModuleType):
            continue
        if isinstance(value, type) or not callable(value):  # dtypes, constants
            setattr(module, attr, value)
        else:
            setattr(module, attr, _function(value))
    return module


xp = _namespace("immutable", _np_xp)
xp.__array_namespace_info__ = _np_xp.__array_namespace_info__
xp.linalg = _namespace("immutable.linalg", _np_xp.linalg)
xp.fft = _namespace("immutable.fft", _np_xp.fft)


def immutable_backend(dtype: str = "float64") -> Backend:
    """A Backend over :data:`xp` (host-seeded init, ``asarray``, ``to_numpy`` all work)."""
    return Backend("immutable", xp, DEVICE, getattr(xp, dtype), False, "immutable")
