"""Weight-clip selection, the papers' model-selection step automated: for a given architecture
and sample sizes, run null toys at several clip values and keep the clip whose null t
distribution is closest (KS distance) to chi2 with dof = number of trainable parameters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nn_baseline import NNNPLM
from nn_baseline.network import parameter_count

from ..core.exceptions import ConfigurationError
from ..inference import NPLMTest
from ..inference.calibration import chi2_ks_test
from ..toys import DEFAULT_EXECUTOR, run_toys


@dataclass(frozen=True)
class ClipScanRow:
    """One clip value: its null t values, their median, and the KS distance / p-value to chi2(dof)."""

    weight_clip: float
    t_null: tuple[float, ...]
    median_t: float
    ks_statistic: float
    ks_p_value: float


@dataclass(frozen=True)
class WeightClipScan:
    """The scan table (one row per clip), the target dof and the chosen clip (smallest KS distance)."""

    rows: tuple[ClipScanRow, ...]
    dof: int
    best_clip: float

    def table(self) -> str:
        """Markdown table of the scan."""
        lines = [f"target: chi2 with dof = {self.dof} (trainable parameters)",
                 "| weight clip | toys | median t | KS distance | KS p-value |", "|---|---|---|---|---|"]
        for row in self.rows:
            mark = " (chosen)" if row.weight_clip == self.best_clip else ""
            lines.append(f"| {row.weight_clip:g}{mark} | {len(row.t_null)} | {row.median_t:.2f} | "
                         f"{row.ks_statistic:.3f} | {row.ks_p_value:.3g} |")
        return "\n".join(lines)


def tune_weight_clip(
    clips: Sequence[float],
    x_ref: np.ndarray,
    w_ref: float | np.ndarray,
    draw_null_data: Callable[[np.random.Generator], np.ndarray],
    n_toys: int = 20,
    seed: int = 0,
    executor: Any = DEFAULT_EXECUTOR,
    progress: bool = False,
    **network_settings,
) -> WeightClipScan:
    """Scan `clips`: for each, a campaign of NNNPLM(weight_clip=clip, **network_settings) on
    `n_toys` null toys (data from `draw_null_data(rng)`, the reference fixed; run_toys, so any
    executor), and compare the t values to chi2(n_parameters). The same toy seeds serve every clip,
    so the clips are compared on the same data."""
    if len(clips) == 0:
        raise ConfigurationError("clips must list at least one weight-clip value.")
    if n_toys < 2:
        raise ConfigurationError(f"n_toys must be at least 2, got {n_toys}.")
    dof = parameter_count(NNNPLM(**network_settings).layer_widths(np.asarray(x_ref).reshape(len(x_ref), -1).shape[1]))
    rows = []
    for clip in clips:
        test = NPLMTest(NNNPLM(weight_clip=float(clip), **network_settings))
        t_values = run_toys(test, draw_null_data, x_ref, w_ref, n_toys=n_toys, seed=seed, executor=executor,
                            progress=progress, max_failure_fraction=0.0).t
        statistic, p_value = chi2_ks_test(t_values, dof)
        rows.append(ClipScanRow(float(clip), tuple(t_values.tolist()), float(np.median(t_values)), statistic, p_value))
    best = min(rows, key=lambda row: row.ks_statistic)
    return WeightClipScan(rows=tuple(rows), dof=int(dof), best_clip=best.weight_clip)
