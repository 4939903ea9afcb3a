"""Model selection from reference data only: the kernel's sigma, M and lambda from null and probe
toys (hyperparameters.py), and the NN's weight clip from the chi2 compatibility of its null
(weight_clip.py)."""

from .hyperparameters import (
    DEFAULT_N_CENTERS_GRID,
    DEFAULT_PENALTIES_GRID,
    DEFAULT_SIGMA_QUANTILES_GRID,
    ScanResult,
    ScanRow,
    scan_hyperparameters,
)
from .weight_clip import ClipScanRow, WeightClipScan, tune_weight_clip

__all__ = ["DEFAULT_SIGMA_QUANTILES_GRID", "DEFAULT_N_CENTERS_GRID", "DEFAULT_PENALTIES_GRID", "ScanResult", "ScanRow",
           "scan_hyperparameters", "ClipScanRow", "WeightClipScan", "tune_weight_clip"]
