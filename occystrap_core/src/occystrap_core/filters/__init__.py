"""The core's filters; :mod:`occystrap_core.builtin.filters` registers them."""
