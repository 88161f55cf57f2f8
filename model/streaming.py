"""Arrays larger than memory: open a ``.npy`` file, or one member of an uncompressed
``.npz``, as a read-only ``np.memmap`` that :func:`model.fit` streams batch by batch.

    X = open_memmap("train.npz", "X")     # nothing is read yet
    y = open_memmap("train.npz", "y")
    fit(model, params, X, y, optimizer=..., epochs=..., batch_size=128)

The training command does the same with ``--data``: :func:`map_data` maps its X (an
uncompressed ``.npz`` with X and y, or a ``.npy`` table, the target last), and the run
trains on the split's rows of it (:class:`backends.transfer.HostRows`), standardized as
they are read.

Save such files with ``np.save`` / ``np.savez`` (not ``np.savez_compressed``: a compressed
member has no bytes on disk to map), or write one larger than memory piece by piece
through ``np.lib.format.open_memmap(path, mode="w+", dtype=..., shape=...)``.
"""

from __future__ import annotations

import logging
import struct
import zipfile
from pathlib import Path

import numpy as np

from backends.transfer import release_pages
from model.data import DataError, not_a_file, validate

__all__ = ["map_data", "open_memmap"]

logger = logging.getLogger("handgrad")
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local file header (30 bytes)


def open_memmap(path, member: str | None = None) -> np.memmap:
    """The array in ``path`` as a read-only memmap: a ``.npy`` file, or the array called
    ``member`` (``"X"`` or ``"X.npy"``) of an uncompressed ``.npz``. Raises DataError for a
    missing file or member, a compressed member, or an object array."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {not_a_file(path)}; pass an existing .npy or .npz file")
    suffix = path.suffix.lower()  # as model.data.read_file: X.NPY is a .npy
    if suffix == ".npy":
        if member is not None:
            raise DataError(f"{path} is a .npy file, which holds one array: leave out {member!r}")
        return _checked(np.load(path, mmap_mode="r", allow_pickle=False), str(path))
    if suffix != ".npz":
        raise DataError(f"{path}: unknown format {path.suffix!r}; use .npy or .npz")
    with zipfile.ZipFile(path) as z:
        names = [n.removesuffix(".npy") for n in z.namelist()]
        if member is None or member.removesuffix(".npy") not in names:
            raise DataError(
                f"{path}: name the array to open, one of: {', '.join(names)} (got {member!r})"
            )
        info = z.getinfo(member.removesuffix(".npy") + ".npy")
    source = f"{path}[{info.filename}]"
    if info.compress_type != zipfile.ZIP_STORED:
        raise DataError(
            f"{source} is compressed, so it cannot be memory-mapped; save it with np.savez "
            "(not np.savez_compressed), or load it whole with np.load"
        )
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
        name_len, extra_len = fields[-2:]
        f.seek(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
        fmt = np.lib.format
        read_header = (
            fmt.read_array_header_1_0 if fmt.read_magic(f)[0] == 1 else (fmt.read_array_header_2_0)
        )
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject:
        raise DataError(f"{source} holds Python objects; save numbers only")
    order = "F" if fortran else "C"
    return _checked(np.memmap(path, dtype, "r", offset, shape, order), source)


def map_data(path, min_bytes: int = 0, *, read: bool = True):
    """``(X, y)`` of a data file with X memory-mapped (nothing of it read but to check it
    is finite) and y loaded: an uncompressed ``.npz`` with arrays X and y, or a ``.npy``
    2-D table whose last column is y. None for a file that cannot be mapped (a CSV, a
    compressed ``.npz``, an ``.npz`` without X and y), or whose X takes fewer than
    ``min_bytes``: such a file is loaded whole instead, and only then checked.

    ``read=False`` returns ``(X, None)``, leaving the passes over the file (y, and X for
    NaN and inf) to another process; whether the file maps is decided alike either way."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            table = open_memmap(path)
            if table.ndim != 2 or table.shape[1] < 2:
                return None  # load_file says what is wrong with it
            X, y = table[:, :-1], np.empty(table.shape[0], table.dtype)
            if X.nbytes < min_bytes:
                return None
            if not read:
                return X, None
            step = max(1, 2**25 // table.itemsize // table.shape[1])  # rows of ~32 MB
            for start in range(0, table.shape[0], step):  # the column, a block at a time
                y[start : start + step] = table[start : start + step, -1]
                release_pages(table)
        elif path.suffix.lower() == ".npz":
            X, y = open_memmap(path, "X"), open_memmap(path, "y")
            if X.nbytes < min_bytes:
                return None
            if not read:
                return X, None
            y = np.array(y)
        else:
            return None
    except (DataError, OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # not mappable: load_file reads it, or says what is wrong with it
    if X.nbytes >= 2**28:  # the passes below take seconds per GB: say what is going on
        logger.info("data %s: %.1f GB, checked a block at a time", path, X.nbytes / 1e9)
    return validate(X, y, str(path))


def _checked(a: np.ndarray, source: str) -> np.memmap:
    if a.ndim not in (1, 2):
        raise DataError(f"{source}: expected a 1-D or 2-D array, got shape {a.shape}")
    return a
