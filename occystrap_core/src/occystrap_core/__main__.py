"""``python -m occystrap_core`` runs the CLI (same as the ``occystrap`` script)."""

from .cli import main

main()
