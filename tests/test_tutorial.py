"""The tutorial notebook (jupytext text form) runs at quick size, both as a notebook (converted with
jupytext, executed by a Jupyter kernel) and as a pasted script, so that it cannot rot."""

import subprocess
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "examples" / "tutorial.py"


def _check_outputs(folder: Path) -> None:
    for name in ("learned_f.png", "kernel_null.png", "kernel_model.npz", "kernel_null.jsonl", "nn_null.jsonl"):
        assert (folder / name).stat().st_size > 0


@pytest.mark.slow
def test_tutorial_runs_as_a_notebook(tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("NPLM_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("NPLM_TUTORIAL_OUT", str(tmp_path))
    notebook = jupytext.read(TUTORIAL)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.get("outputs", []))
    assert "f_sign_agrees_in_signal_region   True" in printed and "p = " in printed
    _check_outputs(tmp_path)


@pytest.mark.slow
def test_tutorial_runs_as_a_script(tmp_path):
    result = subprocess.run([sys.executable, str(TUTORIAL), "--quick"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env={**__import__("os").environ, "NPLM_TUTORIAL_OUT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "t_kernel" in result.stdout
    _check_outputs(tmp_path)
