"""``python -m occystrap``: the command-line interface."""

from occystrap_core.cli import main

main()
