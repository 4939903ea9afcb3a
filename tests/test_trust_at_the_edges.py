"""Numbers that could be silently wrong and files that could be silently misused are refused or
reported: data beyond the reference, a reference carried by a few events, tampered model files,
configs that write outside their output directory, errors that echo huge values."""

import warnings
import zipfile

import numpy as np
import pytest
import yaml

from nn_baseline import NNNPLM
from nplm_kernel import (
    ConfigurationError,
    InputError,
    KernelNPLM,
    NPLMTest,
    ReferenceSupportWarning,
    SampleSizeWarning,
    run_toys,
    significance,
)
from nplm_kernel.app.config import load_config
from nplm_kernel.baselines import GaussianProcessBumpSearch, MaximumMeanDiscrepancy
from nplm_kernel.benchmarks import Exponential1D
from nplm_kernel.io import load_model, models, save_model

BENCHMARK = Exponential1D(n_expected=200.0, n_reference=20_000)


@pytest.fixture(scope="module")
def reference():
    return BENCHMARK.reference(np.random.default_rng(0))


def test_a_data_event_beyond_the_reference_is_reported_where_it_inflates_t(reference):
    """At lambda = 1e-10 one data event beyond the largest reference event makes the fit raise f to
    absurd values there: the fit warns with the count and the position, records the event, and a
    campaign row counts it; at the default lambda the same event is supported and t stays bounded."""
    x_ref, w_ref = reference
    x_data = BENCHMARK.data(np.random.default_rng(1))
    beyond = np.vstack([x_data, [[x_ref.max() + 0.5]]])
    loose = KernelNPLM(n_centers=500, sigma=2.4, penalty=1e-10)
    with pytest.warns(ReferenceSupportWarning, match=r"1 data event\(s\) lie where the reference sample cannot "
                                                     r"support them.*x = \[\d+\.\d+\]"):
        fitted = loose.fit(beyond, x_ref, w_ref)
    assert fitted.unsupported_events_.tolist() == [len(x_data)] and fitted.fit_.f_data[-1] > np.log(1e3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReferenceSupportWarning)
        default = KernelNPLM(n_centers=500, sigma=2.4).fit(beyond, x_ref, w_ref)
        plain = KernelNPLM(n_centers=500, sigma=2.4).fit(x_data, x_ref, w_ref)
    assert len(default.unsupported_events_) == 0 and default.t_ < plain.t_ + 10 < fitted.t_

    def with_an_event_beyond(rng):
        return np.vstack([BENCHMARK.data(rng), [[x_ref.max() + 0.5]]])

    campaign = run_toys(NPLMTest(loose), with_an_event_beyond, x_ref, w_ref, n_toys=2, seed=0, executor="serial",
                        progress=False)
    assert campaign.n_unsupported == 2 and all(row["unsupported_events"] == 1 for row in campaign.rows)
    assert all(any("ReferenceSupportWarning" in text for text in row["warnings"]) for row in campaign.rows)


def test_a_reference_carried_by_a_few_events_warns_with_its_effective_size(reference):
    x_ref, w_ref = reference
    weights = w_ref.copy()
    weights[0] = weights.sum() / 2  # one event carries a third of N(R)
    weights *= w_ref.sum() / weights.sum()
    with pytest.warns(SampleSizeWarning, match=r"effective size \(Kish: \(sum w\)\^2 / sum w\^2\) 8\.99\d of "
                                               r"N_R = 20000 events\) is less than 5 times the data sample"):
        KernelNPLM(n_centers=50).fit(BENCHMARK.data(np.random.default_rng(2)), x_ref, weights)


@pytest.mark.parametrize("backend", [KernelNPLM(n_centers=20), NNNPLM(epochs=5)])
def test_a_reference_of_identical_events_is_refused_by_every_backend(backend):
    with pytest.raises(InputError, match=r"x_ref: all 500 reference event\(s\) are the same point \[1\.5\]"):
        backend.fit(np.full((50, 1), 1.5) + np.arange(50)[:, None], np.full((500, 1), 1.5), 0.1)


def test_a_scalar_t_against_a_multi_scale_null_is_refused():
    with pytest.raises(InputError, match="one column per member"):
        significance(3.0, np.ones((20, 2)))


def _saved_kernel(tmp_path, reference, **settings):
    x_ref, w_ref = reference
    path = tmp_path / "model.npz"
    save_model(KernelNPLM(n_centers=30, **settings).fit(BENCHMARK.data(np.random.default_rng(3)), x_ref, w_ref), path)
    return path


@pytest.mark.parametrize("change, problem", [
    (lambda metadata, arrays: metadata["parameters"].update(memory_budget=-1), "memory_budget must be"),
    (lambda metadata, arrays: metadata["parameters"].update(n_centers="import os"), "n_centers must be"),
    (lambda metadata, arrays: metadata["state"].update(sigma_=1e308), "sigma_ = 1e\\+308 is so wide"),
])
def test_tampered_hyperparameters_of_a_saved_model_are_refused(tmp_path, reference, change, problem):
    from test_persistence import _rewrite

    path = _rewrite(_saved_kernel(tmp_path, reference), tmp_path / "tampered.npz", change)
    with pytest.raises(InputError, match=f"tampered.npz: damaged model file: {problem}"):
        load_model(path)


def test_oversized_or_deeply_nested_model_files_are_refused_before_they_are_read(tmp_path, reference, monkeypatch):
    path = _saved_kernel(tmp_path, reference)
    monkeypatch.setattr(models, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(InputError, match=r"model.npz: \d+ MiB unpacked, more than any model nplm-kernel writes"):
        load_model(path)
    monkeypatch.undo()
    nested = tmp_path / "nested.npz"
    with zipfile.ZipFile(nested, "w") as archive, archive.open("metadata.npy", "w") as handle:
        np.lib.format.write_array(handle, np.array("[" * 200_000 + "]" * 200_000))
    with pytest.raises(InputError, match="nested.npz: damaged model file: its metadata is nested too deeply"):
        load_model(nested)


def test_save_model_never_writes_through_a_link(tmp_path, reference):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "link.npz").symlink_to(target)
    x_ref, w_ref = reference
    fitted = KernelNPLM(n_centers=20).fit(BENCHMARK.data(np.random.default_rng(4)), x_ref, w_ref)
    with pytest.raises(InputError, match="link.npz is a symbolic link"):
        save_model(fitted, tmp_path / "link.npz")
    assert target.read_text() == "keep me"


def _config(tmp_path, reference, **changes):
    x_ref, _ = reference
    np.save(tmp_path / "ref.npy", x_ref)
    np.save(tmp_path / "data.npy", BENCHMARK.data(np.random.default_rng(5)))
    config = {"inputs": {"data": {"path": "data.npy"}, "reference": {"path": "ref.npy", "expected_yield": 200.0}},
              "backend": {"kind": "kernel", "n_centers": 20}, "toys": {"n_toys": 3, "pool_fraction": 0.5},
              "outputs": {"directory": "out"}}
    for section, values in changes.items():
        config[section] = config.get(section, {}) | values
    path = tmp_path / "analysis.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("section, values, key", [
    ("outputs", {"directory": "/tmp/elsewhere"}, "outputs.directory"),
    ("outputs", {"directory": "../up"}, "outputs.directory"),
    ("toys", {"store": "../../x.jsonl"}, "toys.store"),
])
def test_config_paths_that_leave_the_output_directory_are_refused_with_their_key_and_line(tmp_path, reference,
                                                                                       section, values, key):
    path = _config(tmp_path, reference, **{section: values})
    with pytest.raises(ConfigurationError, match=rf"{key} \(line \d+\): .* must be a relative path inside"):
        load_config(path)


def test_nplm_run_never_writes_through_a_link_and_yaml_keys_are_given_once(tmp_path, reference):
    from nplm_kernel.app.analysis import run_analysis

    path = _config(tmp_path, reference)
    (tmp_path / "out").mkdir()
    target = tmp_path / "precious.json"
    target.write_text("keep me")
    (tmp_path / "out" / "result.json").symlink_to(target)
    with pytest.raises(ConfigurationError, match="result.json is a symbolic link"):
        run_analysis(path, progress=False)
    assert target.read_text() == "keep me" and not (tmp_path / "out" / "toys.jsonl").exists()
    path.write_text(path.read_text() + "toys: {n_toys: 5}\n")
    with pytest.raises(ConfigurationError, match=r"key 'toys' is given twice \(lines \d+ and \d+\)"):
        load_config(path)


def test_errors_about_huge_values_stay_one_readable_line_and_baselines_check_their_settings(reference):
    with pytest.raises(ConfigurationError) as raised:
        KernelNPLM(sigma="x" * 10**6).check_settings()
    assert len(str(raised.value)) < 300 and "1000002 characters" in str(raised.value)
    x_ref, w_ref = reference
    x_data = BENCHMARK.data(np.random.default_rng(6))
    with pytest.raises(ConfigurationError, match="window = 100 bins cannot exceed bins = 40"):
        GaussianProcessBumpSearch(window=100).fit(x_data, x_ref, w_ref)
    with pytest.raises(ConfigurationError, match="sigma must be positive and finite, got -1"):
        MaximumMeanDiscrepancy(sigma=-1).fit(x_data, x_ref, w_ref)
