"""The analysis config: strict validation with key and line, and `nplm run` end to end."""

import json
import textwrap

import numpy as np
import pytest

from nplm_kernel import ConfigurationError
from nplm_kernel.app.config import load_config
from nplm_kernel.cli import main
from nplm_kernel.inference.calibration import MIN_P, MIN_P_EXTRAPOLATION
from nplm_kernel.io import load_model
from nplm_kernel.store import read_store

CONFIG = """\
inputs:
  data: {path: data.parquet}
  reference: {path: reference.parquet, expected_yield: 100}
  columns: [x]
  cuts: {x: [0.05, null]}
backend: {kind: kernel, n_centers: 40, penalty: 1.0e-6}
toys: {n_toys: 6, seed: 2, executor: serial, pool_fraction: 0.5, store: null_toys.jsonl}
outputs: {directory: out}
"""


@pytest.fixture
def analysis(tmp_path, rng):
    import pyarrow as pa
    import pyarrow.parquet as pq

    reference = rng.exponential(1.0, size=20_000)
    data = np.concatenate([rng.exponential(1.0, size=rng.poisson(100)), rng.normal(1.6, 0.1, size=60)])
    for name, values in [("reference", reference), ("data", data)]:
        pq.write_table(pa.table({"x": values}), tmp_path / f"{name}.parquet")
    (tmp_path / "analysis.yaml").write_text(CONFIG)
    return tmp_path


def test_a_misspelt_key_is_named_with_its_line(analysis):
    (analysis / "bad.yaml").write_text(CONFIG.replace("n_centers: 40", "n_centres: 40"))
    with pytest.raises(ConfigurationError, match=r"backend\.n_centres \(line 6\): unknown key"):
        load_config(analysis / "bad.yaml")
    (analysis / "bad.yaml").write_text(CONFIG.replace("n_toys: 6", "n_toys: 1"))
    with pytest.raises(ConfigurationError, match=r"toys\.n_toys \(line 7\): Input should be greater than or equal to 2"):
        load_config(analysis / "bad.yaml")
    (analysis / "bad.yaml").write_text(CONFIG.replace(", expected_yield: 100", ""))
    with pytest.raises(ConfigurationError, match=r"inputs\.reference \(line 3\): .*exactly one of expected_yield"):
        load_config(analysis / "bad.yaml")


def test_a_missing_input_file_is_named(analysis):
    (analysis / "bad.yaml").write_text(CONFIG.replace("data.parquet", "dta.parquet"))
    with pytest.raises(ConfigurationError, match=r"inputs\.data\.path: .*dta\.parquet not found"):
        load_config(analysis / "bad.yaml")
    with pytest.raises(ConfigurationError, match="config file not found"):
        load_config(analysis / "missing.yaml")


@pytest.mark.slow
def test_nplm_run_does_the_study_records_provenance_and_resumes(analysis, capsys):
    assert main(["run", str(analysis / "analysis.yaml"), "--no-progress"]) == 0
    assert "Z =" in capsys.readouterr().out
    out = analysis / "out"
    result = json.loads((out / "result.json").read_text())
    provenance = json.loads((out / "provenance.json").read_text())
    # sigma not fixed: the full model at the 0.9 quantile of pairwise distances and the excess scan, by min-p
    assert len(result["t"]) == 2 and len(result["widths"]) == 1 and "excess_center" in result["excess_scan"]
    assert result["members"][1] == "excess scan" and result["member_weights"] == [1.0, 3.0] and min(result["t"]) > 30 and result["method"] in (MIN_P, MIN_P_EXTRAPOLATION)
    assert result["n_toys"] == 6 and set(result["plots"]) == {"f.png", "null.png"}
    assert provenance["package_version"] == __import__("nplm_kernel").__version__
    assert (out / "config.yaml").read_text() == CONFIG
    assert load_model(out / "model.npz").t_ in result["t"] and result["model_width"] in result["hyperparameters"]["sigma"]
    import pyarrow.parquet as pq

    data = pq.read_table(analysis / "data.parquet").column("x").to_numpy()
    assert result["n_data"] == np.count_nonzero(data >= 0.05) < len(data)  # the cut is applied
    first_rows = (out / "null_toys.jsonl").read_text()
    (analysis / "analysis.yaml").write_text(CONFIG.replace("n_toys: 6", "n_toys: 8"))
    assert main(["run", str(analysis / "analysis.yaml"), "--no-progress"]) == 0
    rows = (out / "null_toys.jsonl").read_text()
    assert rows.startswith(first_rows) and len(read_store(out / "null_toys.jsonl").rows) == 8  # resumed, nothing redone


def test_nplm_run_with_one_width(analysis):
    (analysis / "one.yaml").write_text(CONFIG.replace("outputs: {directory: out}",
                                                      "test: {width_quantiles: []}\noutputs: {directory: one}"))
    assert main(["run", str(analysis / "one.yaml"), "--no-progress"]) == 0
    result = json.loads((analysis / "one" / "result.json").read_text())
    assert isinstance(result["t"], float) and result["null_chi2_fit"]["dof"] > 0
    assert load_model(analysis / "one" / "model.npz").t_ == result["t"]


def test_config_errors_through_the_cli_are_one_clear_message(analysis, capsys):
    (analysis / "bad.yaml").write_text(textwrap.dedent(CONFIG).replace("toys:", "toyz:"))
    assert main(["run", str(analysis / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "toyz (line 7): unknown key" in err and "toys: Field required" in err


@pytest.mark.slow
def test_nplm_run_with_nuisances_from_the_config(analysis, rng):
    from nplm_kernel.benchmarks import Exponential1DSystematics
    from nplm_kernel.io import save_model
    from nplm_kernel.kernel.taylor import KernelTaylorLearner

    systematics = Exponential1DSystematics()
    nominal = systematics.shifted_reference(rng, 0.0, 5000)
    shifted = [(nu, *systematics.shifted_reference(rng, nu, 5000)) for nu in (-0.1, 0.1)]
    save_model(KernelTaylorLearner(degree=1, n_centers=30).fit(*nominal, shifted), analysis / "delta_scale.npz")
    config = CONFIG.replace("outputs: {directory: out}", textwrap.dedent("""\
        nuisances:
          - {name: norm, kind: normalization, sigma: 0.05}
          - {name: scale, kind: shape, sigma: 0.05, coefficients: delta_scale.npz}
        outputs: {directory: out_nuisances}
        """))
    (analysis / "nuisances.yaml").write_text(config)
    assert main(["run", str(analysis / "nuisances.yaml"), "--no-progress"]) == 0
    result = json.loads((analysis / "out_nuisances" / "result.json").read_text())
    # with nuisances the default test is the one fit at the 0.9 quantile (the excess scan takes no nuisances)
    assert result["nuisances"] == ["norm", "scale"] and np.shape(result["nu_hat_tau"]) == (2,)
    assert result["tau"] >= result["delta"] >= 0 and "excess_scan" not in result["hyperparameters"]
    assert result["t"] == pytest.approx(result["tau"] - result["delta"])
    rows = read_store(analysis / "out_nuisances" / "null_toys.jsonl").rows
    assert all(len(row["central_values"]) == 2 for row in rows)  # every toy drew its auxiliary measurements
    assert len({tuple(row["central_values"]) for row in rows}) == len(rows)

    (analysis / "bad.yaml").write_text(config.replace(", coefficients: delta_scale.npz", ""))
    with pytest.raises(ConfigurationError, match=r"nuisances\.1 \(line \d+\): .*needs coefficients"):
        load_config(analysis / "bad.yaml")
    (analysis / "bad.yaml").write_text(config.replace("delta_scale.npz", "missing.npz"))
    with pytest.raises(ConfigurationError, match=r"nuisances\.1\.coefficients: .*missing\.npz not found"):
        load_config(analysis / "bad.yaml")


def test_every_output_of_an_analysis_shows_its_one_p_value(analysis, capsys, monkeypatch):
    from nplm_kernel.app import plots

    drawn = {}
    for name in ("plot_learned_f", "plot_null_distribution"):
        monkeypatch.setattr(plots, name, lambda *arguments, _draw=getattr(plots, name), _name=name, **options:
                            drawn.setdefault(_name, _draw(*arguments, **options)))
    labelled = CONFIG.replace("outputs: {directory: out}",
                              "outputs: {directory: out, units: [GeV], labels: ['$m$'], experiment_label: Toy Sim}")
    (analysis / "labelled.yaml").write_text(labelled)
    assert main(["run", str(analysis / "labelled.yaml"), "--no-progress"]) == 0
    result = json.loads((analysis / "out" / "result.json").read_text())
    summary = result["summary"]  # the min-p over the members, in the printed line, result.json and both figures
    assert summary in capsys.readouterr().out and f"p = {result['p_value']:.3g}" in summary and "2 members" in summary
    for figure in drawn.values():
        legend = figure.axes[0].get_legend()
        assert legend.get_title().get_text().replace("\n", " ").startswith(summary)
    assert drawn["plot_learned_f"].axes[2].get_xlabel() == "$m$ [GeV]"
    (analysis / "bad.yaml").write_text(labelled.replace("units: [GeV]", "units: [GeV, GeV]"))
    assert main(["run", str(analysis / "bad.yaml")]) == 2
    assert "outputs.units: one entry per input variable (1), got 2" in capsys.readouterr().err
