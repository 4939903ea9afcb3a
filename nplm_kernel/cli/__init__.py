"""The `nplm` command, one module per group of commands (thin: the work is done by the library).

Only the parser of the command being run is built: `nplm --version` and `nplm --help` import
neither torch nor the command modules, and `nplm COMMAND --help` imports what that command needs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Iterable, Sequence

from ..core.version import __version__

logger = logging.getLogger(__name__)

#: The commands by purpose: {purpose: {command: (module of cli/ that builds and runs it, one-line help)}}.
COMMAND_GROUPS = {
    "analysis": {
        "test": ("analysis", "run the NPLM test on a data file against a reference file (optionally calibrated)"),
        "run": ("analysis", "run (or resume) the whole study an analysis YAML file describes"),
        "demo": ("analysis", "run the kernel NPLM test on the built-in 1D benchmark"),
    },
    "null toys and calibration": {
        "toys": ("campaigns", "run or resume a null toy campaign into a JSON-Lines store"),
        "calibrate": ("campaigns", "chi2 fit, p-value and Z from a toy store, and a plot of the null"),
        "store": ("campaigns", "check a toy store, or repair a damaged one (bad lines go to a side file)"),
    },
    "model selection and comparison": {
        "scan": ("tuning", "choose sigma, M and lambda from null and probe toys of the reference"),
        "compare": ("tuning", "NPLM and baseline methods on the same data and null toys: one table"),
    },
}
COMMANDS = {name: entry for group in COMMAND_GROUPS.values() for name, entry in group.items()}


def _command_list() -> str:
    lines = ["commands (nplm COMMAND --help lists a command's options):"]
    for purpose, commands in COMMAND_GROUPS.items():
        lines.append(f"  {purpose}:")
        lines += [f"    {name:<11s}{text}" for name, (_, text) in commands.items()]
    return "\n".join(lines)


def build_parser(commands: Iterable[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The `nplm` parser: every command is listed, and the options of those in `commands` are built
    (their modules imported)."""
    parser = argparse.ArgumentParser(prog="nplm", description="New Physics Learning Machine tests with kernel methods.",
                                     epilog=_command_list(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log what happens (-v: info, -vv: debug)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (overrides -v)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                       help="one of the commands listed below")
    built = set(commands)
    for name, (module, text) in COMMANDS.items():
        command = subparsers.add_parser(name, description=text)
        if name in built:
            importlib.import_module(f"{__name__}.{module}").add_arguments(name, command)
    return parser


def _command_in(argv: Sequence[str]) -> list[str]:
    """The command named on a command line (the first argument that is one), as a list."""
    return next(([argument] for argument in argv if argument in COMMANDS), [])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `nplm`; errors of the package print as one line and exit with status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    arguments = build_parser(_command_in(argv)).parse_args(argv)
    from ..core.exceptions import NPLMError

    level = arguments.log_level or ("DEBUG" if arguments.verbose > 1 else "INFO" if arguments.verbose else "WARNING")
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        print(arguments.run(arguments))
    except (NPLMError, ValueError) as error:
        logger.debug("nplm %s failed", arguments.command, exc_info=True)
        print(f"nplm {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
