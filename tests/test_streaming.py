"""Memory-mapped files, and the pieces that move rows: opening .npy / .npz members as
memmaps, releasing their pages, gathering rows into reused buffers, streaming batches."""

from __future__ import annotations

import json
import tracemalloc

import _cli
import numpy as np
import pytest
import train
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import model.config as config_module
from backends.transfer import HostRows, host_batches, release_pages, take_rows
from model.config import RunConfig, prepare_data
from model.data import DataError, load_dataset
from model.run import Run
from model.streaming import open_memmap
from model.trained import load_checkpoint


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


# ------------------------------------------------------------- data files streamed by a run


@pytest.fixture
def digit_files(tmp_path):
    """Digits with labels {3, ..., 12} as an uncompressed .npz, a .npy table (labels last)
    and a compressed .npz, which cannot be mapped."""
    X, y = load_dataset("digits")
    y = y + 3
    np.savez(tmp_path / "d.npz", X=X, y=y)
    np.save(tmp_path / "d.npy", np.column_stack([X, y]))
    np.savez_compressed(tmp_path / "c.npz", X=X, y=y)
    return tmp_path


@pytest.mark.parametrize("name", ["d.npz", "d.npy"])
def test_streamed_data_is_the_loaded_data_row_for_row(digit_files, name):
    """A streamed split reads, standardized, exactly the rows that a loaded split holds;
    same statistics, labels and fingerprint (a run may stream or not on resume)."""
    config = RunConfig(data=str(digit_files / name), standardize=True, seed=5)
    loaded, streamed = (prepare_data(config, stream=s) for s in (False, True))
    assert isinstance(streamed.X, HostRows) and streamed.streamed and not loaded.streamed
    for a, b in ((streamed.X, loaded.X), (streamed.X_val, loaded.X_val)):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a[:], b)
        np.testing.assert_array_equal(a.take(np.array([7, 0, 3])), b[[7, 0, 3]])
    np.testing.assert_array_equal(streamed.y, loaded.y)
    np.testing.assert_array_equal(streamed.standardizer.sd, loaded.standardizer.sd)
    assert streamed.fingerprint == loaded.fingerprint
    X, y = load_dataset("digits")  # and the split is scikit-learn's, scaled by its scaler
    X_tr, X_va, _, _ = train_test_split(X, y, test_size=0.2, random_state=5, stratify=y)
    scaler = StandardScaler().fit(X_tr)
    np.testing.assert_allclose(streamed.X_val[:], scaler.transform(X_va), rtol=1e-12, atol=1e-12)


def test_only_mappable_files_stream(digit_files, monkeypatch):
    """A compressed .npz or a CSV is loaded even when streaming is asked for; by default a
    file streams from STREAM_BYTES up."""
    assert not prepare_data(RunConfig(data=str(digit_files / "c.npz")), stream=True).streamed
    path = str(digit_files / "d.npz")
    assert not prepare_data(RunConfig(data=path)).streamed
    monkeypatch.setattr(config_module, "STREAM_BYTES", 1797 * 64 * 8)
    assert prepare_data(RunConfig(data=path)).streamed


def test_a_streamed_run_trains_the_parameters_of_a_loaded_one(backend, digit_files, monkeypatch):
    """Minibatch adam with standardization and a validation split, float64: a run that
    streams its file (STREAM_BYTES 0) ends with the parameters and history of one that
    loaded it, and says and records that it streamed."""
    config = RunConfig(data=str(digit_files / "d.npz"), hidden=(8,), batch_size=100,
                       standardize=True, epochs=3, dtype="float64")  # fmt: skip
    loaded = Run.start(config, digit_files / "loaded")
    loaded.train(backend)
    monkeypatch.setattr(config_module, "STREAM_BYTES", 0)
    streamed = Run.start(config, digit_files / "streamed")
    summary = streamed.train(backend)
    assert summary["data"]["streamed"] and streamed.data.streamed and not loaded.data.streamed
    assert streamed.history.keys() == loaded.history.keys()
    for k, v in loaded.history.items():
        np.testing.assert_allclose(streamed.history[k], v, rtol=1e-12)
    want, got = (load_checkpoint(r.checkpoint)[0].params for r in (loaded, streamed))
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-300)


def test_the_command_says_it_streams(digit_files, monkeypatch, capsys):
    monkeypatch.setattr(config_module, "STREAM_BYTES", 0)
    rc = _cli.run(train.main, ["--data", str(digit_files / "d.npy"), "--epochs", "1",
                               "--out", str(digit_files / "run"), "--device", "cpu"])  # fmt: skip
    assert rc == 0
    assert "memory-mapped: streamed from disk batch by batch" in capsys.readouterr().err
    metrics = json.loads((digit_files / "run" / "metrics.json").read_text())
    assert metrics["data"]["streamed"] is True and metrics["data"]["rows"] == 1437


@pytest.mark.parametrize("view", [lambda a: a, lambda a: HostRows(a)], ids=["memmap", "HostRows"])
def test_streaming_a_column_slice_of_a_file_never_copies_all_of_it(tmp_path, view):
    """The features of a .npy table are a non-contiguous view of the file; gathering a
    shuffled batch from it must allocate about a batch (np.take would first copy the
    whole 8 MB array, for every batch: 70 s instead of 2.5 s for a 400 MB file)."""
    table = np.random.default_rng(0).normal(size=(20_000, 51))
    np.save(tmp_path / "t.npy", table)
    X = view(open_memmap(tmp_path / "t.npy")[:, :-1])
    order = np.random.default_rng(1).permutation(20_000)
    tracemalloc.start()
    try:
        batches = host_batches((X,), order, 100, xp=np, device="cpu", dtypes=(np.float64,))
        first = [b[0].copy() for b, _ in zip(batches, range(3), strict=False)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak} bytes allocated to stream 100-row batches"
    np.testing.assert_array_equal(np.concatenate(first), table[order[:300], :-1])
