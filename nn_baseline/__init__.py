"""nn_baseline: the original weight-clipped NPLM neural network, for cross-checks (in progress)."""
