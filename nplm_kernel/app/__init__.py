"""The application layer: analysis configs and nplm run, file inputs, plots, saved models and the
nplm command line."""
