"""The package version, read once from the installed distribution's metadata (pyproject.toml is
the one place it is written)."""

from importlib import metadata

try:
    __version__ = metadata.version("nplm-kernel")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

#: The major version, part of a toy campaign's identity.
MAJOR = int(__version__.split(".")[0]) if __version__[0].isdigit() else 0
