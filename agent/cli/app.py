"""Root of the ``edgewatch`` command and the boundary that turns errors into one line."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from agent import __version__
from agent.cli import (
    baseline_cmd,
    bench_cmd,
    config_cmd,
    db_cmd,
    demo_cmd,
    run_cmd,
    simulate_cmd,
    status_cmd,
)
from agent.cli._common import Invocation, err_console, error_line
from agent.errors import EdgewatchError
from agent.logs import configure_logging

app = typer.Typer(
    name="edgewatch",
    help="Predictive-maintenance agent for factory gateways.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgewatch {__version__}")
        raise typer.Exit(0)


@app.callback()
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


app.command("run")(run_cmd.run)
app.command("demo")(demo_cmd.demo)
app.command("status")(status_cmd.status)
app.add_typer(baseline_cmd.app, name="baseline")
app.add_typer(config_cmd.app, name="config")
app.add_typer(db_cmd.app, name="db")
# sub-apps registered below
from agent.cli import models_cmd  # noqa: E402 - kept next to its registration lines

app.add_typer(models_cmd.train_app, name="train")
app.add_typer(models_cmd.evaluate_app, name="evaluate")
app.add_typer(bench_cmd.app, name="bench")
app.add_typer(simulate_cmd.app, name="simulate")
from agent.cli import sync_cmd  # noqa: E402 - kept next to its registration line

app.add_typer(sync_cmd.app, name="sync")
from agent.cli import records_cmd  # noqa: E402 - kept next to its registration line

app.add_typer(records_cmd.app, name="records")
from agent.cli import dashboard_cmd  # noqa: E402 - kept next to its registration line

app.command("dashboard")(dashboard_cmd.dashboard)
from agent.cli import report_cmd  # noqa: E402 - kept next to its registration line

app.command("report")(report_cmd.report)
from agent.cli import model_cmd  # noqa: E402 - kept next to its registration line

app.add_typer(model_cmd.app, name="model")
from agent.cli import update_cmd  # noqa: E402 - kept next to its registration lines

model_cmd.app.add_typer(update_cmd.keys_app, name="keys")
model_cmd.app.command("publish")(update_cmd.publish)
model_cmd.app.command("revoke")(update_cmd.revoke)
model_cmd.app.command("fetch")(update_cmd.fetch)
from agent.cli import fleet_cmd  # noqa: E402 - kept next to its registration line

app.add_typer(fleet_cmd.app, name="fleet")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every failure ends as one clear line and an exit code.

    Exit codes: 0 success, 1 runtime failure, 2 usage error, 130 interrupted.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        # Typer's standalone mode renders usage errors (exit 2) and --help itself and
        # ends with SystemExit; our own errors come out of it and are rendered below.
        app(args=args, prog_name="edgewatch")
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except EdgewatchError as exc:
        if debug:
            traceback.print_exc()
        err_console.print(error_line("error:", str(exc)), highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Not a user mistake: keep the traceback available, but one line by default.
        if debug:
            traceback.print_exc()
        err_console.print(
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
