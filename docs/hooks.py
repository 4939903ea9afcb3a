"""mkdocs hook: before each build, write the pages generated from the code into docs/generated/:
the analysis-config schema (from the pydantic models and the registered backends' settings), the
command-line reference (from the argparse parser) and the studies page (from studies/README.md)."""

from __future__ import annotations

import inspect
import textwrap
import typing
from pathlib import Path

DOCS = Path(__file__).parent
ROOT = DOCS.parent


def _type(annotation) -> str:
    text = str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace("pathlib.Path", "path").replace("NoneType", "null").replace(" | ", " or ").replace(
        "nplm_kernel.app.config.", "")


def _model_table(model) -> list[str]:
    lines = ["| key | type | default |", "|---|---|---|"]
    for name, field in model.model_fields.items():
        default = "required" if field.is_required() else repr(field.default)
        lines.append(f"| `{name}` | `{_type(field.annotation)}` | `{default.replace('|', 'or')}` |")
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
            lines.append(f"| `{setting.name}` | `{_type(setting.annotation)}` | `{setting.default!r}` | "
                         f"{setting.help.replace('|', '/')}{where} |")
        lines.append("")
    return "\n".join(lines)


def cli_page() -> str:
    import argparse

    from nplm_kernel.cli import build_parser

    parser = build_parser()
    lines = ["# Command line", "", "Generated from the `nplm` argument parser.", "", "```text", parser.format_help(),
             "```", ""]
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    for name, subparser in commands.choices.items():
        lines += [f"## `nplm {name}`", "", "```text", subparser.format_help(), "```", ""]
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
