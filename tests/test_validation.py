"""Every listed bad input gets a clear error naming the argument."""

import numpy as np
import pytest

from nplm_kernel import (
    ConfigurationError,
    InputError,
    KernelNPLM,
    NotFittedError,
    SampleSizeWarning,
    validate_samples,
)


@pytest.fixture
def good(rng):
    return rng.normal(size=(50, 2)), rng.normal(size=(500, 2)), 0.1


def _with_value(array, index, value):
    changed = np.array(array, dtype=float)
    changed[index] = value
    return changed


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d, r, w: (_with_value(d, (3, 1), np.nan), r, w), r"x_data contains 1 non-finite .* row 3"),
        (lambda d, r, w: (d, _with_value(r, (7, 0), np.inf), w), r"x_ref contains 1 non-finite .* row 7"),
        (lambda d, r, w: (d[:0], r, w), r"x_data is empty"),
        (lambda d, r, w: (d, r[:0], w), r"x_ref is empty"),
        (lambda d, r, w: (d[None], r, w), r"x_data must be 2-D"),
        (lambda d, r, w: (d, r[:, :1], w), r"x_data has 2 feature\(s\) but x_ref has 1"),
        (lambda d, r, w: (d, r, -0.1), r"w_ref has 500 non-positive"),
        (lambda d, r, w: (d, r, _with_value(np.full(500, w), 9, 0.0)), r"w_ref has 1 non-positive .* index 9"),
        (lambda d, r, w: (d, r, _with_value(np.full(500, w), 2, np.nan)), r"w_ref contains 1 non-finite"),
        (lambda d, r, w: (d, r, np.full(499, w)), r"w_ref must be a scalar or have shape \(500,\)"),
        (lambda d, r, w: (np.array([["a", "b"]]), r, w), r"x_data must be a numeric array"),
    ],
)
def test_bad_samples_raise_input_error_naming_the_argument(good, change, match):
    x_data, x_ref, w_ref = change(*good)
    with pytest.raises(InputError, match=match):
        KernelNPLM(n_centers=10).fit(x_data, x_ref, w_ref)


def test_bad_offsets_are_refused(good):
    x_data, x_ref, w_ref = good
    with pytest.raises(InputError, match=r"offset_data must have shape \(50,\)"):
        validate_samples(x_data, x_ref, w_ref, offset_data=np.zeros(49))
    with pytest.raises(InputError, match="offset_ref contains 1 non-finite"):
        validate_samples(x_data, x_ref, w_ref, offset_ref=_with_value(np.zeros(500), 4, np.nan))


def test_one_dimensional_arrays_are_one_feature(good):
    samples = validate_samples(np.arange(5.0), np.arange(50.0), 0.1)
    assert samples.x_data.shape == (5, 1) and samples.w_ref.shape == (50,)
    assert samples.expected_yield == pytest.approx(5.0)


def test_small_reference_sample_warns(rng):
    with pytest.warns(SampleSizeWarning, match="N_R = 100.*N_D = 50"):
        validate_samples(rng.normal(size=(50, 1)), rng.normal(size=(100, 1)), 0.5)


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"dtype": "float16"}, "dtype must be 'float32' or 'float64'"),
        ({"device": "not-a-device"}, "not a valid torch device"),
        ({"penalty": -1.0}, "penalty must be positive"),
        ({"penalty": 1e-6, "penalty_list": [1e-2, 1e-4]}, "must end at penalty=1e-06"),
        ({"penalty": 1e-6, "penalty_list": [1e-6, 1e-2, 1e-6]}, "non-increasing"),
        ({"sigma": 0.0}, "sigma must be positive and finite"),
        ({"n_centers": 0}, "n_centers must be a positive integer"),
        ({"max_cg_iter": 0}, "max_cg_iter must be a positive integer"),
        ({"newton_tol": np.nan}, "newton_tol must be positive"),
        ({"memory_budget": -5}, "memory_budget must be a >= 0 integer"),
        ({"memory_budget": 1000}, "memory_budget = 0.0 MiB cannot hold this fit"),
    ],
)
def test_bad_settings_raise_configuration_error(good, settings, match):
    with pytest.raises(ConfigurationError, match=match):
        KernelNPLM(**settings).fit(*good)


def test_missing_cuda_is_a_clear_error(good):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigurationError, match="CUDA is not available"):
        KernelNPLM(device="cuda").fit(*good)


def test_centers_with_wrong_dimension_are_refused(good):
    with pytest.raises(InputError, match=r"centers has 3 feature\(s\) but 2 were expected"):
        KernelNPLM(centers=np.zeros((5, 3))).fit(*good)


def test_unfitted_and_mismatched_prediction(good):
    with pytest.raises(NotFittedError, match="not fitted"):
        KernelNPLM().decision_function(good[0])
    fitted = KernelNPLM(n_centers=10).fit(*good)
    with pytest.raises(InputError, match=r"x has 3 feature\(s\) but 2 were expected"):
        fitted.decision_function(np.zeros((4, 3)))
    with pytest.raises(InputError, match="x contains 1 non-finite"):
        fitted.decision_function(_with_value(np.zeros((4, 2)), (2, 0), np.nan))


def test_negative_weights_are_refused_naming_the_backend_and_why(good):
    from nn_baseline import NNNPLM

    x_data, x_ref, _ = good
    weights = np.full(len(x_ref), 0.1)
    weights[[3, 8]] = -0.05  # NLO-style negative weights
    with pytest.raises(InputError, match=r"w_ref has 2 non-positive .* KernelNPLM refuses them: its loss is convex"):
        KernelNPLM(n_centers=10).fit(x_data, x_ref, weights)
    with pytest.raises(InputError, match=r"NNNPLM refuses them: the NPLM loss needs positive weights.*NLO"):
        NNNPLM(architecture=(2, 3, 1), epochs=1).fit(x_data, x_ref, weights)


def test_data_frames_are_matched_by_column_name(rng):
    """A data frame with its columns in another order gives the t of the ordered one; other names
    are refused; prediction matches columns by name too."""
    pandas = pytest.importorskip("pandas")
    x_ref = pandas.DataFrame({"pt": rng.exponential(size=3000), "eta": rng.normal(size=3000)})
    x_data = pandas.DataFrame({"pt": rng.exponential(size=300) * 1.3, "eta": rng.normal(size=300)})
    ordered = KernelNPLM(n_centers=30).fit(x_data, x_ref, 0.1)
    swapped = KernelNPLM(n_centers=30).fit(x_data[["eta", "pt"]], x_ref, 0.1)
    assert swapped.t_ == pytest.approx(ordered.t_, rel=1e-12) and swapped.feature_names_in_ == ["pt", "eta"]
    np.testing.assert_array_equal(swapped.decision_function(x_data[["eta", "pt"]]), ordered.decision_function(x_data))
    with pytest.raises(InputError, match=r"missing \['pt'\], unexpected \['pT'\]"):
        KernelNPLM(n_centers=30).fit(x_data.rename(columns={"pt": "pT"}), x_ref, 0.1)
    with pytest.raises(InputError, match=r"missing \['pt'\]"):
        ordered.decision_function(x_data.rename(columns={"pt": "pT"}))


def test_complex_inputs_are_refused(good):
    x_data, x_ref, w_ref = good
    with pytest.raises(InputError, match=r"x_data is complex"):
        KernelNPLM(n_centers=10).fit(x_data + 1j, x_ref, w_ref)


def test_weights_that_do_not_sum_to_the_data_yield_warn(good):
    from nplm_kernel import NormalizationWarning

    x_data, x_ref, _ = good
    with pytest.warns(NormalizationWarning, match=r"N\(R\) = 1000 but the data hold N_D = 50 .* left at 1"):
        validate_samples(x_data, x_ref, 2.0)


@pytest.mark.parametrize("backend", ["kernel", "nn"])
@pytest.mark.filterwarnings("ignore::nplm_kernel.core.exceptions.FitConsistencyWarning")  # 30 NN epochs: L > L[0]
def test_huge_input_values_standardise_without_overflow_or_say_so(rng, backend):
    """Inputs scaled by 1e200 standardise to the same points (same t); inputs whose spread
    overflows float64 are refused naming the overflow."""
    from nn_baseline import NNNPLM

    make = (lambda: KernelNPLM(n_centers=20)) if backend == "kernel" else (lambda: NNNPLM(epochs=30))
    x_ref, x_data = rng.exponential(size=(2000, 1)), rng.exponential(size=(200, 1)) * 1.2
    plain = make().fit(x_data, x_ref, 0.1)
    huge = make().fit(x_data * 1e200, x_ref * 1e200, 0.1)
    assert huge.t_ == pytest.approx(plain.t_, rel=1e-6)
    extreme = np.where(np.arange(2000) % 4 == 0, 1.5e308, -1.5e308)[:, None]  # x - mean overflows
    with pytest.raises(InputError, match="overflows float64"):
        make().fit(x_data, extreme, 0.1)
