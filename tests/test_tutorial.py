"""The tutorial notebook (jupytext text form) runs at quick size, both as a notebook (converted with
jupytext, executed by a Jupyter kernel) and as a pasted script, so that it cannot rot. The script
runs in the notebook's folder: its toy campaigns resume the notebook's stores (no toy is fitted
twice, which halves the NN's share of the suite) and must give the notebook's p-values."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "examples" / "tutorial.py"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("tutorial")


def _check_outputs(folder: Path) -> None:
    for name in ("learned_f.png", "kernel_null.png", "kernel_model.npz", "kernel_null.jsonl", "nn_null.jsonl"):
        assert (folder / name).stat().st_size > 0


def _p_value_lines(printed: str) -> list[str]:
    return [line for line in printed.splitlines() if line.startswith(("kernel: t = ", "NN:     t = "))]


@pytest.mark.slow
def test_tutorial_runs_as_a_notebook(folder, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("NPLM_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("NPLM_TUTORIAL_OUT", str(folder))
    notebook = jupytext.read(TUTORIAL)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}}).execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.get("outputs", []) if output.get("name") == "stdout")
    assert "f_sign_agrees_in_signal_region   True" in printed and len(_p_value_lines(printed)) == 2
    (folder / "notebook_p_values.txt").write_text("\n".join(_p_value_lines(printed)))
    _check_outputs(folder)


@pytest.mark.slow
def test_tutorial_runs_as_a_script(folder):
    result = subprocess.run([sys.executable, str(TUTORIAL), "--quick"], cwd=folder, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "NPLM_TUTORIAL_OUT": str(folder)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "t_kernel" in result.stdout and len(_p_value_lines(result.stdout)) == 2
    _check_outputs(folder)
    notebook = folder / "notebook_p_values.txt"
    if notebook.exists():  # resumed the notebook's campaigns: the same observed t and null, the same p-values
        assert _p_value_lines(result.stdout) == notebook.read_text().splitlines()
