"""The statistics: the NPLM test that wraps any backend (t, or t = tau - Delta with nuisance
parameters, or one t per member: kernel widths and the excess scan), and the calibration of t
against null toys (p-value, Z).
It talks to backends only through the contract (nplm_kernel.contract)."""

from .calibration import Significance, combine_settings, significance
from .hypothesis import (
    DEFAULT_SCAN_WEIGHT,
    DEFAULT_WIDTH_QUANTILES,
    MultiScaleResult,
    NPLMResult,
    NPLMTest,
    multi_scale_widths,
    stored_member_weights,
)

__all__ = ["Significance", "combine_settings", "significance", "DEFAULT_SCAN_WEIGHT", "DEFAULT_WIDTH_QUANTILES",
           "MultiScaleResult", "NPLMResult", "NPLMTest", "multi_scale_widths", "stored_member_weights"]
