"""``edgewatch config show|check``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from agent.cli._common import console, emit_json, invocation
from agent.errors import ConfigError
from agent.settings import load_settings, reference_markdown

app = typer.Typer(help="Show or validate the configuration.", no_args_is_help=True)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def to_toml(data: dict[str, dict[str, Any]]) -> str:
    """Render the effective settings as TOML; unset optional keys become comments."""
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} = (not set)")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


@app.command("show")
def show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of TOML.")] = False,
) -> None:
    """Print the effective configuration (defaults < file < env < flags), secrets redacted."""
    settings = invocation(ctx).settings()
    data = settings.redacted()
    if as_json:
        emit_json(data)
    else:
        console.print(to_toml(data), highlight=False, markup=False, end="")


@app.command("check")
def check(
    ctx: typer.Context,
    path: Annotated[
        Path | None,
        typer.Argument(help="Config file to check (default: --config / EDGEWATCH_CONFIG)."),
    ] = None,
) -> None:
    """Validate a configuration; one line per problem and exit 1 if any."""
    inv = invocation(ctx)
    try:
        load_settings(path or inv.config_path, inv.overrides)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(1) from None
    where = path or inv.config_path
    console.print(f"configuration OK{f' ({where})' if where else ' (built-in defaults)'}")


@app.command("reference")
def reference() -> None:
    """Print the configuration reference (every key, default and meaning) as Markdown."""
    console.print(reference_markdown(), highlight=False, markup=False, soft_wrap=True)
