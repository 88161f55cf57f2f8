"""Checks of what the training loop is given, made before it trains: one error naming
the argument and the fix, never a raw NumPy error halfway through (see
:func:`model.fit.fit`). Each check reads back at most a few values: a few
synchronizations per call, none per epoch."""

from __future__ import annotations

from array_api_compat import array_namespace, device, is_dask_array

from backends.errors import DASK_REFUSED, ConfigError, DataError, check_number
from backends.transfer import is_host, is_streamed, to_numpy

__all__ = ["EVAL_ROWS", "check_inputs", "check_schedule", "param_layout"]

EVAL_ROWS = 8192  # rows per block of a check (and of evaluate): bounded temporaries


def param_layout(net, params) -> int | None:
    """None for one network's parameters, R for parameters stacked along a leading axis
    of R networks (:mod:`model.replicas`); a ConfigError naming what is wrong otherwise
    (a missing or unknown name, a shape that fits neither, a value that is not an array)."""
    if not isinstance(params, dict) or not params:
        raise ConfigError(
            f"params must be a dict of arrays (network name -> array), got "
            f"{type(params).__name__}; draw them with network.init_params(backend, rng)"
        )
    shapes = net.param_shapes()
    missing, unknown = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
    if missing or unknown:
        what = f"lacks {', '.join(missing)}" if missing else f"has unknown {', '.join(unknown)}"
        raise ConfigError(
            f"params {what}; this network's parameters are {', '.join(shapes)}: draw them "
            "with network.init_params(backend, rng)"
        )
    counts: set[int | None] = set()
    for name, p in params.items():
        shape = getattr(p, "shape", None)
        if shape is None or not hasattr(p, "dtype"):
            raise ConfigError(
                f"parameter {name} is {_where(p)}, not an array; move it with backend.asarray"
            )
        shape, wanted = tuple(shape), shapes[name]
        stacked = len(shape) == len(wanted) + 1 and shape[1:] == wanted
        counts.add(shape[0] if stacked else None)
        if (shape != wanted and not stacked) or len(counts) > 1:
            raise ConfigError(
                f"parameter {name} has shape {shape}, but this network needs {wanted} (or, "
                f"for R replicas stacked, (R, *{wanted}), the same R for every parameter); "
                "draw them with network.init_params (init_replicas)"
            )
    return counts.pop()


def _where(a) -> str:
    """An array's library and device, for messages ("a numpy array on cpu")."""
    try:
        xp = array_namespace(a)
    except TypeError:
        return f"a {type(a).__name__}"
    return f"a {xp.__name__.removeprefix('array_api_compat.')} array on {device(a)}"


def _dtype_name(dtype) -> str:
    return str(dtype).rpartition(".")[2]


def check_schedule(epochs, batch_size, start_epoch) -> None:
    """ConfigError unless ``0 <= start_epoch <= epochs`` are integers (equal: nothing left
    to train) and ``batch_size`` is None or a positive integer."""
    check_number("start_epoch", start_epoch, integer=True, low=0)
    check_number("epochs", epochs, integer=True, low=start_epoch)
    if batch_size is not None:
        check_number("batch_size", batch_size, integer=True, low=1)


def check_inputs(model, params: dict, X, Y, /, *, names=("X", "Y")) -> bool:
    """Check that the parameters share one array namespace, device and floating dtype,
    and that (X, Y) can train them: both on that device, X with that dtype and Y with it
    too or (classifiers) integer labels; or both host NumPy data to stream (any numeric X,
    cast per batch). Then their shapes and values. Returns True for streamed data. Raises
    ConfigError naming the array that differs and the fix, or DataError for values that
    cannot train."""
    for name, a in zip(names, (X, Y), strict=True):
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise ConfigError(
                f"{name} is {_where(a)}, not an array; convert it with backend.asarray"
            )
    first = _check_params(params)
    xp = array_namespace(first)
    x_name, y_name = names
    if X.shape[0] != Y.shape[0]:
        raise ConfigError(
            f"{x_name} has {X.shape[0]} rows but {y_name} has {Y.shape[0]}; they must match"
        )
    streamed = is_streamed(X, xp) or is_streamed(Y, xp)
    if streamed:
        _check_streamed(model, X, Y, names)
    else:
        _check_on_device(model, first, X, Y, names, xp)
    _check_shapes(model, X, Y, names, streamed=streamed)
    _check_values(model, X, Y, names, streamed=streamed)
    return streamed


def _check_params(params: dict):
    """The first parameter, once every parameter is of its namespace, device and
    floating dtype."""
    first_name, first = next(iter(params.items()))
    if is_dask_array(first):
        raise ConfigError(DASK_REFUSED)
    fix = "draw them with model.init_params(backend, rng), or move each with backend.asarray"
    for name, p in params.items():
        if _where(p) != _where(first):
            raise ConfigError(
                f"parameter {name} is {_where(p)} but {first_name} is {_where(first)}; {fix}"
            )
        if p.dtype != first.dtype or not array_namespace(p).isdtype(p.dtype, "real floating"):
            raise ConfigError(
                f"parameter {name} is {_dtype_name(p.dtype)} and {first_name} is "
                f"{_dtype_name(first.dtype)}; the parameters need one floating dtype: {fix}"
            )
    return first


def _check_streamed(model, X, Y, names) -> None:
    """Both host arrays of numbers (labels: integers too), to stream batch by batch."""
    x_name, y_name = names
    for name, a, other in ((x_name, X, y_name), (y_name, Y, x_name)):
        if not is_host(a):
            raise ConfigError(
                f"{name} is {_where(a)} but {other} is host NumPy data, streamed to the "
                "device batch by batch; pass both as host NumPy arrays, or move both with "
                "backend.asarray"
            )
        kinds = "fiu" if a is X or model.is_classifier else "f"
        if a.dtype.kind not in kinds:
            raise ConfigError(f"{name} holds {a.dtype} values; stream real numbers")


def _check_on_device(model, first, X, Y, names, xp) -> None:
    """Both on the parameters' device; X of their dtype, Y too or integer labels."""
    x_name, y_name = names
    move = "move it with backend.asarray (the parameters' backend)"
    for name, a in ((x_name, X), (y_name, Y)):
        if _where(a) != _where(first):
            raise ConfigError(
                f"{name} is {_where(a)} but the parameters are {_where(first)}; {move}"
            )
    dtype = _dtype_name(first.dtype)
    if X.dtype != first.dtype:
        raise ConfigError(
            f"{x_name} is {_dtype_name(X.dtype)} but the parameters are {dtype}; {move}"
        )
    integral = xp.isdtype(Y.dtype, "integral")
    if integral and not model.is_classifier:
        raise ConfigError(
            f"{y_name} holds integer labels, but the loss {model.loss_spec.name!r} needs "
            f"{dtype} targets; {move}"
        )
    if not integral and Y.dtype != first.dtype:
        labels = " or pass integer class labels" if model.is_classifier else ""
        raise ConfigError(
            f"{y_name} is {_dtype_name(Y.dtype)} but the parameters are {dtype}; {move}{labels}"
        )


def _is_labels(model, Y) -> bool:
    return model.is_classifier and array_namespace(Y).isdtype(Y.dtype, "integral")


def _check_shapes(model, X, Y, names, /, *, streamed: bool) -> None:
    """X of shape (n, d), n >= 1, for the model's d inputs; Y integer class labels of
    shape (n,) (also (n, 1) for one output; (n, K) 0/1 labels for multi-label bce), or
    targets of shape (n, K) (also (n,) when K = 1)."""
    (x_name, y_name), d, k = names, model.n_inputs, model.n_outputs
    if X.ndim != 2 or X.shape[1] != d:
        raise ConfigError(
            f"{x_name} has shape {tuple(X.shape)} but the model takes {d} features per row; "
            f"pass an array of shape (n, {d})"
        )
    if X.shape[0] == 0:
        raise DataError(f"{x_name} has no rows; pass at least one")
    labels = _is_labels(model, Y)
    ok, expected = _target_shape(model, Y, labels)
    if ok:
        return
    fix = ""
    if labels and Y.shape[1:] == (1,):
        fix = "; pass the labels as one column of shape (n,): y.reshape(-1)"
    elif model.is_classifier and Y.ndim == 1:  # labels as floats, likely
        how = "np.asarray(y, dtype=np.int64)" if streamed else (
            "backend.asarray(y, dtype=backend.xp.int64)")  # fmt: skip
        fix = f"; make float labels integers: {how}"
    raise ConfigError(
        f"{y_name} has shape {tuple(Y.shape)}, but this model ({k} outputs, loss "
        f"{model.loss!r}) trains on {expected}{fix}"
    )


def _target_shape(model, Y, labels: bool) -> tuple[bool, str]:
    """Whether Y's shape fits the model's outputs, and the shapes that would."""
    k = model.n_outputs
    if labels and model.multi_label:
        return Y.ndim == 2 and Y.shape[1] == k, f"0/1 labels of shape (n, {k}), one per output"
    if labels:
        ok = Y.ndim == 1 or (k == 1 and Y.shape[1:] == (1,))
        return ok, "integer class labels of shape (n,)" + (" or (n, 1)" if k == 1 else "")
    ok = (Y.ndim == 2 and Y.shape[1] == k) or (Y.ndim == 1 and k == 1)
    if model.loss == "cross_entropy":
        return ok, f"integer class labels of shape (n,) or one-hot rows of shape (n, {k})"
    return ok, f"targets of shape (n, {k})" + (" or (n,)" if k == 1 else "")


def _check_values(model, X, Y, names, /, *, streamed: bool) -> None:
    """A classifier's labels within its classes (0..K-1; 0/1 for bce), or its targets
    within [0, 1]; X and Y finite unless ``streamed`` (a file is checked a block at a
    time before training, :func:`model.data.validate`: a pass here would read it again).
    Each check reads back one value."""
    x_name, y_name = names
    xp = array_namespace(Y)
    labels = _is_labels(model, Y)
    if model.is_classifier:
        lo, hi = to_numpy(xp.stack([xp.min(Y), xp.max(Y)])).tolist()
        classes = 2 if model.loss == "bce" else model.n_outputs
        if labels and (lo < 0 or hi >= classes):
            raise DataError(
                f"{y_name} holds labels from {lo} to {hi}, but the model has {classes} "
                f"classes, labelled 0 to {classes - 1}; map the labels onto 0..{classes - 1} "
                "(model.preprocessing.LabelEncoder does), or size the output layer for them"
            )
        if not labels and (lo < 0 or hi > 1):
            raise DataError(
                f"{y_name} holds targets from {lo:g} to {hi:g}, but the loss {model.loss!r} "
                "takes probabilities in [0, 1] (0/1 values or one-hot rows); pass class labels "
                "as integers, or use a regression loss (mse, sse)"
            )
    if streamed:
        return
    for name, a in [(x_name, X)] + ([] if labels else [(y_name, Y)]):
        if not _all_finite(a, xp):
            raise DataError(
                f"{name} holds NaN or infinite values; drop or impute those rows before training"
            )


def _all_finite(a, xp) -> bool:
    """Whether every value of ``a`` is finite: blocks of EVAL_ROWS rows (temporaries of
    bounded size), one read-back."""
    n = a.shape[0]
    flags = [xp.all(xp.isfinite(a[i : min(i + EVAL_ROWS, n), ...])) for i in range(0, n, EVAL_ROWS)]
    return bool(xp.all(xp.stack(flags))) if flags else True
