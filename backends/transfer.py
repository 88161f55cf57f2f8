"""Rows on the move: a batch of rows gathered on its device, and batches of rows streamed
from host memory (NumPy arrays, memory-mapped files) to a device.

Training gathers each batch's rows as it needs them (``take_rows``), never a shuffled copy
of the whole data. Host data that the device namespace cannot read directly (a NumPy
memmap with CuPy or array-api-strict parameters) goes through :func:`host_batches`:
each batch is gathered on the host into a reused buffer and copied to the device; on
CuPy the copy of batch k+1 runs on its own stream while batch k computes.
"""

from __future__ import annotations

import math
import mmap

import numpy as np
from array_api_compat import (
    array_namespace,
    is_array_api_strict_namespace,
    is_cupy_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

__all__ = [
    "PAGE_RELEASE_ROWS",
    "HostRows",
    "batch_bounds",
    "host_batches",
    "is_host",
    "is_streamed",
    "release_pages",
    "row_chunks",
    "take_rows",
    "to_numpy",
]

# Rows read from a memmap between two releases of its pages. A random row of a cached
# file mapped up to ~1 MB into the process (the kernel maps whole page-cache folios around
# a fault): releasing every 128 rows kept a 957 MB file's epoch at 270 MB peak RSS (every
# 16384 rows: all of it), for ~20% more time on 784-256-10 batch 128.
PAGE_RELEASE_ROWS = 128


def batch_bounds(n: int, batch: int, rank: int = 0, size: int = 1):
    """``(start, stop)`` of each batch of ``batch`` rows out of ``n`` (the last may be
    short); with ``size`` > 1, rank ``rank``'s part of each: of a batch (s, e) of m = e - s
    rows, (s + rank m // size, s + (rank + 1) m // size), so the parts of the ranks tile
    the batch in order and differ by at most one row (a part may be empty)."""
    return [
        (s + rank * (e - s) // size, s + (rank + 1) * (e - s) // size)
        for s, e in ((s, min(s + batch, n)) for s in range(0, n, batch))
    ]


class HostRows:
    """Rows ``rows`` (host integer indices, in that order) of a host array ``base``, read
    as float64 and mapped x -> (x - shift) / scale per column when ``shift`` and ``scale``
    are given: a split of a memory-mapped file, standardized as it is read, without a
    copy of it being made. Streamed like a memmap (:func:`host_batches`); ``a[i:j]`` reads
    rows i..j-1 of the view as a new array."""

    def __init__(self, base: np.ndarray, rows=None, shift=None, scale=None):
        self.base = base
        self.rows = np.arange(base.shape[0]) if rows is None else np.asarray(rows, np.int64)
        self.shift, self.scale = shift, scale
        self.shape = (len(self.rows), *base.shape[1:])
        self.ndim = base.ndim
        self.dtype = np.dtype(np.float64)

    def scaled(self, shift, scale) -> HostRows:
        """The same rows mapped x -> (x - shift) / scale."""
        return HostRows(self.base, self.rows, shift, scale)

    def take(self, positions, out=None) -> np.ndarray:
        """Rows ``positions`` of the view (``out`` float64 of their shape, if given),
        gathered :data:`PAGE_RELEASE_ROWS` at a time with a memmap's pages released in
        between: random rows of a file map ~1 MB each (see that constant)."""
        rows = self.rows[positions]
        out = np.empty((len(rows), *self.shape[1:]), np.float64) if out is None else out
        for s in range(0, len(rows), PAGE_RELEASE_ROWS):
            piece = rows[s : s + PAGE_RELEASE_ROWS]
            np.copyto(out[s : s + len(piece)], self.base[piece])  # not np.take: see _gather
            if len(rows) > PAGE_RELEASE_ROWS:
                release_pages(self.base)
        if self.shift is not None:
            out -= self.shift
            out /= self.scale
        return out

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("HostRows reads slices of rows; use take() for indices")
        return self.take(np.arange(*key.indices(self.shape[0])))


def is_host(a) -> bool:
    """True for host data: a NumPy array (memmaps included) or :class:`HostRows`."""
    return isinstance(a, np.ndarray | HostRows)


def is_streamed(a, xp) -> bool:
    """True when ``a`` is host data to stream in batches to namespace ``xp``'s device: any
    NumPy array when ``xp`` is not NumPy, and a memory-mapped one or HostRows always."""
    if isinstance(a, HostRows | np.memmap):
        return True
    return isinstance(a, np.ndarray) and not is_numpy_namespace(xp)


def row_chunks(a, nbytes: int = 2**25):
    """``a`` (host array or :class:`HostRows`) as consecutive float64 row blocks of about
    ``nbytes`` each, releasing a memmap's pages after each block: one bounded-memory pass."""
    step = max(1, nbytes // max(1, 8 * math.prod(a.shape[1:])))
    for start in range(0, a.shape[0], step):
        yield np.asarray(a[start : start + step], dtype=np.float64)
        release_pages(a)


def to_numpy(array) -> np.ndarray:
    """A new host NumPy copy of an array of any backend (one device-to-host copy). The
    only way arrays cross to the host: CuPy refuses implicit conversion.

    Each library through its own conversion (CuPy ``.get()``, PyTorch ``.numpy()`` of
    the host tensor, JAX's ``__array__``, which fetches from its device); any other
    namespace through DLPack, never ``np.array`` on an array it does not know."""
    xp = array_namespace(array)
    if is_numpy_namespace(xp):
        return np.array(array, copy=True)
    if is_cupy_namespace(xp):
        return array.get()
    if is_torch_namespace(xp):
        host = array.detach().cpu()  # the tensor itself when it is on the CPU: copy below
        return np.array(host.numpy(), copy=True)
    if is_jax_namespace(xp):
        return np.array(array, copy=True)  # JAX's own device-to-host transfer
    if is_array_api_strict_namespace(xp):
        array = array.to_device(xp.Device("CPU_DEVICE"))
    return np.array(np.from_dlpack(array), copy=True)


def take_rows(a, indices, /, *, xp, out=None):
    """``a[indices]`` along the first axis (``xp.take``). NumPy and CuPy write the rows into
    ``out`` (shape ``(len(indices), ...)``, a's dtype) when it is given, so a loop can reuse
    one buffer; other namespaces (PyTorch, JAX, array-api-strict) ignore ``out`` and return
    a new array: use the result, never ``out``. Same values either way."""
    if out is not None and (is_numpy_namespace(xp) or is_cupy_namespace(xp)):
        return a.take(indices, axis=0, out=out)  # the method: no wrappers around it, per batch
    return xp.take(a, indices, axis=0)


def release_pages(a) -> None:
    """Drop the pages of a read-only memory-mapped array from this process's resident set.

    Reading rows of an ``np.memmap`` maps their pages into the process, and they stay
    counted in its RSS until unmapped: an epoch over a 4 GB file would hold 4 GB. The
    pages stay in the OS page cache, so reading them again costs a minor fault, not a
    disk read. Does nothing for other arrays, or for a writable copy-on-write map (mode
    ``"c"``), whose private changes this would lose. HostRows: its base's pages."""
    if isinstance(a, HostRows):
        a = a.base
    mode = getattr(a, "mode", None)
    base = a
    while base is not None and not isinstance(base, mmap.mmap):
        mode = mode or getattr(base, "mode", None)
        base = getattr(base, "base", None)
    if base is None or not hasattr(base, "madvise"):
        return
    if mode not in ("r", "r+", "readonly", "readwrite"):
        return
    base.madvise(mmap.MADV_DONTNEED)


def host_batches(arrays, order, batch: int, /, *, xp, device, dtypes, bounds=None):
    """Stream host arrays to ``device`` in batches: yields, for each batch, a tuple with
    that batch's rows of every array in ``arrays``, as ``dtypes`` (one per array).

    ``order`` is a host permutation of the rows (batch k is ``order[k*batch:(k+1)*batch]``)
    or None for row order. ``bounds``, a list of (start, stop) of at most ``batch`` rows,
    replaces the batches of ``batch`` rows (batch k is ``order[start:stop]``): a rank's
    parts of the batches, so that it reads only its own rows. Yielded arrays may live in
    reused device buffers: use them before asking for the next batch. A memmap's pages are
    released every :data:`PAGE_RELEASE_ROWS` rows (:func:`release_pages`)."""
    bounds = batch_bounds(arrays[0].shape[0], batch) if bounds is None else bounds
    if is_cupy_namespace(xp):
        yield from _cupy_batches(arrays, order, batch, bounds, xp=xp, dtypes=dtypes)
        return
    buffers = [np.empty((batch, *a.shape[1:]), dtype=a.dtype) for a in arrays]
    for rows in _host_rows(arrays, order, bounds, lambda k: buffers):
        if is_numpy_namespace(xp):  # already where it computes: no second copy
            yield tuple(r.astype(dt, copy=False) for r, dt in zip(rows, dtypes, strict=True))
            continue
        yield tuple(
            xp.asarray(r, dtype=dt, device=device, copy=True)
            for r, dt in zip(rows, dtypes, strict=True)
        )


def _host_rows(arrays, order, bounds, buffers_for):
    """Yield each batch's host rows (batch k: ``bounds[k]``), written into
    ``buffers_for(k)`` (one buffer of at least as many rows per array); releases memmap
    pages as it goes."""
    since_release = 0
    for k, (start, stop) in enumerate(bounds):
        rows = [buf[: stop - start] for buf in buffers_for(k)]
        for a, out in zip(arrays, rows, strict=True):
            if isinstance(a, HostRows):
                a.take(slice(start, stop) if order is None else order[start:stop], out=out)
            elif order is None:
                np.copyto(out, a[start:stop])
            else:
                _gather(a, order[start:stop], out)
        yield rows
        since_release += stop - start
        if since_release >= PAGE_RELEASE_ROWS:
            for a in arrays:
                release_pages(a)
            since_release = 0
    for a in arrays:
        release_pages(a)


def _gather(a, indices, out) -> None:
    """``out[:] = a[indices]`` (rows). ``np.take`` into ``out`` for a C-contiguous ``a``
    (with ``mode="clip"``: only then does NumPy write straight into ``out``; ``indices``
    are in range). Fancy indexing otherwise: ``np.take`` first makes a contiguous copy of
    all of a non-contiguous ``a``, which for a column slice of a mapped 4 GB file meant
    reading all of it, into memory, for every batch."""
    if a.flags.c_contiguous:
        np.take(a, indices, axis=0, out=out, mode="clip")
    else:
        np.copyto(out, a[indices])


def _cupy_batches(arrays, order, batch, bounds, /, *, xp, dtypes):
    """Double-buffered host -> GPU batches: two pinned host buffers and two device buffers
    per array; batch k+1 is gathered on the host and copied on a side stream while the
    current stream computes batch k. Events keep a buffer from being overwritten while
    its copy or its batch's step may still be running."""
    import cupy
    import cupyx

    def buffers(make):
        return [[make((batch, *a.shape[1:]), dtype=a.dtype) for a in arrays] for _ in range(2)]

    pinned, on_device = buffers(cupyx.empty_pinned), buffers(cupy.empty)
    copy_stream = cupy.cuda.Stream(non_blocking=True)
    compute = cupy.cuda.get_current_stream()
    copied, used = [None, None], [None, None]

    def pinned_for(k):
        """Pinned slot k % 2, once the copy of batch k-2 out of it has finished."""
        if copied[k % 2] is not None:
            copied[k % 2].synchronize()
        return pinned[k % 2]

    def stage(k, rows):
        """Start copying batch k's pinned rows into device slot k % 2, once batch k-2's
        step no longer reads it."""
        slot = k % 2
        if used[slot] is not None:
            copy_stream.wait_event(used[slot])
        for r, dev in zip(rows, on_device[slot], strict=True):
            dev[: r.shape[0]].set(r, stream=copy_stream)
        copied[slot] = copy_stream.record()
        return r.shape[0]

    host_rows = _host_rows(arrays, order, bounds, pinned_for)
    sizes = [stage(0, next(host_rows))]
    for k, rows in enumerate(host_rows, start=1):  # gathers batch k while k-1 computes
        sizes.append(stage(k, rows))
        yield _ready(k - 1, sizes[-2], on_device, dtypes, compute, copied)
        used[(k - 1) % 2] = compute.record()
    last = len(sizes) - 1
    yield _ready(last, sizes[-1], on_device, dtypes, compute, copied)


def _ready(k, size, on_device, dtypes, compute, copied):
    """Batch k's device rows as ``dtypes``, after the compute stream waits for its copy."""
    compute.wait_event(copied[k % 2])
    return tuple(
        dev[:size].astype(dt, copy=False) for dev, dt in zip(on_device[k % 2], dtypes, strict=True)
    )
