"""Root of the ``edgewatch`` command and the boundary that turns errors into one line."""

from __future__ import annotations

import functools
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from agent import __version__
from agent.cli import _common, run_cmd
from agent.cli._common import Invocation, error_line
from agent.errors import EdgewatchError
from agent.logs import configure_logging

#: Root options that take a value: skipped when looking for the command's name.
_VALUE_OPTIONS = ("--config", "-c", "--log-level")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgewatch {__version__}")
        raise typer.Exit(0)


def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="EDGEWATCH_CONFIG",
            help="TOML configuration file (default: none, built-in defaults).",
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR (overrides config)."),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks for errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """edgewatch: MQTT sensor streams in, anomaly and RUL predictions on the edge,
    records in SQLite, alerts out, summaries synced to the cloud."""
    ctx.obj = Invocation(config_path=config, log_level=log_level, debug=debug)
    configure_logging(level=log_level or "WARNING")


def _root_app() -> typer.Typer:
    app = typer.Typer(
        name="edgewatch",
        help="Predictive-maintenance agent for factory gateways.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(root)
    app.command("run")(run_cmd.run)
    return app


@functools.cache
def full_app() -> typer.Typer:
    """Every command. Their modules are imported here, not at the top: ``edgewatch run``
    needs none of them (simulators, benchmarks, reports...), and the agent would keep
    them in its RSS for good (about 5 MB, issue 22)."""
    from agent.cli import (
        baseline_cmd,
        bench_cmd,
        config_cmd,
        dashboard_cmd,
        db_cmd,
        demo_cmd,
        fleet_cmd,
        model_cmd,
        models_cmd,
        records_cmd,
        report_cmd,
        simulate_cmd,
        status_cmd,
        sync_cmd,
        update_cmd,
    )

    app = _root_app()
    app.command("demo")(demo_cmd.demo)
    app.command("status")(status_cmd.status)
    app.add_typer(baseline_cmd.app, name="baseline")
    app.add_typer(config_cmd.app, name="config")
    app.add_typer(db_cmd.app, name="db")
    app.add_typer(models_cmd.train_app, name="train")
    app.add_typer(models_cmd.evaluate_app, name="evaluate")
    app.add_typer(bench_cmd.app, name="bench")
    app.add_typer(simulate_cmd.app, name="simulate")
    app.add_typer(sync_cmd.app, name="sync")
    app.add_typer(records_cmd.app, name="records")
    app.command("dashboard")(dashboard_cmd.dashboard)
    app.command("report")(report_cmd.report)
    app.add_typer(model_cmd.app, name="model")
    # Once per process (full_app is cached): model_cmd.app is a module-level object.
    model_cmd.app.add_typer(update_cmd.keys_app, name="keys")
    model_cmd.app.command("publish")(update_cmd.publish)
    model_cmd.app.command("revoke")(update_cmd.revoke)
    model_cmd.app.command("fetch")(update_cmd.fetch)
    app.add_typer(fleet_cmd.app, name="fleet")
    return app


@functools.cache
def run_app() -> typer.Typer:
    """The root options and ``run`` alone: what the long-running agent parses."""
    return _root_app()


def command_name(args: list[str]) -> str | None:
    """The sub-command ``args`` name (the first word after the root options), if any."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def __getattr__(name: str) -> typer.Typer:
    # ``app`` is built on first use, with every command (tests, ``--help``).
    if name == "app":
        return full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every failure ends as one clear line and an exit code.

    Exit codes: 0 success, 1 runtime failure, 2 usage error, 130 interrupted.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        # Typer's standalone mode renders usage errors (exit 2) and --help itself and
        # ends with SystemExit; our own errors come out of it and are rendered below.
        cli = run_app() if command_name(args) == "run" else full_app()
        cli(args=args, prog_name="edgewatch")
    except KeyboardInterrupt:
        _common.err_console.print("interrupted")
        sys.exit(130)
    except EdgewatchError as exc:
        if debug:
            traceback.print_exc()
        _common.err_console.print(error_line("error:", str(exc)), highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Not a user mistake: keep the traceback available, but one line by default.
        if debug:
            traceback.print_exc()
        _common.err_console.print(
            error_line(
                "internal error:",
                f"{type(exc).__name__}: {exc} "
                "(run again with --debug for the traceback and report it)",
            ),
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    sys.exit(0)
