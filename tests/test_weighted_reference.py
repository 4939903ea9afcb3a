"""Weighted and NLO references: Kish's effective sample size, cell resampling of negative weights
(against the original's and the true histograms), weighted pools (against the exact expectation of
each event's count), permutation toys refused for weighted references, a calibrated null on a
resampled NLO reference, and `nplm toys` / `nplm test` on weighted ROOT files."""

import re

import numpy as np
import pytest
from scipy import stats

from nplm_kernel import InputError, KernelNPLM, NPLMTest, SampleSizeWarning, run_toys
from nplm_kernel.benchmarks import Dimuon5D, Exponential1D, NLOReference
from nplm_kernel.cli import main
from nplm_kernel.core.weights import effective_sample_size, resample_negative_weights
from nplm_kernel.inference.calibration import empirical_p_value
from nplm_kernel.toys import (
    PermutationToys,
    ReferencePoolToys,
    WeightedPoolToys,
    pool_toys,
    split_reference,
)


def test_effective_sample_size_is_kish():
    assert effective_sample_size(np.full(50, 0.3)) == pytest.approx(50.0)
    assert effective_sample_size([1.0, 1.0, 2.0]) == pytest.approx(16.0 / 6.0)
    assert effective_sample_size([-1.0, 2.0, 2.0]) == pytest.approx(9.0 / 9.0)
    with pytest.raises(InputError, match="every weight is zero"):
        effective_sample_size([0.0, 0.0])


def test_a_cell_takes_the_nearest_events_until_its_sum_is_not_negative():
    x = np.array([[0.0], [0.1], [0.3], [5.0], [5.1]])
    w = np.array([-3.0, 1.0, 4.0, 1.0, 2.0])
    resampled = resample_negative_weights(x, w)
    # cell {0, 1, 2}: sum 2, |w| sum 8 -> |w| / 4; the events at 5 are not in any cell
    np.testing.assert_allclose(resampled.w, [0.75, 0.25, 1.0, 1.0, 2.0])
    assert list(resampled.cell_sizes) == [3] and resampled.cell_radii[0] == pytest.approx(0.3 / x.std())
    pair = resample_negative_weights(np.array([[0.0], [0.0], [1.0]]), np.array([1.0, -1.0, 1.0]))
    assert pair.n_dropped == 2 and np.array_equal(pair.x, [[1.0]])  # the seed is in its cell even among duplicates
    with pytest.raises(InputError, match="the weights sum to -1"):
        resample_negative_weights(x[:2], [-2.0, 1.0])


def _histogram_chi2(x_a, w_a, x_b, w_b, edges, variance_x, variance_w):
    """sum over bins of (H_a - H_b)^2 / sigma^2, with sigma^2 = the weighted sample (variance_x,
    variance_w)'s sum of w^2 per bin (plus b's when it is an independent sample)."""
    h_a = np.histogramdd(x_a, edges, weights=w_a)[0]
    h_b = np.histogramdd(x_b, edges, weights=w_b)[0]
    variance = np.histogramdd(variance_x, edges, weights=variance_w**2)[0]
    return float(np.sum((h_a - h_b) ** 2 / variance)), h_a.size


def test_the_resampled_1d_nlo_reference_keeps_the_histogram_within_its_mc_errors():
    bench = Exponential1D(n_expected=200.0, n_reference=20_000)
    x, w = NLOReference(bench, negative_fraction=0.2).reference(np.random.default_rng(3))
    assert 0.18 < np.mean(w < 0) < 0.22 and w.sum() == pytest.approx(200.0, rel=1e-12)
    resampled = resample_negative_weights(x, w)
    assert (resampled.w > 0).all() and resampled.w.sum() == pytest.approx(w.sum(), rel=1e-12)
    edges = [np.concatenate([[0.0], np.quantile(x[:, 0], np.linspace(0.05, 0.95, 19)), [np.inf]])]
    against_original, n_bins = _histogram_chi2(resampled.x, resampled.w, x, w, edges, x, w)
    assert against_original < 0.1 * n_bins  # only events within one cell move between bins
    exact = 200.0 * np.diff(stats.expon.cdf(edges[0]))  # the benchmark's true N(R) p per bin
    resampled_counts = np.histogram(resampled.x[:, 0], edges[0], weights=resampled.w)[0]
    variance = np.histogram(x[:, 0], edges[0], weights=w**2)[0]
    assert stats.chi2.sf(np.sum((resampled_counts - exact) ** 2 / variance), n_bins) > 0.01
    clipped = np.clip(w, 0.0, None) * (w.sum() / np.clip(w, 0.0, None).sum())  # dropping negatives is biased
    clipped_counts = np.histogram(x[:, 0], edges[0], weights=clipped)[0]
    assert stats.chi2.sf(np.sum((clipped_counts - exact) ** 2 / variance), n_bins) < 1e-6


@pytest.mark.slow
def test_the_resampled_5d_nlo_reference_keeps_every_feature_and_a_2d_projection():
    bench = Dimuon5D(n_reference=20_000)
    x, w = NLOReference(bench).reference(np.random.default_rng(4))
    resampled = resample_negative_weights(x, w)
    assert resampled.w.sum() == pytest.approx(w.sum(), rel=1e-12) and (resampled.w > 0).all()
    truth = bench.events(200_000, np.random.default_rng(5))  # an independent unweighted sample of the density
    w_truth = np.full(len(truth), bench.n_expected / len(truth))
    for columns in ([0], [1], [2], [3], [4], [0, 2]):
        n_edges = 11 if len(columns) == 1 else 6
        edges = [np.concatenate([[-np.inf], np.quantile(truth[:, c], np.linspace(0, 1, n_edges)[1:-1]), [np.inf]])
                 for c in columns]
        against_original, n_bins = _histogram_chi2(resampled.x[:, columns], resampled.w, x[:, columns], w, edges,
                                                   x[:, columns], w)
        assert against_original < 0.5 * n_bins, columns
        h_resampled = np.histogramdd(resampled.x[:, columns], edges, weights=resampled.w)[0]
        h_truth = np.histogramdd(truth[:, columns], edges, weights=w_truth)[0]
        variance = (np.histogramdd(x[:, columns], edges, weights=w**2)[0]
                    + np.histogramdd(truth[:, columns], edges, weights=w_truth**2)[0])
        assert stats.chi2.sf(np.sum((h_resampled - h_truth) ** 2 / variance), n_bins) > 0.001, columns


def _inclusion_probabilities(weights: np.ndarray, n_expected: float) -> np.ndarray:
    """Exact P(event i in a toy) of accept-reject (keep i with a_i = w_i / max w) followed by
    N ~ Poisson(n_expected) kept events drawn without replacement, when a toy never needs more than
    are kept: a_i n_expected E[1 / (1 + K_i)], K_i the number of other events kept (Poisson-binomial,
    its distribution by convolution)."""
    kept = weights / weights.max()
    probabilities = np.empty(len(weights))
    for i in range(len(weights)):
        distribution = np.array([1.0])
        for j in np.delete(np.arange(len(weights)), i):
            distribution = np.append(distribution * (1 - kept[j]), 0.0) + np.insert(distribution * kept[j], 0, 0.0)
        probabilities[i] = kept[i] * n_expected * np.sum(distribution / (1.0 + np.arange(len(distribution))))
    return probabilities


def test_a_weighted_pool_draws_each_event_in_proportion_to_its_weight(rng):
    pool = np.arange(60.0)[:, None]
    weights = rng.uniform(0.5, 3.0, size=60)
    toys = WeightedPoolToys(pool, weights, n_expected=4.0)
    n_toys = 20_000
    draws = [toys(rng)[:, 0] for _ in range(n_toys)]
    assert all(len(np.unique(draw)) == len(draw) for draw in draws)  # no event twice in a toy
    counts = np.bincount(np.concatenate(draws).astype(int), minlength=60)
    exact = _inclusion_probabilities(weights, 4.0)
    assert np.corrcoef(exact, weights)[0, 1] > 0.999 and exact.sum() == pytest.approx(4.0, rel=1e-6)
    chi2 = np.sum((counts - n_toys * exact) ** 2 / (n_toys * exact * (1 - exact)))
    assert stats.chi2.sf(chi2, 60) > 0.001
    uniform = np.full(60, 4.0 / 60)  # a pool that ignored the weights would fail
    assert stats.chi2.sf(np.sum((counts - n_toys * uniform) ** 2 / (n_toys * uniform)), 60) < 1e-10
    sizes = np.array([len(draw) for draw in draws])
    assert sizes.mean() == pytest.approx(4.0, abs=0.05) and sizes.var() == pytest.approx(4.0, rel=0.05)


def test_a_small_weighted_pool_is_refused_and_too_many_toys_warn_with_the_figures(rng):
    weights = rng.uniform(0.5, 3.0, size=200)
    n_eff = effective_sample_size(weights)
    with pytest.raises(InputError, match=rf"n_eff = {n_eff:.0f} events.*needs n_eff >= 10 N\(R\) = 300"):
        WeightedPoolToys(rng.normal(size=(200, 1)), weights, n_expected=30.0)
    toys = WeightedPoolToys(rng.normal(size=(200, 1)), weights, n_expected=n_eff / 12)
    assert toys.independent_toys == pytest.approx(144.0)
    toys.check_toys(144)
    with pytest.warns(SampleSizeWarning, match=r"carry the information of about 98 independent ones \(at most .* 144\)"):
        toys.check_toys(300)
    with pytest.raises(InputError, match="pool weights has 1 non-positive weight.*negative_weights='resample'"):
        WeightedPoolToys(rng.normal(size=(3, 1)), [1.0, -1.0, 2.0], n_expected=0.1)
    outlier = np.append(np.ones(10_000), 200.0)  # Kish n_eff 2081, but accept-reject keeps 51 events per toy
    with pytest.raises(InputError, match=r"on average sum w / max w = 51 events \(the largest weight is 196 times"):
        WeightedPoolToys(rng.normal(size=(10_001, 1)), outlier, n_expected=50.0)
    unweighted = ReferencePoolToys(rng.normal(size=(1000, 1)), n_expected=50.0)
    assert unweighted.independent_toys == pytest.approx(400.0) and "unweighted" in unweighted.summary()


def test_split_gives_a_weighted_pool_only_for_a_weighted_reference(rng):
    x = rng.exponential(size=(4000, 1))
    toys, _, w_rest = ReferencePoolToys.split(x, np.full(4000, 0.05), 0.5, seed=3)
    assert type(toys) is ReferencePoolToys and sorted(vars(toys)) == ["n_expected", "pool"]  # identity as before
    weights = rng.uniform(0.5, 1.5, size=4000) / 80.0
    x_pool, w_pool, x_rest, w_rest = split_reference(x, weights, 0.5, seed=3)
    assert np.array_equal(x_pool, toys.pool) and w_rest.sum() == pytest.approx(weights.sum())
    weighted = pool_toys(x_pool, w_pool, weights.sum())
    assert type(weighted) is WeightedPoolToys and weighted.effective_size == pytest.approx(effective_sample_size(w_pool))


def test_permutation_toys_refuse_a_weighted_reference_and_say_why(rng):
    x_data, x_ref = rng.normal(size=(20, 1)), rng.normal(size=(200, 1))
    toys = PermutationToys.from_reference(x_data, x_ref, np.full(200, 0.1))
    assert toys.expected_yield == pytest.approx(20.0) and toys.n_data == 20
    with pytest.raises(InputError, match="permutation toys need an unweighted reference.*held-out pool"):
        PermutationToys.from_reference(x_data, x_ref, rng.uniform(0.05, 0.15, size=200))


@pytest.mark.slow
def test_the_null_of_a_resampled_nlo_reference_is_calibrated():
    """Pool toys from a cell-resampled NLO reference calibrate tests of data drawn from the
    benchmark's true density: their p-values are uniform (KS) and their t follow the null toys'."""
    bench = Exponential1D(n_expected=100.0, n_reference=30_000)
    x, w = NLOReference(bench).reference(np.random.default_rng(1))
    x_pool, w_pool, x_rest, w_rest = split_reference(x, w, 0.5, seed=0)
    pool, rest = resample_negative_weights(x_pool, w_pool), resample_negative_weights(x_rest, w_rest)
    toys = pool_toys(pool.x, pool.w, w.sum(), pool.original_effective_size)
    test = NPLMTest(KernelNPLM(n_centers=30, reuse_reference=True), width_quantiles=None)
    null = run_toys(test, toys, rest.x, rest.w, n_toys=200, seed=1, executor=None, progress=False)
    observed = run_toys(test, bench.data, rest.x, rest.w, n_toys=100, seed=2, executor=None, progress=False)
    p_values = [empirical_p_value(t, null.t)[0] for t in observed.t]
    assert stats.kstest(p_values, "uniform").pvalue > 0.01
    assert stats.ks_2samp(null.t, observed.t).pvalue > 0.01  # t on true-density data is null-like


def _write_root(path, **branches):
    uproot = pytest.importorskip("uproot")
    with uproot.recreate(path) as file:
        file["Events"] = {name: np.asarray(values, dtype=np.float64) for name, values in branches.items()}


@pytest.fixture
def root_files(tmp_path):
    rng = np.random.default_rng(7)
    proposal = rng.exponential(1.5, size=20_000)  # a weighted reference: events from Exp(mean 1.5), w ~ p / q
    weights = np.exp(-proposal / 3.0)
    _write_root(tmp_path / "weighted.root", x=proposal, w=weights * (100.0 / weights.sum()))
    x_nlo, w_nlo = NLOReference(Exponential1D(n_expected=100.0, n_reference=20_000)).reference(rng)
    _write_root(tmp_path / "nlo.root", x=x_nlo[:, 0], w=w_nlo)
    data = np.concatenate([rng.exponential(size=rng.poisson(100)), rng.normal(1.6, 0.1, size=60)])
    _write_root(tmp_path / "data.root", x=data)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("reference, extra", [("weighted.root", []), ("nlo.root", ["--negative-weights", "resample"])])
def test_toys_and_test_run_on_a_weighted_root_reference(root_files, capsys, reference, extra):
    common = ["--reference", str(root_files / reference), "--key", "Events", "--columns", "x", "--weight-column", "w",
              "--pool-fraction", "0.5", "--n-centers", "30", "--seed", "2", *extra]
    store = root_files / f"{reference}.jsonl"
    assert main(["toys", *common, "--store", str(store), "--n-toys", "6", "--executor", "serial", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "6 toys in" in out and "weighted: accept-reject keeps about" in out
    assert float(re.search(r"Kish n_eff = (\d+) = ([\d.]+) N\(R\)", out).group(2)) > 10
    assert main(["test", "--data", str(root_files / "data.root"), *common, "--null", str(store)]) == 0
    out = capsys.readouterr().out
    assert float(re.search(r"t:\s+([\d.]+)", out).group(1)) > 20 and "null:      6 toys" in out and "Z:" in out


def test_negative_weights_are_refused_with_the_option_named_and_permutations_need_an_unweighted_reference(
        root_files, capsys):
    common = ["--reference", str(root_files / "nlo.root"), "--key", "Events", "--columns", "x", "--weight-column", "w",
              "--store", str(root_files / "s.jsonl"), "--n-toys", "2", "--executor", "serial", "--no-progress"]
    assert main(["toys", *common, "--pool-fraction", "0.5"]) == 2
    assert "--negative-weights resample" in capsys.readouterr().err
    weighted = [*common[:1], str(root_files / "weighted.root"), *common[2:]]
    assert main(["toys", *weighted, "--null-toys", "permutation"]) == 2
    assert "--null-toys permutation permutes the data with the reference: give the data with --data" in \
        capsys.readouterr().err
    assert main(["toys", *weighted, "--null-toys", "permutation", "--data", str(root_files / "data.root")]) == 2
    assert "permutation toys need an unweighted reference" in capsys.readouterr().err
    assert main(["toys", *weighted, "--null-toys", "permutation", "--pool-fraction", "0.5"]) == 2
    assert "give one or the other" in capsys.readouterr().err


@pytest.mark.slow
def test_permutation_toys_from_the_command_line_calibrate_nplm_test(root_files, capsys):
    common = ["--reference", str(root_files / "weighted.root"), "--key", "Events", "--columns", "x",
              "--expected-yield", "100", "--null-toys", "permutation", "--data", str(root_files / "data.root"),
              "--n-centers", "30"]
    store = root_files / "permutation.jsonl"
    assert main(["toys", *common, "--store", str(store), "--n-toys", "4", "--executor", "serial", "--no-progress"]) == 0
    assert "permutation toys:" in capsys.readouterr().out
    assert main(["test", *common, "--null", str(store)]) == 0  # the same reference: the store's identity matches
    assert "null:      4 toys" in capsys.readouterr().out


NLO_CONFIG = """\
inputs:
  data: {path: data.root}
  reference: {path: nlo.root, weight_column: w}
  columns: [x]
  key: Events
  negative_weights: resample
backend: {kind: kernel, n_centers: 30}
toys: {n_toys: 4, seed: 1, executor: serial, pool_fraction: 0.5}
test: {width_quantiles: []}
outputs: {directory: nlo_out}
"""


def test_analysis_configs_check_negative_weights_and_the_kind_of_null_toys(root_files):
    from nplm_kernel import ConfigurationError
    from nplm_kernel.app.config import load_config

    config = root_files / "nlo.yaml"
    config.write_text(NLO_CONFIG.replace("resample", "drop"))
    with pytest.raises(ConfigurationError, match=r"inputs\.negative_weights \(line 6\): .*\['refuse', 'resample'\]"):
        load_config(config)
    config.write_text(NLO_CONFIG.replace("executor: serial,", "executor: serial, kind: permutation,"))
    with pytest.raises(ConfigurationError, match=r"toys \(line 8\): .*permutation toys permute the data"):
        load_config(config)
    config.write_text(NLO_CONFIG.replace("pool_fraction: 0.5", "kind: pools"))
    with pytest.raises(ConfigurationError, match=r"toys\.kind \(line 8\): .*\['permutation', 'pool'\]"):
        load_config(config)


@pytest.mark.slow
def test_nplm_run_on_an_nlo_reference_and_with_permutation_toys(root_files):
    import json

    config = root_files / "nlo.yaml"
    config.write_text(NLO_CONFIG)
    assert main(["run", str(config), "--no-progress"]) == 0
    result = json.loads((root_files / "nlo_out" / "result.json").read_text())
    assert result["n_toys"] == 4 and result["null_toys"].startswith("held-out pool (weighted")
    permuted = NLO_CONFIG.replace("{path: nlo.root, weight_column: w}", "{path: weighted.root, expected_yield: 100}")
    config.write_text(permuted.replace("pool_fraction: 0.5", "kind: permutation").replace("nlo_out", "perm_out"))
    assert main(["run", str(config), "--no-progress"]) == 0
    result = json.loads((root_files / "perm_out" / "result.json").read_text())
    assert result["null_toys"].startswith("permutation toys:") and result["n_reference"] == 20_000


@pytest.mark.slow
def test_weighted_reference_study_smoke(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "studies" / "weighted_reference.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    table = study.run("smoke", tmp_path, progress=False)
    assert "| 5D | pT1 x eta1 | 36 |" in table and "sum of weights 100.000000 -> 100.000000" in table
    for reference, toys in (("unweighted", "ReferencePoolToys"), ("weighted", "WeightedPoolToys"),
                            ("NLO, resampled", "WeightedPoolToys"), ("NLO, resampled, pool 80%", "WeightedPoolToys")):
        assert f"| {reference} | {toys} |" in table
    assert (tmp_path / "table.md").read_text() == table + "\n" and (tmp_path / "r2_null.jsonl").exists()
