"""The ``edgewatch`` command line: a thin Typer layer over library code."""

from agent.cli.app import app, main

__all__ = ["app", "main"]
