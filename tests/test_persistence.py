"""Fitted models save to one file and load back to the same f(x), to the last bit."""

import numpy as np
import pytest

from nn_baseline import NNNPLM
from nplm_kernel import ConfigurationError, FitConsistencyWarning, InputError, KernelNPLM, NotFittedError
from nplm_kernel.io import load_model, save_model


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


def _rewrite(source, target, edit):
    """Copy a saved model with its metadata (and arrays) changed by edit(metadata, arrays)."""
    import json

    with np.load(source, allow_pickle=False) as archive:
        metadata = json.loads(str(archive["metadata"]))
        arrays = {name: archive[name] for name in archive.files if name != "metadata"}
    edit(metadata, arrays)
    with open(target, "wb") as handle:
        np.savez(handle, metadata=np.array(json.dumps(metadata)), **arrays)
    return target


def test_models_saved_under_former_module_paths_still_load(tmp_path, gaussian_samples):
    saved = tmp_path / "kernel.npz"
    fitted = KernelNPLM(n_centers=20).fit(*gaussian_samples)
    save_model(fitted, saved)

    def former_path(metadata, arrays):
        assert metadata["class"] == "nplm_kernel.KernelNPLM"
        metadata["class"] = "nplm_kernel.estimator.KernelNPLM"

    loaded = load_model(_rewrite(saved, tmp_path / "former.npz", former_path))
    grid = np.linspace(-2, 2, 50)[:, None].repeat(2, axis=1)
    np.testing.assert_array_equal(loaded.decision_function(grid), fitted.decision_function(grid))


def test_damaged_or_hostile_model_files_are_refused_naming_file_and_problem(tmp_path, gaussian_samples):
    good = tmp_path / "good.npz"
    save_model(KernelNPLM(n_centers=20).fit(*gaussian_samples), good)
    data = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    for name in ("truncated.npz", "empty.npz"):
        with pytest.raises(InputError, match=rf"{name}: not an nplm-kernel model file, or a damaged one"):
            load_model(tmp_path / name)

    def drop_alpha(metadata, arrays):
        del arrays["state:alpha_"]

    def extra_state(metadata, arrays):
        metadata["state"]["__class__"] = "os.system"

    def wrong_shape(metadata, arrays):
        arrays["state:alpha_"] = arrays["state:alpha_"][:-1]

    def unknown_parameter(metadata, arrays):
        metadata["parameters"]["evil"] = 1

    def foreign_class(metadata, arrays):
        metadata["class"] = "subprocess.Popen"

    def extra_metadata(metadata, arrays):
        metadata["exec"] = "print(1)"

    expected = {
        drop_alpha: r"missing attribute\(s\) \['alpha_'\]",
        extra_state: r"unexpected attribute\(s\) \['__class__'\]",
        wrong_shape: r"alpha_ has shape \(19,\), but axis 0 must have size 20",
        unknown_parameter: r"unknown hyperparameter\(s\) \['evil'\] for KernelNPLM",
        foreign_class: r"class 'subprocess.Popen' is not one that nplm-kernel loads",
        extra_metadata: r"metadata keys",
    }
    for edit, message in expected.items():
        path = _rewrite(good, tmp_path / f"{edit.__name__}.npz", edit)
        with pytest.raises(InputError, match=rf"{edit.__name__}.npz: .*{message}"):
            load_model(path)


def test_a_damaged_nn_file_is_refused(tmp_path, gaussian_samples):
    good = tmp_path / "nn.npz"
    with pytest.warns(FitConsistencyWarning, match="raises the NPLM loss"):  # 5 epochs do not minimise L
        save_model(NNNPLM(architecture=(2, 3, 1), epochs=5).fit(*gaussian_samples), good)

    def bigger_layer(metadata, arrays):
        arrays["state:network.layers.0.weight"] = np.zeros((4, 2), dtype=np.float32)

    path = _rewrite(good, tmp_path / "bigger.npz", bigger_layer)
    with pytest.raises(InputError, match=r"bigger.npz: damaged model file: fitted attribute network.layers.0.weight "
                                         r"has shape \(4, 2\)"):
        load_model(path)


def test_a_model_saved_for_another_device_loads_where_it_is_told(tmp_path, gaussian_samples):
    """A model whose device is unavailable here (a GPU model on a CPU machine) is refused with the
    cause, and loads with device='cpu' to the same f."""
    import torch

    fitted = KernelNPLM(n_centers=20).fit(*gaussian_samples)
    fitted.set_params(device="cuda:0")
    save_model(fitted, tmp_path / "gpu.npz")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigurationError, match=r"gpu.npz: saved to compute on 'cuda:0': .* device='cpu'"):
            load_model(tmp_path / "gpu.npz")
    moved = load_model(tmp_path / "gpu.npz", device="cpu")
    assert moved.device == "cpu"
    np.testing.assert_array_equal(moved.decision_function(gaussian_samples[0]), fitted.set_params(device="cpu")
                                  .decision_function(gaussian_samples[0]))
