"""The backend contract: every registered backend honours it, and a new backend defined here, in
this file only, plugs into the test, campaigns, persistence and `nplm run` by one registry line."""

import json

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone

from nplm_kernel import (
    BackendFit,
    ConfigurationError,
    NPLMTest,
    load_model,
    nplm_loss,
    register_backend,
    run_toys,
    save_model,
)
from nplm_kernel.benchmarks import Exponential1D
from nplm_kernel.cli import main
from nplm_kernel.contract import backend_entry, backend_names, contract_gaps, finish_fit, registry, require_fitted
from nplm_kernel.core.samples import validate_samples

#: Settings that make each registered backend fast enough for unit tests.
FAST = {"kernel": {"n_centers": 30}, "nn": {"epochs": 60, "learning_rate": 0.05}}
BENCHMARK = Exponential1D(n_expected=200.0, n_reference=4000)


@pytest.fixture(scope="module")
def samples():
    x_ref, w_ref = BENCHMARK.reference(np.random.default_rng(1))
    return BENCHMARK.data(np.random.default_rng(2)), x_ref, w_ref


@pytest.mark.parametrize("name", backend_names())
def test_every_registered_backend_honours_the_contract(name, samples, tmp_path):
    x_data, x_ref, w_ref = samples
    entry = backend_entry(name)
    estimator = entry.estimator(**FAST[name])
    assert contract_gaps(estimator) == [] and clone(estimator).get_params() == estimator.get_params()
    offsets = (0.05 * x_data[:, 0], 0.05 * x_ref[:, 0])
    assert estimator.fit(x_data, x_ref, w_ref, *offsets) is estimator
    fit = estimator.fit_
    assert isinstance(fit, BackendFit) and fit.t == estimator.t_ == -2 * estimator.loss_
    np.testing.assert_allclose(fit.f_data, estimator.decision_function(x_data), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fit.f_ref, estimator.decision_function(x_ref), rtol=1e-6, atol=1e-9)
    assert fit.loss == pytest.approx(nplm_loss(fit.f_data, fit.f_ref, w_ref, *offsets), rel=1e-12)
    assert estimator.converged_ in (True, False, None) and estimator.diagnostics_ is fit.diagnostics
    path = tmp_path / f"{name}.npz"
    save_model(estimator, path)
    np.testing.assert_array_equal(load_model(path).decision_function(x_ref[:50]), estimator.decision_function(x_ref[:50]))
    assert set(estimator.execution_settings) <= set(estimator.get_params())
    first = next(setting for setting in entry.settings() if setting.configurable and setting.name != "seed")
    with pytest.raises(ConfigurationError):
        entry.estimator(**{**FAST[name], first.name: "not a valid value"}).check_settings()


@pytest.mark.parametrize("name", backend_names())
def test_every_registered_backend_runs_a_campaign_with_honest_convergence(name, samples):
    _, x_ref, w_ref = samples
    result = run_toys(NPLMTest(backend_entry(name).estimator(**FAST[name])), BENCHMARK.data, x_ref, w_ref,
                      n_toys=2, seed=3, executor=None, progress=False)
    expected = True if name == "kernel" else None  # the NN has no convergence criterion: it does not claim one
    assert [row["converged"] for row in result.rows] == [expected, expected]


class HistogramNPLM(BaseEstimator):
    """A third backend, written only here: f is constant on equal-population bins of the first
    variable, f_b = log((n_D,b + 1/2) / (sum_{R in b} w_R e^o_R + 1/2)), the NPLM-loss minimiser per
    bin with half an event of pseudo-count.

    Parameters
    ----------
    bins : number of bins (quantiles of the reference).
    """

    execution_settings = ()
    fits_nuisances_jointly = False
    fits_batches = False
    setting_roles = {}

    def __init__(self, bins: int = 10):
        self.bins = bins

    def check_settings(self) -> None:
        if not (isinstance(self.bins, int) and self.bins >= 1):
            raise ConfigurationError(f"bins must be a positive integer, got {self.bins!r}.")

    def fit(self, x_data, x_ref, w_ref, offset_data=None, offset_ref=None):
        self.check_settings()
        samples = validate_samples(x_data, x_ref, w_ref, offset_data, offset_ref, owner="HistogramNPLM")
        self.edges_ = np.quantile(samples.x_ref[:, 0], np.linspace(0, 1, self.bins + 1)[1:-1])
        data_bins = np.searchsorted(self.edges_, samples.x_data[:, 0])
        ref_bins = np.searchsorted(self.edges_, samples.x_ref[:, 0])
        observed = np.bincount(data_bins, minlength=self.bins)
        expected = np.bincount(ref_bins, weights=samples.w_ref * np.exp(samples.offset_ref), minlength=self.bins)
        self.f_bins_ = np.log((observed + 0.5) / (expected + 0.5))
        finish_fit(self, samples, self.f_bins_[data_bins], self.f_bins_[ref_bins], True, {"bins": self.bins})
        return self

    def decision_function(self, x):
        require_fitted(self, "f_bins_")
        return self.f_bins_[np.searchsorted(self.edges_, np.asarray(x, dtype=float).reshape(len(x), -1)[:, 0])]

    def fitted_state(self):
        return {"edges_": self.edges_, "f_bins_": self.f_bins_, "t_": self.t_, "loss_": self.loss_}

    def fitted_state_spec(self):
        return {"edges_": (int(self.bins) - 1,), "f_bins_": (int(self.bins),), "t_": (), "loss_": ()}

    def restore_fitted_state(self, state):
        for name, value in state.items():
            setattr(self, name, value)


@pytest.fixture
def histogram_backend(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # undone after the test
    register_backend("histogram", HistogramNPLM)  # the one registry line
    return HistogramNPLM


def test_a_third_backend_plugs_in_with_one_registry_line(histogram_backend, samples, tmp_path, capsys):
    x_data, x_ref, w_ref = samples
    test = NPLMTest(histogram_backend(bins=8))
    signal = np.vstack([x_data, np.full((60, 1), 0.3)])
    assert test.run(signal, x_ref, w_ref).t > test.run(x_data, x_ref, w_ref).t > 0
    campaign = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=4, seed=1, executor=None,
                        store=tmp_path / "toys.jsonl", progress=False)
    assert len(campaign.t) == 4 and campaign.identity["test"]["backend"]["hyperparameters"] == {"bins": 8}
    fitted = histogram_backend(bins=8).fit(x_data, x_ref, w_ref)
    save_model(fitted, tmp_path / "histogram.npz")
    np.testing.assert_array_equal(load_model(tmp_path / "histogram.npz").f_bins_, fitted.f_bins_)

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": x_ref[:, 0]}), tmp_path / "reference.parquet")
    pq.write_table(pa.table({"x": signal[:, 0]}), tmp_path / "data.parquet")
    (tmp_path / "analysis.yaml").write_text(
        "inputs:\n  data: {path: data.parquet}\n  reference: {path: reference.parquet, expected_yield: 200}\n"
        "  columns: [x]\nbackend: {kind: histogram, bins: 6}\n"
        "toys: {n_toys: 5, seed: 0, executor: serial, pool_fraction: 0.5}\noutputs: {directory: out}\n")
    assert main(["run", str(tmp_path / "analysis.yaml"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["backend"] == "HistogramNPLM" and result["hyperparameters"] == {"bins": 6}
    (tmp_path / "bad.yaml").write_text((tmp_path / "analysis.yaml").read_text().replace("bins: 6", "bins: 0"))
    assert main(["run", str(tmp_path / "bad.yaml")]) == 2
    assert "backend.bins (line 5): bins must be a positive integer" in capsys.readouterr().err


def test_every_kernel_setting_is_reachable_from_yaml_and_the_command_line(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(4)
    pq.write_table(pa.table({"x": rng.exponential(size=8000)}), tmp_path / "reference.parquet")
    pq.write_table(pa.table({"x": rng.exponential(size=200)}), tmp_path / "data.parquet")
    config = ("inputs:\n  data: {path: data.parquet}\n  reference: {path: reference.parquet, expected_yield: 200}\n"
              "  columns: [x]\nbackend: {kind: kernel, n_centers: 30, device: cpu, dtype: float32, "
              "memory_budget: 400000000, loss: logistic}\n"
              "toys: {n_toys: 3, seed: 0, executor: serial, pool_fraction: 0.5}\ntest: {width_quantiles: []}\n"
              "outputs: {directory: out}\n")
    (tmp_path / "analysis.yaml").write_text(config)
    assert main(["run", str(tmp_path / "analysis.yaml"), "--no-progress"]) == 0
    hyperparameters = json.loads((tmp_path / "out" / "result.json").read_text())["hyperparameters"]
    assert (hyperparameters["dtype"], hyperparameters["loss"], hyperparameters["memory_budget"]) == (
        "float32", "logistic", 400000000)
    (tmp_path / "bad.yaml").write_text(config.replace("device: cpu", "devise: cpu"))
    assert main(["run", str(tmp_path / "bad.yaml")]) == 2
    assert "backend.devise (line 5): unknown key" in capsys.readouterr().err
    common = ["test", "--data", str(tmp_path / "data.parquet"), "--reference", str(tmp_path / "reference.parquet"),
              "--columns", "x", "--expected-yield", "200"]
    assert main([*common, "--n-centers", "30", "--dtype", "float32", "--center-selection", "coverage"]) == 0
    out = capsys.readouterr().out
    assert "'dtype': 'float32'" in out and "'center_selection': 'coverage'" in out
    assert main([*common, "--weight-clip", "2"]) == 2
    assert "--weight-clip is a setting of backend(s) nn, not of 'kernel'" in capsys.readouterr().err
    assert main([*common, "--penalty", "minus one"]) == 2
    assert "--penalty: Input should be a valid number" in capsys.readouterr().err


def test_every_source_folder_is_a_package_that_installs():
    """A folder of modules without __init__.py imports from a source tree but is left out of an
    installed wheel (setuptools finds packages by their __init__.py)."""
    from pathlib import Path

    from setuptools import find_packages

    root = Path(__file__).resolve().parents[1]
    folders = {str(path.parent.relative_to(root)).replace("/", ".") for top in ("nplm_kernel", "nn_baseline")
               for path in (root / top).rglob("*.py") if "__pycache__" not in path.parts}
    assert folders <= set(find_packages(str(root), include=["nplm_kernel*", "nn_baseline*"]))


def test_setting_help_comes_from_the_numpy_style_parameters_section():
    from nplm_kernel.contract import settings_of

    for name in backend_names():  # every setting of every backend has its help text (CLI, YAML schema)
        helps = {setting.name: setting.help for setting in backend_entry(name).settings()}
        assert all(helps.values()), [setting for setting, text in helps.items() if not text]
    nn = {setting.name: setting.help for setting in backend_entry("nn").settings()}
    assert nn["epochs"] == "Full-batch optimiser steps (the papers use 1e5 to 3e5)."
    assert nn["architecture"].startswith("Layer widths (d, hidden..., 1)") and nn["architecture"].endswith("variables.")
    kernel = {setting.name: setting.help for setting in backend_entry("kernel").settings()}
    assert kernel["max_newton_steps"] == kernel["newton_tol"] and "Newton decrement" in kernel["newton_tol"]
    assert "alpha_" not in kernel and "loss_, t_" not in str(kernel)  # the Attributes section holds no settings
    helps = {setting.name: setting.help for setting in settings_of(HistogramNPLM)}  # the one-line 'name : help'
    assert helps["bins"] == HistogramNPLM.__doc__.split("bins : ")[1].split("\n")[0].strip()
