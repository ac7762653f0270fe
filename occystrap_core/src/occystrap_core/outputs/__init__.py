"""The core's local outputs; :mod:`occystrap_core.builtin.local_outputs` registers them."""
