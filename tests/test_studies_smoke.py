"""The studies and benchmarks must not rot: run them at tiny sizes."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from nplm_kernel.store import read_store

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("benchmark", ["1d", "5d"])
def test_nn_vs_kernel_study_smoke(tmp_path, benchmark):
    study = _load(ROOT / "studies" / "nn_vs_kernel.py")
    table = study.run(benchmark, "smoke", tmp_path, progress=False)
    first_signal = "NP1" if benchmark == "1d" else "Zprime300"
    assert f"| kernel | {first_signal} | 2 |" in table and "| nn | null | 4 |" in table
    n_signals = 3 if benchmark == "1d" else 2
    rows = (tmp_path / "toys.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * (4 + n_signals * 2)  # header + both backends on every toy
    assert (tmp_path / f"localisation_{first_signal}.png").stat().st_size > 0
    kernel_null = read_store(tmp_path / "kernel_null.jsonl").rows
    nn_null = read_store(tmp_path / "nn_null.jsonl").rows
    assert [row["n_data"] for row in kernel_null] == [row["n_data"] for row in nn_null]


@pytest.mark.slow
def test_benchmark_scripts_run(monkeypatch, capsys):
    for script, arguments in [
        ("kernel_vs_sklearn.py", ["--n-reference", "20000", "--n-centers", "50", "--repeats", "1"]),
        ("nn_vs_kernel_speed.py", ["--n-reference", "20000", "--n-centers", "50", "--nn-epochs", "20", "--repeats", "1"]),
        ("kernel_scaling.py", ["--sizes", "20000", "40000", "--n-centers-1d", "50", "--n-centers-5d", "50"]),
        ("gpu.py", ["--quick", "--repeats", "1"]),
        ("memory_budget.py", ["--n-reference", "30000", "--n-centers", "200", "--budgets", "100000000"]),
        ("toy_throughput.py", ["--n-toys", "4", "--n-toys-batched", "6", "--executor", "serial", "--batch-sizes", "2",
                               "--skip-5d", "--store-rows", "300"]),
    ]:
        monkeypatch.setattr(sys, "argv", [script, *arguments])
        _load(ROOT / "benchmarks" / script).main()
        out = capsys.readouterr().out
        assert "|---|" in out


def test_null_calibration_study_smoke(tmp_path):
    study = _load(ROOT / "studies" / "null_calibration_1d.py")
    table = study.run(6, tmp_path, executor=None, n_reference=20_000, n_centers=50, progress=False)
    assert "| 6 | 0 |" in table
    assert len(read_store(tmp_path / "toys.jsonl").rows) == 6
    batched = study.run(40, tmp_path / "batched", executor=None, n_reference=20_000, n_centers=50, progress=False,
                        reuse_reference=True)
    tail = {line.split(" | ")[0]: line for line in batched.splitlines() if line.startswith("| ")}
    t_null = read_store(tmp_path / "batched" / "toys.jsonl").rows
    fit = study.fit_chi2([row["t"] for row in t_null])
    at_z1 = sum(row["t"] >= study.stats.chi2.isf(study.stats.norm.sf(1.0), fit.dof) for row in t_null)
    assert tail["| 1"].split(" | ")[3] == str(at_z1) and "fewer than one toy expected" in tail["| 4"]
    assert (tmp_path / "batched" / "null_tail.png").stat().st_size > 0


@pytest.mark.slow
def test_kernel_performance_benchmark_runs(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["kernel_performance.py", "--repeats", "1", "--nn-epochs", "5",
                                      "--n-reference-1d", "20000", "--n-reference-5d", "5000", "--n-centers-5d", "100"])
    _load(ROOT / "benchmarks" / "kernel_performance.py").main()
    out = capsys.readouterr().out
    assert out.count("| float32, K_nM cached |") == 2 and "one pass / bandwidth bound" in out


@pytest.mark.slow
def test_nuisance_study_smoke(tmp_path):
    study = _load(ROOT / "studies" / "nuisances_1d.py")
    table = study.run("smoke", tmp_path, progress=False)
    assert "| kernel | with | -1 | null | 3 |" in table and "| nn | without | +0 | NP2 | 2 |" in table
    assert (tmp_path / "delta_scale.npz").exists()
    assert len(read_store(tmp_path / "kernel_with_null_+1.jsonl").rows) == 3
    rerun = study.run("smoke", tmp_path, progress=False)  # resumes every campaign: same toys, same table
    assert rerun.splitlines()[4:11] == table.splitlines()[4:11]


@pytest.mark.slow
def test_dqm_stream_study_smoke(tmp_path):
    study = _load(ROOT / "studies" / "dqm_stream.py")
    table = study.run("smoke", tmp_path, progress=False)
    for effect in ("resolution", "dead_region", "gain_drift"):
        assert f"| {effect} | 4 |" in table
    assert (tmp_path / "stream.png").stat().st_size > 0
    assert len((tmp_path / "stream.csv").read_text().splitlines()) == 1 + 12


def test_power_scan_study_smoke(tmp_path):
    study = _load(ROOT / "studies" / "power_scan.py")
    table = study.run("smoke", tmp_path, progress=False)
    assert "| yield | 0 | 1.6 | 3 |" in table and "| location | 20 | 4 | 3 |" in table
    assert (tmp_path / "power_scan.png").stat().st_size > 0
    assert len((tmp_path / "scan.csv").read_text().splitlines()) == 1 + 4


@pytest.mark.slow
def test_paper_tables_study_smoke(tmp_path):
    study = _load(ROOT / "studies" / "paper_tables.py")
    table = study.run("smoke", tmp_path, executor=None, progress=False)
    assert "| multiple-testing paper, min-p (published) | - | - | - | 0.581 | 0.8765 |" in table
    assert table.count("\n| ours:") == 5 + 3 and "| coverage |" in table  # 3: HARDER_VARIANTS
    assert "| multiple-testing paper, best single width (published) | 0.083 | 0.367 | 0.082 |" in table
    assert len(read_store(tmp_path / "v4_x4_w0.64.jsonl").rows) == 4
    assert len(read_store(tmp_path / "v0_null.jsonl").rows) == 12
    assert np.asarray(read_store(tmp_path / "v2_null.jsonl").rows[0]["t"]).shape == (2,)  # min-p: one t per width


@pytest.mark.slow
def test_power_frontier_study_smoke(tmp_path):
    study = _load(ROOT / "studies" / "power_frontier.py")
    study.collect("smoke", tmp_path, progress=False)
    table = study.analyse("smoke", tmp_path)
    assert "| arXiv:2408.12296, min-p (published) | - | - | - | - | - | 0.063 | 0.314 | 0.0655 | - |" in table
    header = next(line for line in table.splitlines() if line.startswith("| candidate |"))
    assert header.count("| power ") == 6 and "power x4_w0.01" in header
    assert table.count("\n| uniform ") == 8 + 4 * 4 and table.count("\n| coverage ") == 7 + 4 * 4
    assert "| uniform min-p(0.5,0.9) | 2 |" in table and "| BumpHunter (40 bins) |" in table
    null = read_store(tmp_path / "uniform_null.jsonl").rows
    assert len(null) == 50 and np.asarray(null[0]["t"]).shape == (8,)  # one t per width
    kernel, bump = (read_store(tmp_path / f"{name}_x4_w0.16.jsonl").rows for name in ("coverage", "bumphunter"))
    assert [row["n_data"] for row in kernel] == [row["n_data"] for row in bump]  # the same toys for every test
    assert study.analyse("smoke", tmp_path) == table == (tmp_path / "table.md").read_text().strip()
    assert "| kernel excess scan | - |" in table
    assert "| **default test**: weighted min-p(kernel excess scan x 3, uniform q0.9) | 1 + 1 |" in table
    assert "| min-p(kernel excess scan, uniform q0.9), equal weights | 1 + 1 |" in table
    assert len(read_store(tmp_path / "excess_scan_null.jsonl").rows) == 50
    study.collect_5d("smoke", tmp_path, progress=False)
    table_5d = study.analyse_5d("smoke", tmp_path)
    assert "power Zprime300 | power contact" in table_5d and table_5d.count("\n| ") == 6  # header + 5 candidates
    scan, default = (read_store(tmp_path / f"5d_{name}_contact.jsonl").rows for name in ("excess_scan", "default"))
    assert [row["n_data"] for row in scan] == [row["n_data"] for row in default] and len(scan) == 6


@pytest.mark.slow
def test_baselines_study_smoke(tmp_path):
    study = _load(ROOT / "studies" / "baselines.py")
    table = study.run("smoke", tmp_path, progress=False, datasets=("1d",))
    header = next(line for line in table.splitlines() if line.startswith("| dataset |"))
    assert header.split(" | ")[2:5] == ["kernel", "nn", "kernel_minp"] and "bumphunter" in header and "gmm" in header
    np2 = next(line for line in table.splitlines() if line.startswith("| 1d | NP2 |")).split(" | ")
    assert "±" in np2[2] and np2[2].endswith("/ -")  # 50 null toys resolve Z >= 2, not Z >= 3
    assert np2[3] == "- / -"  # the NN's 4 null toys resolve neither
    kernel, binned = (read_store(tmp_path / "1d" / f"{method}_NP2.jsonl").rows for method in ("kernel", "binned"))
    assert [row["n_data"] for row in kernel] == [row["n_data"] for row in binned]  # same toys for every method
    assert (tmp_path / "power_vs_yield.png").stat().st_size > 0


def test_baselines_study_power_uses_empirical_p_values_only_where_the_null_resolves_them():
    study = _load(ROOT / "studies" / "baselines.py")
    null = np.arange(1.0, 101.0)  # p(t) = (#(null >= t) + 1) / 101
    power, half_width = study.empirical_power(null, np.array([100.5, 99.5, 97.5, 50.0]), 2.0)
    assert power == 0.5  # beyond every toy and p = 2/101 pass p <= 0.0228; p = 4/101 and 52/101 do not
    assert 0.25 < half_width < 0.35  # exact interval: a bit wider than the binomial sd sqrt(0.25 / 4) = 0.25
    assert study.empirical_power(null, np.array([1000.0]), 3.0) is None  # 100 toys cannot resolve p = 0.00135
