"""The core's own sources (see :mod:`occystrap_core.builtin.local_inputs`)."""
