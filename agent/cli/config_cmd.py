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
    if isinstance(value, dict):
        # TOML has no null: an unset key of an inline table (an OPC UA endpoint's
        # cert_file) is left out, not written as the string "None".
        pairs = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(pairs) + " }"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else _toml_value(key)


def _table(header: str, values: dict[str, Any]) -> list[str]:
    lines = [header]
    for key, value in values.items():
        if value is None:
            lines.append(f"# {key} = (not set)")
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    lines.append("")
    return lines


def to_toml(data: dict[str, Any]) -> str:
    """Render the effective settings as TOML; unset optional keys become comments.

    Profiles come last, as ``[[profiles]]`` tables in match order; with none set, a
    comment says what every asset gets.
    """
    lines: list[str] = []
    for section, values in data.items():
        if section != "profiles":
            lines += _table(f"[{section}]", values)
    profiles = data.get("profiles") or []
    if not profiles:
        lines += [
            "# no [[profiles]]: every asset learns its sensor set and is started from the",
            "# model bundle when it has the bundle's sensors, from scratch otherwise",
            "",
        ]
    for profile in profiles:
        lines += _table("[[profiles]]", profile)
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
