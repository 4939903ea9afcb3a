"""Stores written before the package's rooms were moved (version 0.1, tests/data/stores_before_0_2)
are the same campaigns today: each resumes, and the same campaign run again gives the stored t to
the solver's tolerance (the move itself changed no bit; the NPLM fits have since stopped passing
over data rows, which moves t by about 1e-9 relative)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from nplm_kernel import KernelNPLM, NPLMTest, run_toys
from nplm_kernel.baselines import BaselineTest, BinnedLikelihoodRatio
from nplm_kernel.benchmarks import Exponential1D, Exponential1DSystematics, ScaleCoefficients1D
from nplm_kernel.cli import main
from nplm_kernel.nuisance import NormalizationNuisance, NuisanceModel, ShapeNuisance
from nplm_kernel.store import CampaignMismatchError, read_store
from nplm_kernel.toys import PermutationToys, ReferencePoolToys

STORES = Path(__file__).parent / "data" / "stores_before_0_2"
BENCHMARK = Exponential1D(n_expected=200.0, n_reference=4000)


def campaigns():
    """The campaigns of the stored files, as they were written (name: (test, generator, x_ref, w_ref, seed))."""
    x_ref, w_ref = BENCHMARK.reference(np.random.default_rng(0))
    kernel = KernelNPLM(n_centers=40, seed=1)
    model = NuisanceModel([ShapeNuisance("scale", 0.05, ScaleCoefficients1D()), NormalizationNuisance("norm", 0.05)])
    permutations = PermutationToys(BENCHMARK.data(np.random.default_rng(3)), x_ref[:1000], 200.0)
    return {
        "pool": (NPLMTest(kernel, width_quantiles=None), ReferencePoolToys(x_ref[:2000], 200.0), x_ref[2000:], w_ref[2000:] * 2, 5),
        "nuisance": (NPLMTest(kernel, nuisances=model, width_quantiles=None), Exponential1DSystematics(benchmark=BENCHMARK).toys(), x_ref,
                     w_ref, 6),
        "baseline": (BaselineTest(BinnedLikelihoodRatio()), BENCHMARK.data, x_ref, w_ref, 7),
        "permutation": (NPLMTest(kernel, width_quantiles=None), permutations, None, None, 8),
        "multiscale": (NPLMTest(KernelNPLM(n_centers=40, reuse_reference=True), widths=[0.5, 2.0]), BENCHMARK.data,
                       x_ref, w_ref, 9),
    }


#: Campaigns whose kernel took its default width: that rule changed after 0.1, so their stores are
#: nulls of another test (CampaignMismatchError names the rule).
DEFAULT_WIDTH = ("pool", "nuisance", "permutation")


@pytest.mark.parametrize("name", DEFAULT_WIDTH)
def test_a_store_whose_kernel_took_the_former_default_width_is_refused_naming_the_rule(name, tmp_path):
    test, generator, x_ref, w_ref, seed = campaigns()[name]
    store = tmp_path / f"{name}.jsonl"
    shutil.copy(STORES / f"{name}.jsonl", store)
    with pytest.raises(CampaignMismatchError, match="default_width"):
        run_toys(test, generator, x_ref, w_ref, n_toys=4, seed=seed, executor="serial", store=store, progress=False)
    assert store.read_bytes() == (STORES / f"{name}.jsonl").read_bytes()


@pytest.mark.parametrize("name", sorted(set(campaigns()) - set(DEFAULT_WIDTH)))
def test_a_store_written_before_the_move_resumes_and_its_t_are_reproduced(name, tmp_path):
    test, generator, x_ref, w_ref, seed = campaigns()[name]
    store = tmp_path / f"{name}.jsonl"
    shutil.copy(STORES / f"{name}.jsonl", store)
    stored = [row["t"] for row in read_store(store).rows]
    resumed = run_toys(test, generator, x_ref, w_ref, n_toys=4, seed=seed, executor="serial", store=store,
                       progress=False)
    assert len(resumed.rows) == 4 and [row["t"] for row in resumed.rows[:3]] == stored
    again = run_toys(test, generator, x_ref, w_ref, n_toys=3, seed=seed, executor="serial", progress=False)
    np.testing.assert_allclose(again.t, np.array(stored), rtol=1e-7)


def test_a_cli_store_written_before_the_move_resumes_with_an_explicit_width_only(tmp_path, capsys):
    """The CLI campaign took the former default width: resuming it is refused with the reason, and the
    store keeps its rows."""
    shutil.copy(STORES / "cli.jsonl", tmp_path / "cli.jsonl")
    arguments = ["toys", "--reference", str(STORES / "reference.npy"), "--expected-yield", "200", "--pool-fraction",
                 "0.5", "--n-centers", "40", "--store", str(tmp_path / "cli.jsonl"), "--executor", "serial",
                 "--no-progress", "--n-toys", "4"]
    assert main(arguments) == 2 and "--width-quantiles none" in capsys.readouterr().err  # the default: several widths
    assert main(arguments + ["--width-quantiles", "none"]) == 2 and "default_width" in capsys.readouterr().err
    assert len(read_store(tmp_path / "cli.jsonl").rows) == 3
