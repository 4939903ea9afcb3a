"""The weight-clipped NN backend: faithful network, exact gradients, the shared contract."""

import numpy as np
import pytest
import torch

from nn_baseline import NNNPLM, ClippedMLP
from nplm_kernel import ConfigurationError, KernelNPLM, NotFittedError
from nplm_kernel.benchmarks import Exponential1D, GaussianSignal
from nplm_kernel.toys import toy_threads
from nplm_kernel.tuning import tune_weight_clip


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_hand_written_backward_matches_autograd(rng, activation):
    network = ClippedMLP((2, 5, 3, 1), activation, torch.Generator().manual_seed(1))
    points = torch.as_tensor(rng.normal(size=(2, 400)), dtype=torch.float32)
    n_data = 40
    w_ref = torch.as_tensor(rng.uniform(0.05, 0.15, size=360), dtype=torch.float32)
    offset_data = torch.as_tensor(rng.normal(0, 0.1, size=40), dtype=torch.float32)
    offset_ref = torch.as_tensor(rng.normal(0, 0.1, size=360), dtype=torch.float32)

    loss, _ = network.nplm_loss_backward(points, n_data, w_ref, offset_data, offset_ref, with_loss=True)
    manual = [parameter.grad.clone() for parameter in network.parameters()]
    network.zero_grad()
    f = network(points.T)
    reference = (w_ref * (torch.exp(f[n_data:] + offset_ref) - 1)).sum() - (f[:n_data] + offset_data).sum()
    reference.backward()
    assert float(loss) == pytest.approx(float(reference.detach()), rel=1e-5)
    for mine, theirs in zip(manual, (parameter.grad for parameter in network.parameters())):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_parameter_counts_and_keras_initialisation():
    assert ClippedMLP((1, 4, 1), "sigmoid", torch.Generator().manual_seed(0)).n_parameters == 13
    network = ClippedMLP((5, 5, 5, 5, 1), "sigmoid", torch.Generator().manual_seed(0))
    assert network.n_parameters == 96  # the papers' 5D architecture
    for layer in network.layers:
        fan_out, fan_in = layer.weight.shape
        assert float(layer.weight.detach().abs().max()) <= np.sqrt(6.0 / (fan_in + fan_out))
        assert float(layer.bias.detach().abs().max()) == 0.0


@pytest.fixture
def small_benchmark(rng):
    benchmark = Exponential1D(n_expected=200.0, n_reference=20_000)
    x_ref, w_ref = benchmark.reference(rng)
    return benchmark, x_ref, w_ref


@pytest.mark.slow
def test_fit_contract_clipping_and_history(small_benchmark, rng):
    benchmark, x_ref, w_ref = small_benchmark
    x_data = benchmark.data(rng, GaussianSignal(1.6, 0.16, 100.0))
    estimator = NNNPLM(architecture=(1, 4, 1), weight_clip=0.5, epochs=600, checkpoint_every=100,
                       learning_rate=0.05).fit(x_data, x_ref, w_ref)
    weights = [layer.weight.detach() for layer in estimator.network_.layers]
    assert max(float(w.abs().max()) for w in weights) == pytest.approx(0.5)  # the clip binds ...
    assert all(float(w.abs().max()) <= 0.5 for w in weights)  # ... and holds
    assert estimator.t_ == -2 * estimator.loss_
    assert estimator.n_parameters_ == 13
    np.testing.assert_array_equal(estimator.loss_history_[:, 0], np.arange(100, 601, 100))
    assert estimator.loss_history_[-1, 1] < estimator.loss_history_[0, 1]
    again = NNNPLM(architecture=(1, 4, 1), weight_clip=0.5, epochs=600, checkpoint_every=100,
                   learning_rate=0.05).fit(x_data, x_ref, w_ref)
    assert again.t_ == estimator.t_
    other = NNNPLM(architecture=(1, 4, 1), weight_clip=0.5, epochs=600, learning_rate=0.05, seed=1)
    assert other.fit(x_data, x_ref, w_ref).t_ != estimator.t_


@pytest.mark.slow
def test_both_backends_see_a_strong_signal_and_agree_on_its_sign(small_benchmark, rng):
    benchmark, x_ref, w_ref = small_benchmark
    signal = GaussianSignal(1.6, 0.16, 100.0)
    nn = dict(architecture=(1, 4, 1), weight_clip=9.0, epochs=1500, learning_rate=0.02)
    kernel = dict(n_centers=100, penalty=1e-6)
    null_nn = [NNNPLM(**nn).fit(benchmark.data(rng), x_ref, w_ref).t_ for _ in range(3)]
    null_kernel = [KernelNPLM(**kernel).fit(benchmark.data(rng), x_ref, w_ref).t_ for _ in range(3)]
    x_data = benchmark.data(rng, signal)
    nn_fit = NNNPLM(**nn).fit(x_data, x_ref, w_ref)
    kernel_fit = KernelNPLM(**kernel).fit(x_data, x_ref, w_ref)
    assert nn_fit.t_ > 3 * np.median(null_nn) + 20
    assert kernel_fit.t_ > 3 * np.median(null_kernel) + 20
    window = np.linspace(1.5, 1.7, 11)
    assert (nn_fit.decision_function(window) > 0).all() and (kernel_fit.decision_function(window) > 0).all()


def test_bad_settings_and_unfitted_use(small_benchmark, rng):
    benchmark, x_ref, w_ref = small_benchmark
    x_data = benchmark.data(rng)
    with pytest.raises(ConfigurationError, match="starts with 2 input"):
        NNNPLM(architecture=(2, 4, 1)).fit(x_data, x_ref, w_ref)
    with pytest.raises(ConfigurationError, match="end with 1 output"):
        NNNPLM(architecture=(1, 4, 2)).fit(x_data, x_ref, w_ref)
    with pytest.raises(ConfigurationError, match="weight_clip must be positive"):
        NNNPLM(weight_clip=0.0).fit(x_data, x_ref, w_ref)
    with pytest.raises(ConfigurationError, match="activation must be one of"):
        NNNPLM(activation="swish", epochs=1).fit(x_data, x_ref, w_ref)
    with pytest.raises(NotFittedError):
        NNNPLM().decision_function(x_data)


@pytest.mark.slow
def test_weight_clip_scan_picks_the_closest_to_chi2(small_benchmark):
    benchmark, x_ref, w_ref = small_benchmark
    scan = tune_weight_clip([0.1, 5.0], x_ref, w_ref, benchmark.data, n_toys=4, seed=3, executor="serial",
                            architecture=(1, 4, 1), epochs=300, learning_rate=0.05)
    assert scan.dof == 13 and len(scan.rows) == 2
    assert scan.best_clip == min(scan.rows, key=lambda row: row.ks_statistic).weight_clip
    tight, loose = scan.rows
    assert tight.median_t < loose.median_t  # a tighter clip means a less flexible network
    assert "| weight clip |" in scan.table() and "(chosen)" in scan.table()
    toy = benchmark.data(np.random.default_rng(np.random.SeedSequence(3).spawn(4)[0]))
    with toy_threads():  # the threads every toy of a campaign runs on
        refit = NNNPLM(weight_clip=0.1, architecture=(1, 4, 1), epochs=300, learning_rate=0.05).fit(toy, x_ref, w_ref)
    assert tight.t_null[0] == refit.t_


def test_bias_initialisation_options():
    """'zeros' leaves biases at 0; 'glorot_uniform' draws them within Keras' limit sqrt(3 / n_out)."""
    zeros = ClippedMLP((2, 5, 1), "sigmoid", torch.Generator().manual_seed(3))
    keras = ClippedMLP((2, 5, 1), "sigmoid", torch.Generator().manual_seed(3), bias_init="glorot_uniform")
    assert all(not layer.bias.detach().any() for layer in zeros.layers)
    hidden, output = keras.layers[0].bias.detach().abs(), keras.layers[1].bias.detach().abs()
    assert 0 < hidden.max() <= np.sqrt(3 / 5) and hidden.min() > 0
    assert 0 < output.max() <= np.sqrt(3.0)
    np.testing.assert_array_equal(zeros.layers[0].weight.detach(), keras.layers[0].weight.detach())


def test_a_campaign_draws_one_bar_not_one_per_fit(small_benchmark, capsys):
    from nplm_kernel import NPLMTest, run_toys

    benchmark, x_ref, w_ref = small_benchmark
    test = NPLMTest(NNNPLM(epochs=20, progress=True))
    quiet = test.with_quiet_fits()
    assert quiet.backend.progress is False and test.backend.progress is True
    assert quiet.identity(x_ref, w_ref) == test.identity(x_ref, w_ref)
    campaign = run_toys(test, benchmark.data, x_ref, w_ref, n_toys=2, executor=None, progress=True)
    assert len(campaign.t) == 2
    errors = capsys.readouterr().err
    assert "toys" in errors and "NN epochs" not in errors
