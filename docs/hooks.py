"""mkdocs hook: before each build, write the pages generated from the code into docs/generated/:
the analysis-config schema (from the pydantic models and the registered backends' settings), the
command-line reference (from the argparse parser) and the studies page (from studies/README.md)."""

from __future__ import annotations

import argparse
import inspect
import textwrap
import types
import typing
from pathlib import Path

DOCS = Path(__file__).parent
ROOT = DOCS.parent


_CONSTRAINTS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _bounds(extras) -> str:
    """'> 0, < 1' from pydantic's constraints (Field(gt=0) in Annotated, or a field's metadata)."""
    constraints = [item for extra in extras for item in getattr(extra, "metadata", [extra])]
    return ", ".join(f"{symbol} {getattr(constraint, name)}" for constraint in constraints
                     for name, symbol in _CONSTRAINTS.items() if getattr(constraint, name, None) is not None)


def _type(annotation) -> str:
    """A type annotation as a reader of a YAML file says it: 'float > 0 or null', 'list of str'."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return " ".join([_type(arguments[0]), _bounds(arguments[1:])]).strip()
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(argument) for argument in arguments)
    if origin is typing.Literal:
        return " or ".join(repr(argument) for argument in arguments)
    if origin in (list, tuple) and arguments:
        items = [_type(argument) for argument in arguments if argument is not Ellipsis]
        return f"list of {items[0]}" if origin is list or Ellipsis in arguments else f"[{', '.join(items)}]"
    if origin is dict:
        return f"map of {_type(arguments[0])} to {_type(arguments[1])}"
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return "mapping (its keys below)"
    names = {type(None): "null", Path: "path", str: "str", int: "int", float: "float", bool: "bool"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default
    return "null" if value is None else str(value) if isinstance(value, Path) else repr(value)


def _model_table(model) -> list[str]:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        kind = " ".join([_type(field.annotation), _bounds(field.metadata)]).strip()
        lines.append(f"| `{name}` | {kind} | `{_default(field)}` | {meaning} |")
    return lines


def config_page() -> str:
    from nplm_kernel.app import config
    from nplm_kernel.contract import backend_entry, backend_names

    lines = ["# Analysis config (YAML)", "",
             "`nplm run analysis.yaml` runs the whole study one file describes. Unknown keys are errors, reported "
             "with their line; relative paths are relative to the config file. This page is generated from the "
             "code (the pydantic models and the registered backends' constructor signatures).", "",
             "```yaml", textwrap.dedent(typing.cast(str, config.__doc__).split("\n\n", 2)[-1]).strip("\n"), "```", ""]
    sections = [("inputs", config.Inputs), ("inputs.data", config.DataInput), ("inputs.reference", config.ReferenceInput),
                ("toys", config.Toys), ("nuisances[]", config.NuisanceEntry), ("test", config.TestSettings),
                ("outputs", config.Outputs)]
    for title, model in sections:
        doc = inspect.cleandoc(model.__doc__) if model.__doc__ and "Usage docs" not in model.__doc__ else ""
        lines += [f"## `{title}`", "", *([doc, ""] if doc else []), *_model_table(model), ""]
    for name in backend_names():
        entry = backend_entry(name)
        lines += [f"## `backend` with `kind: {name}` ({entry.estimator.__name__})", "",
                  "| key | type | default | meaning |", "|---|---|---|---|"]
        for setting in entry.settings():
            where = "" if setting.configurable else " (Python only)"
            default = "null" if setting.default is None else repr(setting.default)
            meaning = setting.help.replace("|", "\\|")
            lines.append(f"| `{setting.name}` | {_type(setting.annotation)} | `{default}` | {meaning}{where} |")
        lines.append("")
    return "\n".join(lines)


def _help(parser: argparse.ArgumentParser, groups: list, whole: bool = True) -> str:
    """The parser's help with only these argument groups (and only their options in the usage);
    whole=False: the groups alone."""
    formatter = parser._get_formatter()
    shown = [action for group in groups for action in group._group_actions]
    if whole:
        formatter.add_usage(parser.usage, [action for action in parser._actions if action in shown],
                            parser._mutually_exclusive_groups)
        formatter.add_text(parser.description)
    for group in groups:
        formatter.start_section(group.title)
        formatter.add_text(group.description)
        formatter.add_arguments(group._group_actions)
        formatter.end_section()
    if whole:
        formatter.add_text(parser.epilog)
    return formatter.format_help()


def cli_page() -> str:
    """The commands by purpose, each with its help; the backend settings, shared by the commands that
    fit a backend, once at the end."""
    from nplm_kernel.cli import COMMAND_GROUPS, build_parser
    from nplm_kernel.cli.options import BACKEND_SETTINGS_TITLE

    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    lines = ["# Command line", "", "Generated from the `nplm` argument parser. `nplm COMMAND --help` prints the same "
             "text for one command.", "", "```text", parser.format_help(), "```", ""]
    shared, users = None, []
    for purpose, names in COMMAND_GROUPS.items():
        lines += [f"## {purpose[0].upper()}{purpose[1:]}", ""]
        for name in names:
            subparser = commands.choices[name]
            backend = [group for group in subparser._action_groups if group.title == BACKEND_SETTINGS_TITLE]
            own = [group for group in subparser._action_groups if group not in backend]
            lines += [f"### `nplm {name}`", "", "```text", _help(subparser, own), "```", ""]
            if backend:
                shared = shared or _help(subparser, backend, whole=False)
                users.append(name)
                lines += ["and the [backend settings](#backend-settings) below.", ""]
    if shared:
        lines += ["## Backend settings", "", f"`nplm {'`, `nplm '.join(users)}` take one option per setting of the "
                  "registered backends (the analysis config's `backend` section holds the same settings); a command "
                  "refuses the settings of a backend it does not fit.", "", "```text", shared, "```", ""]
    return "\n".join(lines)


def studies_page() -> str:
    text = (ROOT / "studies" / "README.md").read_text()
    return text.replace("# Studies", "# Studies\n\nThe studies live in `studies/` of the repository; each is one "
                        "command with a quick and a full mode.", 1)


def on_pre_build(config) -> None:
    generated = DOCS / "generated"
    generated.mkdir(exist_ok=True)
    for name, page in (("config.md", config_page()), ("cli.md", cli_page()), ("studies.md", studies_page())):
        target = generated / name
        if not target.exists() or target.read_text() != page:
            target.write_text(page)
