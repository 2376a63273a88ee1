"""What every command shares: consoles, the invocation context, JSON output."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson
import typer
from sqlalchemy import Engine

from agent.errors import EdgewatchError
from agent.logs import printable
from agent.settings import Settings, load_settings
from agent.storage import migrate

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


def __getattr__(name: str) -> Console:
    # ``console`` and ``err_console`` are made on first use: `edgewatch run` prints
    # nothing through rich, whose ~45 modules would stay in the agent's RSS (issue 22).
    if name not in ("console", "err_console"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _console(name)


def _console(name: str) -> Console:
    made = globals().get(name)
    if made is None:
        from rich.console import Console

        # Markup off: what the CLI prints is full of text publishers chose (asset
        # names, topics, payloads), and "[/]" in it must show as "[/]", not raise or
        # restyle the line. Styles are given as Text spans or style= instead.
        made = globals()[name] = Console(stderr=name == "err_console", markup=False)
    return cast("Console", made)


def error_line(label: str, message: str) -> Text:
    """``label`` in bold red, then ``message`` as text on the same line."""
    from rich.text import Text

    return Text.assemble((label, "bold red"), " ", printable(message))


@dataclass
class Invocation:
    """Global options, kept on the Typer context for sub-commands."""

    config_path: Path | None = None
    log_level: str | None = None
    debug: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    def settings(self) -> Settings:
        """The effective settings: defaults < file < env < flags (loaded once)."""
        if self._settings is None:
            overrides = dict(self.overrides)
            if self.log_level:
                overrides.setdefault("logging", {})["level"] = self.log_level
            self._settings = load_settings(self.config_path, overrides)
        return self._settings


def invocation(ctx: typer.Context) -> Invocation:
    obj = ctx.find_root().obj
    if not isinstance(obj, Invocation):
        obj = Invocation()
        ctx.find_root().obj = obj
    return obj


@contextmanager
def current_database(settings: Settings) -> Iterator[Engine]:
    """The existing database, refused unless at the newest schema; closed after."""
    engine = migrate.ensure_current(settings.storage.database_path)
    try:
        yield engine
    finally:
        engine.dispose()


def emit_json(obj: Any) -> None:
    """Write ``obj`` as one JSON document to stdout (for scripts, never styled)."""
    sys.stdout.buffer.write(
        orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


def fail(error: EdgewatchError) -> typer.Exit:
    """Render ``error`` as the one line a user sees and return the Exit to raise."""
    _console("err_console").print(error_line("error:", str(error)), highlight=False, soft_wrap=True)
    return typer.Exit(error.exit_code)
