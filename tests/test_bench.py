"""scripts/bench.py runs every contender it can and reports consistent ratios (sizes are
tiny here: the numbers themselves are measured by hand, never asserted in tests)."""

from __future__ import annotations

import json

import bench
import bench_common
import bench_cpu
import bench_pipeline
import pytest
from test_mpi import needs_mpi

from backends import HandgradError


def _paired_ratio(row, first) -> float:
    """The median over rounds of row's time / first's time in the same round."""
    ratios = sorted(t / t0 for t, t0 in zip(row["round_s"], first["round_s"], strict=True))
    middle = len(ratios) // 2
    return ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2


def test_quick_cpu_benchmark_writes_table_and_json(tmp_path, capsys):
    assert bench.main(["--quick", "--cases", "cpu", "--json", str(tmp_path / "b.json")]) == 0
    table = capsys.readouterr().out
    data = json.loads((tmp_path / "b.json").read_text())
    rows = data["rows"]
    assert {r["contender"] for r in rows} >= {"handgrad numpy", "scikit-learn MLPClassifier"}
    assert {r["case"] for r in rows} == {
        f"digits 64-{h}-10 {d}" for h in (64, 512) for d in ("float64", "float32")
    }
    for r in rows:
        first = next(x for x in rows if x["case"] == r["case"])
        assert first["contender"] == "handgrad numpy"
        assert abs(r["vs_handgrad"] - _paired_ratio(r, first)) < 1e-12
        assert r["contender"] in table
    assert data["environment"]["numpy"]


@pytest.mark.parametrize(
    "argv,message",
    [(["--quick", "--repeats", "3"], "--quick sets its own tiny sizes, 2 epochs and 1 run; "
      "leave out --repeats"),
     (["--repeats", "0"], "--repeats must be at least 1, got 0"),
     (["--epochs", "-2"], "--epochs must be at least 1, got -2")],
)  # fmt: skip
def test_run_counts_are_checked_not_ignored(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        bench.main([*argv, "--cases", "none"])
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [(["--json", ""], r"^the json path is empty$"),
     (["--json", "{tmp}"], r"is a folder; give a file name$"),
     (["--json", "{tmp}/file/b.json"], r"^cannot write .*b.json: .*file is not a writable folder$"),
     (["--memmap-gb", "0"], r"^memmap_gb must be a number > 0, got 0.0$"),
     (["--memmap-gb", "1", "--memmap-dir", "{tmp}/file/x"], r"file is not a writable folder$"),
     (["--json", "{tmp}/file"], r"file already exists; choose another name or allow overwriting"),
     (["--json", "{tmp}/run/metrics.json", "--overwrite"], r"metrics.json is a file of the run")],
)  # fmt: skip
def test_output_paths_are_checked_before_any_case_runs(tmp_path, monkeypatch, argv, message):
    """A --json path that cannot be written used to fail after the whole benchmark."""
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".handgrad-run").write_text("a run trains here")
    monkeypatch.setattr(bench_cpu, "cpu_digits", lambda *a: pytest.fail("a case ran"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(HandgradError, match=message):
        bench.main(["--quick", "--cases", "cpu", *argv])


def test_the_memmap_case_makes_its_folder(tmp_path, capsys):
    folder = tmp_path / "new" / "mm"
    argv = ["--cases", "none", "--memmap-gb", "0.002", "--memmap-dir", str(folder)]
    assert bench.main([*argv, "--json", str(tmp_path / "m.json")]) == 0
    (row,) = json.loads((tmp_path / "m.json").read_text())["pipeline"]
    assert row["peak_rss_mib"] > 0 and not list(folder.iterdir())  # the file is removed


def test_gpu_cases_run_on_any_backend(capsys):
    """The GPU cases' code path (handgrad and the GEMM floor) on NumPy, at tiny sizes."""
    assert bench.main(["--quick", "--cases", "gpu", "--gpu-device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "xor 3-4-1 b4 | handgrad numpy" in table and "GEMM floor" in table


def test_quick_pipeline_measures_every_contender_in_a_subprocess(tmp_path, capsys):
    """Each contender's peak memory comes from its own process, so it is counted from that
    process's size with the data loaded: positive, and the data's size is recorded."""
    assert bench.main(["--quick", "--cases", "pipeline", "--json", str(tmp_path / "p.json")]) == 0
    table = capsys.readouterr().out
    data = json.loads((tmp_path / "p.json").read_text())
    rows = data["pipeline"]
    assert {(r["contender"], r["rows"]) for r in rows} == {
        (c, n) for c in bench_pipeline.pipeline_contenders() for n in (100, 1000)
    }
    for r in rows:
        assert abs(r["data_mib"] - r["rows"] * 784 * 8 / 2**20) < 1e-9
        assert r["peak_rss_mib"] >= r["peak_extra_mib"] >= 0
        assert 0 <= r["accuracy"] <= 1
    assert "time at 1000 rows / at 100 rows" in table
    env = data["environment"]
    assert len(env["loadavg_before"]) == len(env["loadavg_after"]) == 3
    assert "threads" in env["blas"]


@pytest.mark.parametrize("name", ["handgrad numpy", "scikit-learn MLPClassifier",
                                  "PyTorch CPU eager"])  # fmt: skip
def test_every_pipeline_contender_trains_in_process(name):
    """The data-pipeline case called PyTorch with an argument too many, which CI, without
    PyTorch, never ran: each contender trains here on a few rows, the same for a seed."""
    if name.startswith("PyTorch"):
        pytest.importorskip("torch")
    X, y = bench_pipeline._synthetic(200, "float64")  # more rows than a batch (128)
    first = bench_pipeline._train_contender(name, X, y, 2, 3)
    assert 0 <= first <= 1
    assert bench_pipeline._train_contender(name, X, y, 2, 3) == first


def test_a_busy_machine_is_marked_and_warned_about(monkeypatch, capsys):
    """Other processes' CPU time is what is left of /proc/stat's after this process's."""
    monkeypatch.setattr(bench_common, "_cpu_seconds", iter([(0.0, 0.0), (5.0, 0.0)] * 50).__next__)
    assert bench.main(["--quick", "--cases", "gpu", "--gpu-device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "(BUSY)" in out and "WARNING: the machine was busy" in err


@needs_mpi
def test_quick_mpi_cases_time_one_and_two_ranks(tmp_path, capsys):
    """Two ranks train the same steps as one; the allreduce time is recorded per step."""
    assert bench.main(["--quick", "--cases", "mpi", "--json", str(tmp_path / "m.json")]) == 0
    rows = json.loads((tmp_path / "m.json").read_text())["mpi"]
    assert [r["ranks"] for r in rows] == [1, 2]
    assert rows[0]["steps"] == rows[1]["steps"] == 2000 // 128 + 1
    assert rows[0]["params"] == 784 * 256 + 256 + 256 * 10 + 10 == rows[1]["params"]
    assert rows[0]["allreduce_ms"] == 0 < rows[1]["allreduce_ms"]
    assert abs(rows[1]["samples_per_s"] - 2000 / rows[1]["seconds"]) < 1e-6
    assert "allreduce ms / step" in capsys.readouterr().out


def test_quick_replica_case_times_one_pass_against_the_same_runs_in_turn(tmp_path, capsys):
    """Both contenders train the same replicas (same seeds and learning rates), so their
    mean accuracy is the same; the ratio is the second row's time over the first's."""
    assert bench.main(["--quick", "--cases", "replicas", "--json", str(tmp_path / "r.json")]) == 0
    capsys.readouterr()
    one_pass, in_turn = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert one_pass["contender"].endswith("one pass") and "runs in turn" in in_turn["contender"]
    assert one_pass["accuracy"] == in_turn["accuracy"]
    assert abs(in_turn["vs_handgrad"] - _paired_ratio(in_turn, one_pass)) < 1e-12


def test_contenders_are_measured_interleaved_in_rotated_order():
    """One warm-up each, then round k runs every contender with seed k, the order
    rotated each round; the mean accuracy is over the timed runs only."""
    calls = []

    def contender(name):
        return (lambda seed: calls.append((name, seed)) or seed * 10, lambda: None)

    measured = bench_common._measure_together({n: contender(n) for n in "abc"}, 3)
    assert calls == [("a", 0), ("b", 0), ("c", 0),
                     ("a", 0), ("b", 0), ("c", 0),
                     ("b", 1), ("c", 1), ("a", 1),
                     ("c", 2), ("a", 2), ("b", 2)]  # fmt: skip
    assert [measured[n][1] for n in "abc"] == [10.0] * 3
    assert all(len(measured[n][2]) == 3 for n in "abc")  # one time per timed round


def test_ratios_pair_the_times_of_one_round():
    """A drift that slows round 2 for everyone leaves the paired ratio at 2."""
    rows = [{"epoch_ms": 2.0, "round_s": [1.0, 1.0, 3.0]},
            {"epoch_ms": 4.0, "round_s": [2.0, 2.0, 6.0]}]  # fmt: skip
    assert bench_common._with_ratios(rows)[1]["vs_handgrad"] == 2.0
    spread = [{"epoch_ms": 1.0, "round_s": [1.0] * 5},
              {"epoch_ms": 3.0, "round_s": [1.0, 2.0, 3.0, 4.0, 5.0]}]  # fmt: skip
    row = bench_common._with_ratios(spread)[1]
    assert row["vs_handgrad"] == 3.0 and row["vs_handgrad_quartiles"] == [2.0, 4.0]
    two = bench_common._with_ratios([{"epoch_ms": 1.0, "round_s": [1.0, 1.0]},
                                     {"epoch_ms": 2.5, "round_s": [2.0, 3.0]}])  # fmt: skip
    assert two[1]["vs_handgrad_quartiles"] == [2.25, 2.75]  # never beyond what was measured
    assert "| 3.00x (2.00-4.00) |" in bench.format_table(
        [{**r, "case": "c", "contender": "x", "step_ms": 1.0, "accuracy": 0.5} for r in spread]
    )
    unpaired = [{"epoch_ms": 2.0}, {"epoch_ms": 5.0}]
    assert bench_common._with_ratios(unpaired)[1]["vs_handgrad"] == 2.5
