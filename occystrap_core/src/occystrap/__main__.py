"""``python -m occystrap``: the command-line interface, as the ``occystrap`` script runs it."""

from occystrap_core.__main__ import main

main()
