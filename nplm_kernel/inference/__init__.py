"""The shared statistics layer: the test (t, tau - Delta, multi-scale), nuisance parameters,
calibration, toy campaigns and their stores, and model selection. It talks to backends only
through the contract of nplm_kernel.backends."""
