"""Foundations: the error hierarchy, input validation, the NPLM loss and its statistics, what a
campaign is a null of (identity), devices and dtypes, a small exact optimiser and the version. Every
other layer stands on these; they import nothing else of the package."""
