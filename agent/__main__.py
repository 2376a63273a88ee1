"""``python -m agent`` runs the ``edgewatch`` command."""

from agent.cli import main

main()
