"""scripts/bench.py runs every contender it can and reports consistent ratios (sizes are
tiny here: the numbers themselves are measured by hand, never asserted in tests)."""

from __future__ import annotations

import json

import bench


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
        assert abs(r["vs_handgrad"] - r["epoch_ms"] / first["epoch_ms"]) < 1e-12
        assert r["contender"] in table
    assert data["environment"]["numpy"]


def test_gpu_cases_run_on_any_backend(capsys):
    """The GPU cases' code path (handgrad and the GEMM floor) on NumPy, at tiny sizes."""
    assert bench.main(["--quick", "--cases", "gpu", "--gpu-device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "xor 3-4-1 b4 | handgrad numpy" in table and "GEMM floor" in table
