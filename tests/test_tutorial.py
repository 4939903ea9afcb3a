"""The tutorial runs in its quick mode, so that it cannot rot."""

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_tutorial_quick_mode(tmp_path):
    path = Path(__file__).resolve().parents[1] / "examples" / "tutorial.py"
    spec = importlib.util.spec_from_file_location("tutorial", path)
    tutorial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tutorial)
    summary = tutorial.main(quick=True, out=tmp_path)
    assert summary["t_kernel"] > 0 and 0 <= summary["p_kernel"] <= 1
    assert summary["f_sign_agrees_in_signal_region"]
    for name in ("learned_f.png", "kernel_null.png", "kernel_model.npz", "kernel_null.jsonl", "nn_null.jsonl"):
        assert (tmp_path / name).stat().st_size > 0
