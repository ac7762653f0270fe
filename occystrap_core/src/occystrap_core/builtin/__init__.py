"""The core's own plugins, registered directly (never through an entry point).

They go through the same hooks as third-party plugins; fallbacks are ``trylast``
so that any installed plugin can override them.
"""

from . import credentials, filters, local_inputs, local_outputs, transport, uri

PLUGINS = [uri, transport, credentials, filters, local_inputs, local_outputs]
