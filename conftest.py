# Opt in to the fixtures the core ships for plugin authors (not auto-loaded anywhere else).
pytest_plugins = [
    "occystrap_core.testing",
    "occystrap_core.testing.http",
    "occystrap_core.testing.faults",
    "occystrap_core.testing.registry",
]
