"""Fitted models save to one file and load back to the same f(x), to the last bit."""

import numpy as np
import pytest

from nn_baseline import NNNPLM
from nplm_kernel import InputError, KernelNPLM, NotFittedError
from nplm_kernel.persistence import load_model, save_model


@pytest.mark.parametrize(
    "make",
    [
        lambda: KernelNPLM(n_centers=40, penalty=1e-5, seed=2),
        lambda: KernelNPLM(centers=np.linspace(-2, 2, 9)[:, None].repeat(2, axis=1), sigma=0.8),
        lambda: NNNPLM(architecture=(2, 5, 1), weight_clip=2.0, epochs=50, learning_rate=0.01),
    ],
)
def test_round_trip_reproduces_f_exactly(tmp_path, gaussian_samples, rng, make):
    x_data, x_ref, w_ref = gaussian_samples
    fitted = make().fit(x_data, x_ref, w_ref)
    path = tmp_path / "model.npz"
    save_model(fitted, path)
    loaded = load_model(path)
    assert type(loaded) is type(fitted)
    assert loaded.get_params().keys() == fitted.get_params().keys()
    grid = rng.normal(size=(500, 2))
    np.testing.assert_array_equal(loaded.decision_function(grid), fitted.decision_function(grid))
    assert loaded.t_ == fitted.t_ and loaded.loss_ == fitted.loss_
    assert loaded.saved_with_version_ == __import__("nplm_kernel").__version__
    refitted = loaded.fit(x_data, x_ref, w_ref)  # the hyperparameters survived: the same fit again
    assert refitted.t_ == pytest.approx(fitted.t_, rel=1e-12)


def test_kernel_diagnostics_survive(tmp_path, gaussian_samples):
    fitted = KernelNPLM(n_centers=30).fit(*gaussian_samples)
    save_model(fitted, tmp_path / "kernel.npz")
    assert load_model(tmp_path / "kernel.npz").diagnostics_ == fitted.diagnostics_


def test_bad_model_files_and_unfitted_models(tmp_path):
    with pytest.raises(NotFittedError, match="KernelNPLM is not fitted"):
        save_model(KernelNPLM(), tmp_path / "x.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(InputError, match="not an nplm-kernel model file"):
        load_model(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(InputError, match="not an nplm-kernel model file"):
        load_model(tmp_path / "junk.npz")
    with pytest.raises(InputError, match="file not found"):
        load_model(tmp_path / "missing.npz")
