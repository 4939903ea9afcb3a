"""Toy campaigns: reproducible seeds, executors, crash-safe store and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from campaign_helpers import BENCHMARK, PoisonedGenerator, SlowGenerator, small_campaign_inputs

from nplm_kernel import ConfigurationError, FitError, InputError, KernelNPLM
from nplm_kernel.inference import NPLMTest
from nplm_kernel.store import read_store
from nplm_kernel.toys import CampaignResult, run_toys, toy_seed


def stored_rows(path):
    return list(read_store(path).rows)


@pytest.fixture(scope="module")
def inputs():
    return small_campaign_inputs()


def test_same_seed_same_toys_and_t(inputs):
    test, x_ref, w_ref = inputs
    first = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=4, seed=11, executor=None, progress=False)
    again = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=4, seed=11, executor=None, progress=False)
    other = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=4, seed=12, executor=None, progress=False)
    assert [row["toy"] for row in first.rows] == [0, 1, 2, 3]
    np.testing.assert_array_equal(first.t, again.t)
    assert not np.array_equal(first.t, other.t)
    # toy i is the test run on the data drawn from SeedSequence(seed, spawn_key=(i,)), nothing else
    x_data = BENCHMARK.data(np.random.default_rng(toy_seed(11, 2)))
    assert first.t[2] == KernelNPLM(n_centers=30).fit(x_data, x_ref, w_ref).t_
    assert first.rows[2]["n_data"] == len(x_data) and first.rows[2]["converged"] is True


def test_resume_runs_only_the_missing_toys(inputs, tmp_path):
    test, x_ref, w_ref = inputs
    store = tmp_path / "toys.jsonl"
    first = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=3, seed=4, executor=None, store=store, progress=False)
    calls = []

    def counting_generator(rng):
        calls.append(1)
        return BENCHMARK.data(rng)

    with pytest.raises(ConfigurationError, match="generator"):  # another generator: another campaign
        run_toys(test, counting_generator, x_ref, w_ref, n_toys=5, seed=4, executor=None, store=store, progress=False)
    store.unlink()
    first = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=3, seed=4, executor=None, store=store, progress=False,
                     generator_name="exponential background")
    resumed = run_toys(test, counting_generator, x_ref, w_ref, n_toys=5, seed=4, executor=None, store=store,
                       progress=False, generator_name="exponential background")
    assert len(calls) == 2
    assert [row["toy"] for row in resumed.rows] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(resumed.t[:3], first.t)
    assert len(stored_rows(store)) == 5
    complete = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=5, seed=4, executor=None, store=store,
                        progress=False, generator_name="exponential background")
    np.testing.assert_array_equal(complete.t, resumed.t)
    with pytest.raises(ConfigurationError, match="seed: the store has 4, this run has 9"):
        run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=5, seed=9, executor=None, store=store, progress=False,
                 generator_name="exponential background")


def test_a_torn_last_line_is_discarded_and_rewritten(inputs, tmp_path):
    test, x_ref, w_ref = inputs
    store = tmp_path / "toys.jsonl"
    run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=2, seed=6, executor=None, store=store, progress=False)
    with open(store, "a") as handle:
        handle.write('{"record": "toy", "toy": 2, "seed": 6, "st')  # a write cut by a kill
    assert len(stored_rows(store)) == 2  # readers ignore the torn line
    result = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=3, seed=6, executor=None, store=store,
                      progress=False)
    lines = store.read_text().splitlines()
    assert json.loads(lines[0])["record"] == "campaign"
    records = [json.loads(line) for line in lines[1:]]
    assert [row["toy"] for row in records if row["record"] == "toy"] == [0, 1, 2]
    assert {"record": "n_toys", "n_toys": 3} in records  # the campaign was extended from 2 to 3 toys
    assert len(result.t) == 3


@pytest.mark.slow
def test_a_campaign_killed_with_sigkill_resumes_to_exactly_n_toys(inputs, tmp_path):
    test, x_ref, w_ref = inputs
    store = tmp_path / "toys.jsonl"
    helper = Path(__file__).with_name("campaign_helpers.py")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(helper.parent.parent), str(helper.parent)])}
    process = subprocess.Popen([sys.executable, str(helper), str(store), "12"], env=environment)
    deadline = time.monotonic() + 120
    while (not store.exists() or len(stored_rows(store)) < 3) and time.monotonic() < deadline \
            and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_rows = stored_rows(store)
    assert 3 <= len(killed_rows) < 12
    result = run_toys(test, SlowGenerator(0.0), x_ref, w_ref, n_toys=12, seed=5, executor=None, store=store,
                      progress=False, generator_name="slow background")
    assert [row["toy"] for row in result.rows] == list(range(12))
    lines = [json.loads(line) for line in store.read_text().splitlines()[1:]]
    assert sorted(row["toy"] for row in lines) == list(range(12))  # no toy written twice
    for row in killed_rows:
        assert result.rows[row["toy"]]["t"] == row["t"]


def test_failed_toys_are_recorded_and_a_failure_threshold_stops_the_campaign(inputs):
    test, x_ref, w_ref = inputs
    result = run_toys(test, PoisonedGenerator(0.3), x_ref, w_ref, n_toys=10, seed=2, executor=None, progress=False,
                      max_failure_fraction=0.9)
    failed = [row for row in result.rows if row["status"] != "ok"]
    assert result.n_failed == len(failed) >= 1 and len(result.t) == 10 - len(failed)
    assert all("InputError" in row["status"] and "x_data contains 1 non-finite" in row["status"] for row in failed)
    with pytest.raises(FitError, match="toys failed"):
        run_toys(test, PoisonedGenerator(0.3), x_ref, w_ref, n_toys=10, seed=2, executor=None, progress=False,
                 max_failure_fraction=0.0)


def test_bad_campaign_settings(inputs):
    test, x_ref, w_ref = inputs
    with pytest.raises(ConfigurationError, match="must be picklable"):
        run_toys(test, lambda rng: BENCHMARK.data(rng), x_ref, w_ref, n_toys=2, executor=2, progress=False)
    with pytest.raises(ConfigurationError, match="executor must be .serial."):
        run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=2, executor="cluster", progress=False)
    with pytest.raises(ConfigurationError, match="n_toys must be a positive integer"):
        run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=0, executor=None, progress=False)
    with pytest.raises(ConfigurationError, match="backend must implement the backend contract"):
        NPLMTest("KernelNPLM")


@pytest.mark.parametrize("executor", [None, 2])
def test_a_setting_that_cannot_work_stops_the_campaign_instead_of_failing_every_toy(inputs, tmp_path, executor):
    _, x_ref, w_ref = inputs
    test = NPLMTest(KernelNPLM(n_centers=30, device="cuda:99", reuse_reference=True))  # no such device here
    with pytest.raises(ConfigurationError, match="cuda:99"):
        run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=6, executor=executor, progress=False,
                 store=tmp_path / "toys.jsonl", batch_size=3)
    assert read_store(tmp_path / "toys.jsonl").rows == ()  # no toy recorded as failed


def test_reference_pool_toys_draw_without_replacement(rng):
    from nplm_kernel.toys import ReferencePoolToys

    pool = np.arange(5000.0)[:, None]
    toys = ReferencePoolToys(pool, n_expected=300.0)
    sizes, first = [], None
    for _ in range(200):
        toy = toys(rng)
        sizes.append(len(toy))
        assert len(np.unique(toy)) == len(toy)  # no event twice in one toy
        first = toy if first is None else first
    assert np.mean(sizes) == pytest.approx(300, abs=4) and np.var(sizes) == pytest.approx(300, rel=0.35)
    assert set(first[:, 0]) <= set(pool[:, 0])
    with pytest.raises(InputError, match="held-out pool has 5000 events"):
        ReferencePoolToys(pool, n_expected=6000.0)(rng)


@pytest.mark.slow
def test_serial_pool_threads_and_dask_give_the_same_t_bit_for_bit(inputs):
    """Every toy runs on one thread (THREADS_PER_TOY) in blocks of consecutive indices, whatever
    executes it: 50 toys, one at a time and batched, give identical t on every executor."""
    distributed = pytest.importorskip("distributed")
    test, x_ref, w_ref = inputs
    batched = NPLMTest(KernelNPLM(n_centers=30, reuse_reference=True), width_quantiles=None)
    campaigns = [(test, 1), (batched, 8)]
    serial = [run_toys(one, BENCHMARK.data, x_ref, w_ref, n_toys=50, seed=8, executor=None, progress=False,
                       batch_size=size).t for one, size in campaigns]
    assert all(len(t) == 50 for t in serial)
    others = {"pool": 2}
    with ThreadPoolExecutor(2) as threads, distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with distributed.Client(cluster) as client:
            others |= {"threads": threads, "dask": client, "dask executor": client.get_executor(pure=False)}
            for name, executor in others.items():
                for (one, size), expected in zip(campaigns, serial):
                    t = run_toys(one, BENCHMARK.data, x_ref, w_ref, n_toys=50, seed=8, executor=executor,
                                 progress=False, batch_size=size).t
                    assert np.array_equal(t, expected), (name, size, np.abs(t - expected).max())


@pytest.mark.slow
def test_permutation_nulls_of_two_samples_from_one_distribution_give_uniform_p_values():
    """Data and reference from the same distribution: the permutation p-value of the observed t is
    uniform (KS), so resampling nulls are valid where no generator exists."""
    from scipy import stats

    from nplm_kernel.inference.calibration import empirical_p_value
    from nplm_kernel.toys import PermutationToys

    test = NPLMTest(KernelNPLM(n_centers=20, penalty=1e-4), width_quantiles=None)
    p_values = []
    for pair in range(40):
        rng = np.random.default_rng([pair, 99])
        x_data, x_ref = rng.exponential(size=(60, 1)), rng.exponential(size=(600, 1))
        t_observed = test.run(x_data, x_ref, np.full(600, 60 / 600)).t
        permuted = run_toys(test, PermutationToys(x_data, x_ref, expected_yield=60.0), None, None, n_toys=19,
                            seed=pair, executor=None, progress=False)
        p_values.append(empirical_p_value(t_observed, permuted.t)[0])
    assert stats.kstest(p_values, "uniform").pvalue > 0.01
    assert min(p_values) >= 1 / 20


def test_permutation_toys_keep_sizes_and_yield(rng):
    from nplm_kernel.toys import PermutationToys

    toys = PermutationToys(np.zeros((10, 1)), np.ones((90, 1)), expected_yield=12.0)
    toy = toys(rng)
    assert toy.x_data.shape == (10, 1) and toy.x_ref.shape == (90, 1)
    assert toy.w_ref.sum() == pytest.approx(12.0)
    assert sorted(np.concatenate([toy.x_data, toy.x_ref])[:, 0]) == sorted([0.0] * 10 + [1.0] * 90)
    with pytest.raises(FitError, match="InputError: the generator returned data only but run_toys got no reference"):
        run_toys(NPLMTest(KernelNPLM(n_centers=5)), BENCHMARK.data, None, None, n_toys=1, executor=None,
                 progress=False, max_failure_fraction=0.0)


def test_a_multi_scale_campaign_stores_one_t_per_width_and_calibrates_by_min_p(inputs, tmp_path):
    """widths fit one model per width on each toy; the rows hold each width's t (the t of a plain
    test with that sigma), and significance() calibrates an observed vector by min-p."""
    from nplm_kernel.inference.calibration import MIN_P, significance

    _, x_ref, w_ref = inputs
    test = NPLMTest(KernelNPLM(n_centers=30), widths=[0.5, 2.0])
    result = run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=6, seed=2, executor=None,
                      store=tmp_path / "multi.jsonl", progress=False)
    assert result.t.shape == (6, 2) and read_store(tmp_path / "multi.jsonl").rows[0]["widths"] == [0.5, 2.0]
    x_data = BENCHMARK.data(np.random.default_rng(toy_seed(2, 3)))
    for column, width in enumerate([0.5, 2.0]):
        assert result.t[3, column] == KernelNPLM(n_centers=30, sigma=width).fit(x_data, x_ref, w_ref).t_
    observed = test.run(BENCHMARK.data(np.random.default_rng(99)), x_ref, w_ref)
    assert observed.t.shape == (2,) and significance(observed.t, result.t).method == MIN_P
    with pytest.raises(ConfigurationError, match="widths must list at least 2"):
        NPLMTest(KernelNPLM(), widths=[1.0])


def test_the_default_test_is_the_full_model_at_the_09_quantile_and_the_excess_scan(inputs, tmp_path):
    """NPLMTest(KernelNPLM()) fits the full model at the 0.9 quantile of pairwise reference distances
    (found on the reference it runs against) and runs the excess scan: t per member is the t of that
    fit and of the scan alone, in one call and in a campaign; a fixed sigma, width_quantiles=None, a
    backend without a width or nuisances leave the scan out."""
    from nn_baseline import NNNPLM
    from nplm_kernel.baselines import KernelExcessScan
    from nplm_kernel.nuisance import NormalizationNuisance, NuisanceModel
    from nplm_kernel.store import CampaignMismatchError

    _, x_ref, w_ref = inputs
    default = NPLMTest(KernelNPLM(n_centers=30))
    widths = KernelNPLM(n_centers=30).reference_widths(x_ref, w_ref, (0.9,))
    x_data = BENCHMARK.data(np.random.default_rng(3))
    result = default.run(x_data, x_ref, w_ref)
    assert result.widths == tuple(widths) and result.members == (f"width {widths[0]:.3g}", "excess scan")
    assert result.t[0] == KernelNPLM(n_centers=30, sigma=widths[0]).fit(x_data, x_ref, w_ref).t_
    assert result.t[1] == KernelExcessScan().fit(x_data, x_ref, w_ref).t_
    assert result.row_fields()["excess_scan"]["excess_width"] > 0
    identity = default.identity(x_ref, w_ref)
    assert identity["widths"] == list(widths) and identity["excess_scan"]["fields"]["max_centers"] == 256
    assert result.member_weights == (1.0, 3.0) and identity["scan_weight"] == 3.0  # the scan weighted 3 : 1
    campaign = run_toys(default, BENCHMARK.data, x_ref, w_ref, n_toys=3, seed=2, executor=None,
                        store=tmp_path / "default.jsonl", progress=False)
    rows = read_store(tmp_path / "default.jsonl").rows
    assert campaign.t.shape == (3, 2) and rows[0]["widths"] == list(widths) and "excess_center" in rows[0]["excess_scan"]
    assert CampaignResult.from_store(tmp_path / "default.jsonl").member_weights == (1.0, 3.0)  # read from the store
    np.testing.assert_array_equal(campaign.t[1], default.run(BENCHMARK.data(np.random.default_rng(toy_seed(2, 1))),
                                                             x_ref, w_ref).t)
    assert min(campaign.t[:, 1]) < 0 <= min(campaign.t[:, 0])  # the scan's t has no floor, the fit's does
    with pytest.raises(CampaignMismatchError, match="holds the default test.*Drop width_quantiles=None"):
        run_toys(NPLMTest(KernelNPLM(n_centers=30), width_quantiles=None), BENCHMARK.data, x_ref, w_ref, n_toys=3,
                 seed=2, executor=None, store=tmp_path / "default.jsonl", progress=False)
    previous = NPLMTest(KernelNPLM(n_centers=30), width_quantiles=(0.5, 0.9), excess_scan=False)
    run_toys(previous, BENCHMARK.data, x_ref, w_ref, n_toys=2, seed=2, executor=None, store=tmp_path / "previous.jsonl",
             progress=False)
    with pytest.raises(CampaignMismatchError, match="without the excess scan.*--no-excess-scan"):
        run_toys(NPLMTest(KernelNPLM(n_centers=30), width_quantiles=(0.5, 0.9)), BENCHMARK.data, x_ref, w_ref,
                 n_toys=2, seed=2, executor=None, store=tmp_path / "previous.jsonl", progress=False)
    with pytest.raises(CampaignMismatchError, match="without the excess scan"):  # nplm test --null's check
        CampaignResult.from_store(tmp_path / "previous.jsonl", default, x_ref, w_ref)
    in_memory = run_toys(default, BENCHMARK.data, x_ref, w_ref, n_toys=2, seed=2, executor=None, progress=False)
    assert in_memory.member_weights == (1.0, 3.0)  # a campaign without a store knows its weights too
    for one_fit in (NPLMTest(KernelNPLM(n_centers=30, sigma=1.0)), NPLMTest(KernelNPLM(n_centers=30), width_quantiles=None),
                    NPLMTest(NNNPLM(epochs=5))):
        assert not one_fit.finds_widths and one_fit.for_reference(x_ref, w_ref) is one_fit
    with_nuisances = NPLMTest(KernelNPLM(n_centers=30), nuisances=NuisanceModel([NormalizationNuisance("n", 0.05)]))
    fitted = with_nuisances.run(x_data, x_ref, w_ref)  # one fit at the 0.9 quantile: the scan takes no nuisances
    assert np.ndim(fitted.t) == 0 and fitted.estimator.sigma_ == widths[0]
    assert "excess_scan" not in with_nuisances.identity(x_ref, w_ref)
    with pytest.raises(ConfigurationError, match="width_quantiles must list different quantiles in"):
        NPLMTest(KernelNPLM(), width_quantiles=[0.5, 1.5])
    with pytest.raises(ConfigurationError, match="excess_scan must be True or False"):
        NPLMTest(KernelNPLM(), excess_scan="yes")
    with pytest.raises(ConfigurationError, match="scan_weight"):
        NPLMTest(KernelNPLM(), scan_weight=0.0)
    discrete = np.random.default_rng(0).choice([0.0, 1.0, 2.0], p=[0.2, 0.6, 0.2], size=(2000, 1))
    with pytest.raises(ConfigurationError, match="give the same kernel width"):  # a test would fit it twice
        NPLMTest(KernelNPLM(), width_quantiles=(0.5, 0.9)).run(discrete[:100], discrete, 0.1)


def test_a_store_reads_into_pandas_with_integer_toy_indices(inputs, tmp_path):
    test, x_ref, w_ref = inputs
    store = tmp_path / "toys.jsonl"
    run_toys(test, BENCHMARK.data, x_ref, w_ref, n_toys=3, seed=5, executor=None, store=store, progress=False)
    campaign = CampaignResult.from_store(store)
    frame = campaign.to_pandas()
    assert list(frame.index) == [0, 1, 2] and frame.index.dtype.kind == "i" and frame.index.name == "toy"
    np.testing.assert_array_equal(frame["t"].to_numpy(), campaign.t)
    assert (frame["status"] == "ok").all() and "record" in frame.columns
