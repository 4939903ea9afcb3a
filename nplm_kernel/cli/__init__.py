"""The `nplm` command, one module per group of commands (thin: the work is done by the library).

nplm test       the NPLM test on a data file against a reference file (optionally calibrated)
nplm run        the whole study an analysis YAML file describes (resumable)
nplm demo       the kernel test on the built-in 1D benchmark
nplm toys       run or resume a null toy campaign into a JSON-Lines store
nplm calibrate  turn a campaign store into a chi2 fit, p-value and Z, and a plot
nplm store      check a toy store, or repair a damaged one (bad lines go to a side file)
nplm scan       choose sigma, M and lambda from null toys of the reference (table, plot, choice)
nplm compare    NPLM and baseline methods on the same data and null toys: one table
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..core.exceptions import NPLMError
from ..core.version import __version__
from . import analysis, campaigns, tuning

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nplm", description="New Physics Learning Machine tests with kernel methods.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log what happens (-v: info, -vv: debug)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (overrides -v)")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (analysis, campaigns, tuning):
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `nplm`; errors of the package print as one line and exit with status 2."""
    arguments = build_parser().parse_args(argv)
    level = arguments.log_level or ("DEBUG" if arguments.verbose > 1 else "INFO" if arguments.verbose else "WARNING")
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        print(arguments.run(arguments))
    except (NPLMError, ValueError) as error:
        logger.debug("nplm %s failed", arguments.command, exc_info=True)
        print(f"nplm {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
