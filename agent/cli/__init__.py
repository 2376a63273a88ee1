"""The ``edgewatch`` command line: a thin Typer layer over library code.

The Typer application is ``agent.cli.app.app``, built on first use: importing every
command would cost ``edgewatch run`` memory (see :func:`agent.cli.app.main`).
"""

from agent.cli.app import main

__all__ = ["main"]
