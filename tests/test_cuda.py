"""CUDA against CPU on the same problems (marked `cuda`; skipped, with the reason, without a GPU).

Tolerances: t within 1e-9 relative in float64 and 1e-3 in float32 (the kernel), J within 1e-6 of the
CPU optimum, the NN's float32 t within 1e-3; save on one device, load on the other, same f."""

import numpy as np
import pytest
import torch

from nn_baseline import NNNPLM
from nn_baseline.taylor import NNTaylorLearner
from nplm_kernel import KernelNPLM, NPLMTest, load_model, run_toys, save_model
from nplm_kernel.benchmarks import Dimuon5D, Exponential1D, Exponential1DSystematics
from nplm_kernel.kernel.taylor import KernelTaylorLearner
from nplm_kernel.nuisance import NormalizationNuisance, NuisanceModel, ShapeNuisance

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: these tests compare CUDA with "
                                                              "the CPU and run on a GPU machine (pytest -m cuda)"),
]


@pytest.fixture(scope="module")
def one_d():
    bench = Exponential1D()
    x_ref, w_ref = bench.reference(np.random.default_rng(0))
    return bench, x_ref, w_ref


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-9), ("float32", 1e-3)])
@pytest.mark.parametrize("memory_budget", [2 * 1024**3, 3 * 10**8])  # cached, and blocked for 5D
def test_kernel_t_and_objective_match_the_cpu(one_d, dtype, tolerance, memory_budget):
    bench, x_ref, w_ref = one_d
    five = Dimuon5D(n_reference=100_000)
    cases = [(bench.data(np.random.default_rng(1)), x_ref, w_ref, 500),
             (five.data(np.random.default_rng(2)), *five.reference(np.random.default_rng(3)), 1000)]
    for x_data, reference, weights, n_centers in cases:
        settings = dict(n_centers=n_centers, dtype=dtype, memory_budget=memory_budget)
        cpu = KernelNPLM(**settings).fit(x_data, reference, weights)
        gpu = KernelNPLM(**settings, device="cuda").fit(x_data, reference, weights)
        assert gpu.t_ == pytest.approx(cpu.t_, rel=tolerance)
        assert gpu.diagnostics_.objective == pytest.approx(cpu.diagnostics_.objective, rel=1e-6)
        assert gpu.converged_


def test_nn_t_matches_the_cpu(one_d):
    bench, x_ref, w_ref = one_d
    x_data = bench.data(np.random.default_rng(4))
    settings = dict(epochs=2000, learning_rate=0.01)
    cpu = NNNPLM(**settings).fit(x_data, x_ref, w_ref)
    gpu = NNNPLM(**settings, device="cuda").fit(x_data, x_ref, w_ref)
    assert gpu.t_ == pytest.approx(cpu.t_, rel=1e-3)


def test_the_nuisance_fit_and_taylor_learners_match_the_cpu(one_d):
    bench, x_ref, w_ref = one_d
    syst = Exponential1DSystematics()
    rng = np.random.default_rng(5)
    nominal = syst.shifted_reference(rng, 0.0, 50_000)
    shifted = [(nu, *syst.shifted_reference(rng, nu, 50_000)) for nu in (-0.1, 0.1)]
    grid = np.linspace(0.0, 6.0, 50)[:, None]
    for learner in (KernelTaylorLearner(degree=1, n_centers=100), NNTaylorLearner(degree=1, epochs=300)):
        cpu = learner.fit(*nominal, shifted).coefficients(grid)
        gpu = learner.set_params(device="cuda").fit(*nominal, shifted).coefficients(grid)
        np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4)
    delta = KernelTaylorLearner(degree=1, n_centers=100).fit(*nominal, shifted)
    model = NuisanceModel([ShapeNuisance("scale", 0.05, delta), NormalizationNuisance("norm", 0.05)])
    toy = syst.toys(nu_scale=0.05)(np.random.default_rng(6))
    results = [NPLMTest(KernelNPLM(n_centers=300, device=device), nuisances=model).run(
        toy.x_data, x_ref, w_ref, central_values=toy.central_values) for device in ("cpu", "cuda")]
    assert results[1].t == pytest.approx(results[0].t, rel=1e-6)
    np.testing.assert_allclose(results[1].nu_hat_tau, results[0].nu_hat_tau, atol=1e-6)


def test_save_on_one_device_load_on_the_other(one_d, tmp_path):
    bench, x_ref, w_ref = one_d
    x_data = bench.data(np.random.default_rng(7))
    for estimator in (KernelNPLM(n_centers=200, device="cuda"), NNNPLM(epochs=200, device="cuda")):
        fitted = estimator.fit(x_data, x_ref, w_ref)
        save_model(fitted, tmp_path / "model.npz")
        on_cpu = load_model(tmp_path / "model.npz", device="cpu")
        np.testing.assert_allclose(on_cpu.decision_function(x_ref[:1000]), fitted.decision_function(x_ref[:1000]),
                                   rtol=1e-5, atol=1e-6)


def test_a_local_campaign_on_the_gpu_gives_the_serial_rows(one_d):
    bench, x_ref, w_ref = one_d
    test = NPLMTest(KernelNPLM(n_centers=500, device="cuda", reuse_reference=True))
    serial = run_toys(test, bench.data, x_ref, w_ref, n_toys=6, seed=1, executor=None, progress=False)
    pooled = run_toys(test, bench.data, x_ref, w_ref, n_toys=6, seed=1, executor="local", progress=False)
    np.testing.assert_allclose(pooled.t, serial.t, rtol=1e-9)
