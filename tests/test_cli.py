import re
import subprocess
import sys

import numpy as np
import pytest

from nplm_kernel.cli import main
from nplm_kernel.store import read_store


def test_demo_prints_t_p_and_z(capsys):
    assert main(["demo", "--toys", "4", "--n-reference", "12000", "--n-centers", "40", "--no-progress"]) == 0
    out = capsys.readouterr().out
    # the default test: the full model at one width and the excess scan, min-p
    assert len(re.findall(r"width [\d.]+: t = [\d.]+", out)) == 1 and re.search(r"scan: +t = -?[\d.]+ +\(largest", out)
    p_value = float(re.search(r"p-value:\s+([\d.e-]+)", out).group(1))
    z = float(re.search(r"Z:\s+(-?[\d.]+|inf)", out).group(1))
    assert 0.0 <= p_value <= 1.0
    assert "min-p" in out and "wall time" in out
    from scipy import stats

    assert abs(z - stats.norm.isf(p_value)) < 6e-3  # both printed as str(Significance) rounds them


def _write_samples(tmp_path, rng):
    import pyarrow as pa
    import pyarrow.parquet as pq

    reference = rng.exponential(1.0, size=20_000)
    data = np.concatenate([rng.exponential(1.0, size=rng.poisson(100)), rng.normal(1.6, 0.1, size=60)])
    for name, values in [("reference", reference), ("data", data)]:
        pq.write_table(pa.table({"x": values, "w": np.full(len(values), 100 / len(reference))}),
                       tmp_path / f"{name}.parquet")


def test_test_toys_calibrate_round_trip(tmp_path, rng, capsys):
    _write_samples(tmp_path, rng)
    common = ["--reference", str(tmp_path / "reference.parquet"), "--columns", "x", "--expected-yield", "100",
              "--pool-fraction", "0.5", "--n-centers", "40", "--seed", "3"]
    store = tmp_path / "null.jsonl"
    assert main(["toys", *common, "--store", str(store), "--n-toys", "6", "--executor", "serial", "--no-progress"]) == 0
    assert re.search(r"6 toys in .*median t = [\d.]+, -?[\d.]+\n", capsys.readouterr().out)  # one per member
    assert main(["toys", *common, "--store", str(store), "--n-toys", "8", "--executor", "serial", "--no-progress"]) == 0
    assert len(read_store(store).rows) == 8  # resumed: only 2 more toys
    capsys.readouterr()

    plot = tmp_path / "f.png"
    assert main(["test", "--data", str(tmp_path / "data.parquet"), *common, "--null", str(store),
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    # the default: the full model and the excess scan, which finds the injected bump at 1.6
    t = [float(value) for value in re.search(r"t:\s+([\d.]+), (-?[\d.]+)  \(width [\d.]+, excess scan", out).groups()]
    excess = float(re.search(r"largest local excess is at x = \(([\d.]+)\)", out).group(1))
    assert min(t) > 30 and abs(excess - 1.6) < 0.1 and "fitted chi2 tail" in out and "min-p" in out and plot.exists()

    null_plot = tmp_path / "null.png"
    assert main(["calibrate", "--store", str(store), "--t-observed", str(t[0]), "--dof", "4"]) == 2
    assert "the store holds 2 t per toy (one per member), got 1" in capsys.readouterr().err
    assert main(["calibrate", "--store", str(store), "--t-observed", f"{t[0]},{t[1]}", "--dof", "4",
                 "--plot", str(null_plot)]) == 0
    out = capsys.readouterr().out
    assert out.count("chi2 fit:  dof =") == 1 and "not a chi2 null)  (member 2 of 2)" in out and "8 toys" in out and null_plot.exists()


def test_cli_errors_are_one_clear_line(tmp_path, rng, capsys):
    _write_samples(tmp_path, rng)
    reference = str(tmp_path / "reference.parquet")
    assert main(["test", "--data", str(tmp_path / "data.parquet"), "--reference", reference,
                 "--columns", "mass", "--expected-yield", "100"]) == 2
    assert "no column 'mass'; available: x, w" in capsys.readouterr().err
    assert main(["test", "--data", str(tmp_path / "data.parquet"), "--reference", reference, "--columns", "x"]) == 2
    assert "give exactly one reference normalisation, --expected-yield N(R)" in capsys.readouterr().err
    assert main(["toys", "--reference", reference, "--columns", "x", "--expected-yield", "100",
                 "--store", str(tmp_path / "s.jsonl"), "--n-toys", "2"]) == 2
    assert "--pool FILE or --pool-fraction" in capsys.readouterr().err


@pytest.mark.slow
def test_scan_command_writes_table_and_plot(tmp_path, rng, capsys):
    _write_samples(tmp_path, rng)
    assert main(["scan", "--reference", str(tmp_path / "reference.parquet"), "--columns", "x", "--expected-yield",
                 "100", "--pool-fraction", "0.5", "--sigma-quantiles", "0.9", "--n-centers-grid", "10,30",
                 "--penalties", "1e-5", "--n-toys", "3", "--out", str(tmp_path / "scan"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("| 0.9 |") == 2 and "Recommendation:" in out
    assert (tmp_path / "scan" / "scan.png").stat().st_size > 5000


def test_version_logging_and_precise_normalisation_errors(tmp_path, rng, capsys):
    import pytest

    from nplm_kernel import __version__

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"nplm {__version__}"
    _write_samples(tmp_path, rng)
    reference = str(tmp_path / "reference.parquet")
    assert main(["test", "--data", str(tmp_path / "data.parquet"), "--reference", reference, "--columns", "x",
                 "--expected-yield", "100", "--weight-column", "w"]) == 2
    assert "both --expected-yield and --weight-column were given" in capsys.readouterr().err
    assert main(["calibrate", "--store", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: toy store not found" in capsys.readouterr().err


def test_compare_prints_one_table_for_every_method_on_the_same_toys(tmp_path, rng, capsys):
    _write_samples(tmp_path, rng)
    out = tmp_path / "compare"
    arguments = ["compare", "--data", str(tmp_path / "data.parquet"), "--reference", str(tmp_path / "reference.parquet"),
                 "--columns", "x", "--expected-yield", "100", "--pool-fraction", "0.5", "--methods", "kernel,binned",
                 "--set", "binned.bins=10", "--n-centers", "40", "--n-toys", "5", "--executor", "serial",
                 "--out", str(out), "--no-progress"]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "| kernel |" in printed and "| binned |" in printed and (out / "compare.md").read_text() in printed + "\n"
    binned = read_store(out / "binned.jsonl")
    assert len(binned.rows) == 5 and binned.identity["test"]["baseline"]["hyperparameters"]["bins"] == 10
    assert read_store(out / "kernel.jsonl").identity["test"]["backend"]["hyperparameters"]["n_centers"] == 40
    assert main([*arguments, "--set", "binned=10"]) == 2
    assert "--set takes METHOD.SETTING=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --methods chooses the backends: a --backend would be ignored, so none exists
        main([*arguments, "--backend", "nn"])
    assert "unrecognized arguments: --backend nn" in capsys.readouterr().err


def test_scan_takes_the_kernel_settings_given_and_refuses_those_its_grid_sets(tmp_path, rng, capsys):
    _write_samples(tmp_path, rng)
    command = ["scan", "--reference", str(tmp_path / "reference.parquet"), "--columns", "x", "--expected-yield", "100",
               "--pool-fraction", "0.5", "--sigma-quantiles", "0.9", "--n-centers-grid", "10", "--penalties", "1e-5",
               "--n-toys", "2", "--n-probe-toys", "1", "--out", str(tmp_path / "scan"), "--no-progress"]
    assert main([*command, "--sigma", "0.5", "--penalty", "1e-3"]) == 2
    assert "--sigma, --penalty: the scan sets sigma, M and lambda from its grids" in capsys.readouterr().err
    assert main([*command, "--epochs", "3"]) == 2
    assert "not of 'kernel'" in capsys.readouterr().err
    assert main([*command, "--device", "cuda:99"]) == 2  # reaches the kernel: no such device here
    assert "cuda:99" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*command, "--backend", "nn"])


@pytest.mark.parametrize("argument", ["--version", "--help"])
def test_version_and_help_import_no_command_and_no_torch(argument):
    code = ("import sys\nfrom nplm_kernel.cli import main\ntry:\n    main([%r])\nexcept SystemExit:\n    pass\n"
            "print(sorted(name for name in sys.modules if name.split('.')[0] in ('torch', 'numpy', 'sklearn') or "
            "name.startswith('nplm_kernel.cli.')))")
    printed = subprocess.run([sys.executable, "-c", code % argument], capture_output=True, text=True, check=True).stdout
    assert printed.splitlines()[-1] == "[]"
    if argument == "--help":
        from nplm_kernel.cli import COMMANDS

        assert all(re.search(rf"^    {name} +\w", printed, re.M) for name in COMMANDS)  # every command, with its help


def test_a_commands_help_shows_its_own_options_only(capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    printed = capsys.readouterr().out
    assert "--t-observed" in printed and "--experiment-label" in printed and "--n-centers" not in printed
    with pytest.raises(SystemExit):
        main(["toys", "--help"])
    printed = capsys.readouterr().out
    assert re.search(r"--n-toys N_TOYS\s+toys the store should hold", printed) and "--t-observed" not in printed


def test_every_option_of_every_command_has_help_text():
    import argparse

    from nplm_kernel.cli import build_parser

    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    silent = [(name, action.dest) for name, command in commands.choices.items() for action in command._actions
              if not action.help]
    assert not silent
