"""Memory-mapped files, and the pieces that move rows: opening .npy / .npz members as
memmaps, releasing their pages, gathering rows into reused buffers, streaming batches."""

from __future__ import annotations

import numpy as np
import pytest

from backends.transfer import host_batches, release_pages, take_rows
from model.data import DataError
from model.streaming import open_memmap


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return rng.normal(size=(7, 3)), rng.integers(0, 5, 7)


def test_npy_and_uncompressed_npz_members_open_as_read_only_memmaps(tmp_path, arrays):
    X, y = arrays
    np.save(tmp_path / "x.npy", X)
    np.savez(tmp_path / "d.npz", X=X, y=y, F=np.asfortranarray(X))
    for got, want in (
        (open_memmap(tmp_path / "x.npy"), X),
        (open_memmap(tmp_path / "d.npz", "X"), X),
        (open_memmap(tmp_path / "d.npz", "y.npy"), y),
        (open_memmap(tmp_path / "d.npz", "F"), X),
    ):
        assert isinstance(got, np.memmap) and not got.flags.writeable
        np.testing.assert_array_equal(got, want)


def test_unusable_files_are_refused_with_the_fix(tmp_path, arrays):
    X, _ = arrays
    np.savez_compressed(tmp_path / "c.npz", X=X)
    np.savez(tmp_path / "d.npz", X=X)
    with pytest.raises(DataError, match=r"c\.npz\[X\.npy\] is compressed.*np\.savez \(not"):
        open_memmap(tmp_path / "c.npz", "X")
    with pytest.raises(DataError, match=r"name the array to open, one of: X \(got 'y'\)"):
        open_memmap(tmp_path / "d.npz", "y")
    with pytest.raises(DataError, match="no such file"):
        open_memmap(tmp_path / "nothing.npy")
    with pytest.raises(DataError, match=r"unknown format '\.csv'"):
        (tmp_path / "a.csv").write_text("1\n")
        open_memmap(tmp_path / "a.csv")


def test_released_pages_read_back_the_same_and_private_changes_are_kept(tmp_path, arrays):
    X, _ = arrays
    np.save(tmp_path / "x.npy", X)
    ro = open_memmap(tmp_path / "x.npy")
    release_pages(ro[2:5])  # a view finds its map
    np.testing.assert_array_equal(ro, X)
    cow = np.load(tmp_path / "x.npy", mmap_mode="c")
    cow[0, 0] = 42.0
    release_pages(cow)  # would drop the private page: must do nothing
    assert cow[0, 0] == 42.0
    release_pages(X)  # not a memmap: nothing to do


def test_take_rows_into_a_buffer_equals_a_fresh_gather(backend, arrays):
    """The NumPy/CuPy fast path (out=) and the portable xp.take give the same rows."""
    X = backend.asarray(arrays[0])
    idx = backend.asarray([4, 0, 6], dtype=backend.xp.int64)
    buf = backend.xp.empty((3, 3), dtype=backend.dtype, device=backend.device)
    got = take_rows(X, idx, xp=backend.xp, out=buf)
    np.testing.assert_array_equal(backend.to_numpy(got), arrays[0][[4, 0, 6]])
    np.testing.assert_array_equal(
        backend.to_numpy(got), backend.to_numpy(take_rows(X, idx, xp=backend.xp))
    )


@pytest.mark.parametrize("order", [None, [3, 6, 0, 1, 5, 2, 4]])
def test_host_batches_arrive_on_the_device_in_order(backend, arrays, order, tmp_path):
    """Batches of 3 (the last one short), cast to the requested dtypes; on CuPy this is
    the double-buffered stream."""
    X, y = arrays
    np.save(tmp_path / "x.npy", X)
    order = None if order is None else np.asarray(order)
    xp = backend.xp
    f32 = backend.with_dtype("float32").dtype
    got = [
        (backend.to_numpy(a), backend.to_numpy(b), a.dtype, b.dtype)
        for a, b in host_batches(
            (open_memmap(tmp_path / "x.npy"), y),
            order,
            3,
            xp=xp,
            device=backend.device,
            dtypes=(f32, xp.int64),
        )
    ]
    rows = np.arange(7) if order is None else order
    assert [len(g[0]) for g in got] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), X[rows].astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), y[rows])
    assert all(g[2] == f32 and g[3] == xp.int64 for g in got)
