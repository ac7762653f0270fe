"""occystrap core: hook specifications, plugin manager, pipeline and CLI.

The public plugin API is ``hookimpl`` (this module), :mod:`occystrap_core.types`,
:mod:`occystrap_core.api`, :mod:`occystrap_core.errors` and
:class:`occystrap_core.context.Context`. Everything else is private.

This module is imported by every plugin's entry-point module, so it stays light:
no httpx, no click.
"""

import pluggy

__version__ = "0.5.0"

hookimpl = pluggy.HookimplMarker("occystrap")
"""Marker for occystrap hook implementations: ``@occystrap_core.hookimpl``."""

__all__ = ["hookimpl", "__version__"]
