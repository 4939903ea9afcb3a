from nplm_kernel import KernelNPLM
from nplm_kernel.app.plots import plot_learned_f, plot_null_distribution


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_null_distribution_plot(tmp_path, rng):
    path = tmp_path / "null.png"
    plot_null_distribution(rng.chisquare(5.0, size=300), path, t_observed=18.0, nominal_dof=5)
    assert _is_png(path)


def test_learned_f_plot(tmp_path, gaussian_samples):
    x_data, x_ref, w_ref = gaussian_samples
    estimator = KernelNPLM(n_centers=30).fit(x_data, x_ref, w_ref)
    path = tmp_path / "f.png"
    plot_learned_f(estimator, x_data, x_ref, w_ref, path, names=["a", "b"])
    assert _is_png(path)
