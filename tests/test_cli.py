import re

from nplm_kernel.cli import main


def test_demo_prints_t_p_and_z(capsys):
    assert main(["demo", "--toys", "4", "--n-reference", "12000", "--n-centers", "40", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"N_D = \d+, t = [\d.]+", out)
    p_value = float(re.search(r"p-value:\s+([\d.e-]+)", out).group(1))
    z = float(re.search(r"Z:\s+(-?[\d.]+|inf)", out).group(1))
    assert 0.0 <= p_value <= 1.0
    assert "chi2 fit: dof" in out and "wall time" in out
    from scipy import stats

    assert abs(z - stats.norm.isf(p_value)) < 1e-3
