"""scripts/bench.py runs every contender it can and reports consistent ratios (sizes are
tiny here: the numbers themselves are measured by hand, never asserted in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import bench
import bench_common
import bench_cpu
import bench_gpu
import bench_pipeline
import bench_versions
import pytest
from test_mpi import needs_mpi

from backends import HandgradError

SCRIPT = Path(bench.__file__)


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
    if bench_common._torch() is not None:  # handgrad on torch tensors, beside NumPy's
        for case in {r["case"] for r in rows}:
            mine = {r["contender"]: r for r in rows if r["case"] == case}
            on_torch, on_numpy = mine["handgrad torch"], mine["handgrad numpy"]
            # the same fit from the same weights and batches: the same predictions
            assert abs(on_torch["accuracy"] - on_numpy["accuracy"]) <= 1 / 200
            assert on_torch["torch_threads"] >= 1
        assert "| handgrad torch (" in table and data["notes"] == []


NO_TORCH = """
import os, runpy, sys

class NoTorch:  # as if PyTorch were not installed
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoTorch())
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))  # as `python scripts/bench.py` would
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_missing_torch_is_left_out_with_a_note(tmp_path):
    """Without PyTorch the CPU cases run the rest and say what they left out (in a fresh
    process that cannot import torch)."""
    argv = ["--quick", "--cases", "cpu", "--json", str(tmp_path / "b.json")]
    done = subprocess.run([sys.executable, "-c", NO_TORCH, str(SCRIPT), *argv],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["environment"]["torch"] == "not installed"
    assert {r["contender"] for r in data["rows"]} >= {"handgrad numpy"}
    assert not [r for r in data["rows"] if "torch" in r["contender"].lower()]
    (note,) = data["notes"]
    assert note.startswith("handgrad torch left out of the CPU cases: device 'torch' needs "
                           "PyTorch: it is not installed")  # fmt: skip
    assert f"note: {note}" in done.stdout and "| handgrad torch" not in done.stdout


def test_torch_threads_sets_what_the_torch_rows_ran_on(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    argv = ["--quick", "--cases", "cpu", "--json", str(tmp_path / "b.json")]
    try:
        assert bench.main([*argv, "--torch-threads", "1", "--skip", "scikit"]) == 0
    finally:
        torch.set_num_threads(before)
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    threads = {r["contender"]: r["torch_threads"] for r in rows if "torch_threads" in r}
    assert "handgrad torch" in threads and set(threads.values()) == {1}
    assert "| handgrad torch (1 torch thr.) |" in capsys.readouterr().out


def test_skip_leaves_out_contenders_but_not_the_reference(tmp_path, capsys):
    argv = ["--quick", "--cases", "cpu", "--json", str(tmp_path / "b.json")]
    assert bench.main([*argv, "--skip", "handgrad", "--skip", "JAX", "--skip", "scikit"]) == 0
    capsys.readouterr()
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    names = {r["contender"] for r in rows}
    assert "handgrad numpy" in names and "handgrad torch" not in names
    assert not any(n.startswith(("JAX", "scikit")) for n in names)


@pytest.mark.parametrize(
    "argv,message",
    [(["--quick", "--repeats", "3"], "--quick sets its own tiny sizes, 2 epochs and 1 run; "
      "leave out --repeats"),
     (["--repeats", "0"], "--repeats must be at least 1, got 0"),
     (["--epochs", "-2"], "--epochs must be at least 1, got -2"),
     (["--torch-threads", "0"], "--torch-threads must be at least 1, got 0")],
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
    if bench_common._torch() is not None:  # torch:cuda's path, on CPU tensors
        assert "xor 3-4-1 b4 | handgrad torch |" in table
        assert "mlp 16-8-8-4 b32 | handgrad torch |" in table


def test_the_gpu_cases_put_handgrad_torch_cuda_beside_a_gpu(monkeypatch):
    """Beside a GPU backend the twin is torch:cuda on the same device index, named so;
    beside PyTorch itself there is none; without CUDA in PyTorch, a note says why."""
    asked = []

    def fake(device, dtype):
        asked.append(device)
        return (None, "no CUDA here") if "cuda" in device else ("a backend", None)

    monkeypatch.setattr(bench_gpu, "torch_backend", fake)
    gpu = bench_common.Settings()
    results = bench_common.Results()
    cupy = types.SimpleNamespace(name="cupy", is_gpu=True, spec="cuda:1")
    assert bench_gpu._torch_twin(cupy, gpu, results) is None
    assert asked == ["torch:cuda:1"]
    assert results.notes == ["handgrad torch:cuda left out of the GPU cases: no CUDA here"]
    numpy = types.SimpleNamespace(name="numpy", is_gpu=False, spec="cpu")
    assert bench_gpu._torch_twin(numpy, gpu, results) == ("handgrad torch", "a backend")
    on_torch = types.SimpleNamespace(name="torch", is_gpu=True, spec="torch:cuda:0")
    assert bench_gpu._torch_twin(on_torch, gpu, results) is None
    skip = bench_common.Settings(skip=("handgrad torch",))
    assert bench_gpu._torch_twin(numpy, skip, results) is None
    assert len(asked) == 2


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


FAKE_BENCH = """
import json, sys
from pathlib import Path

if "--help" in sys.argv:
    print(HELP)
    sys.exit(0)
log = Path(__file__).parents[2] / "log"
with log.open("a") as f:
    f.write(json.dumps([NAME, sys.argv[1:]]) + "\\n")
k = sum(json.loads(line)[0] == NAME for line in log.read_text().splitlines()) - 1
rows = [{"case": "c", "contender": "handgrad numpy", "epoch_ms": MS, "vs_handgrad": 1.0},
        {"case": "c", "contender": "scikit-learn MLPClassifier", "vs_handgrad": RATIOS[k]}]
env = {"loadavg_before": [0.5, 0.5, 0.5]}
Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps({"environment": env,
                                                                   "rows": rows}))
"""


def _fake_checkout(root, name, help_text, ms, ratios):
    (root / name / "scripts").mkdir(parents=True)
    constants = f"NAME, HELP, MS, RATIOS = {name!r}, {help_text!r}, {ms!r}, {ratios!r}\n"
    (root / name / "scripts" / "bench.py").write_text(constants + FAKE_BENCH)
    return str(root / name)


def test_versions_alternate_in_fresh_processes_and_pair_their_rounds(tmp_path, capsys):
    """Round k runs both checkouts' bench.py, the order rotated; --skip goes only to the
    version that knows it; each column is the median over the rounds (lowest-highest),
    the last one the median of after / before within a round."""
    old = _fake_checkout(tmp_path, "old", "usage: --cases", 2.0, [2.0, 2.2, 2.4])
    new = _fake_checkout(tmp_path, "new", "usage: --cases --skip", 1.0, [3.0, 2.2, 3.6])
    argv = [old, new, "--rounds", "3", "--repeats", "2", "--json", str(tmp_path / "v.json")]
    assert bench_versions.main(argv) == 0
    out = capsys.readouterr().out
    log = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    assert [name for name, _ in log] == ["old", "new", "new", "old", "old", "new"]
    for name, args in log:
        assert args[:2] == ["--cases", "cpu"] and args[args.index("--repeats") + 1] == "2"
        assert ("--skip" in args) == (name == "new")
    sklearn = "| c | scikit-learn MLPClassifier | 2.20 (2.00-2.40) | 3.00 (2.20-3.60) | "
    assert sklearn + "1.500 (1.000-1.500) |" in out
    assert "| c | ms / epoch | 2.00 (2.00-2.00) | 1.00 (1.00-1.00) | 2.000 (2.000-2.000) |" in out
    saved = json.loads((tmp_path / "v.json").read_text())
    assert len(saved["runs"]["before"]) == len(saved["runs"]["after"]) == 3


def test_versions_need_a_checkout(tmp_path):
    with pytest.raises(HandgradError, match=r"has no scripts/bench\.py; give a handgrad checkout"):
        bench_versions.main([str(tmp_path)])
