"""The ``occystrap`` script: the collector is paused while the CLI's modules load, and on
for the run, with what start-up made frozen out of its way."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import importlib_metadata
import pytest

_RUN = textwrap.dedent("""
    import gc, importlib.abc, sys

    loading = []  # was the collector on when the CLI module was imported?

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "occystrap_core.cli":
                loading.append(gc.isenabled())
            return None

    sys.meta_path.insert(0, Watch())
    sys.argv = ["occystrap", "--version"]
    from occystrap_core.__main__ import main
    try:
        main()
    except SystemExit as e:
        print(loading, gc.isenabled(), gc.get_freeze_count() > 0, e.code)
""")


def test_the_script_runs_the_launcher() -> None:
    (script,) = importlib_metadata.entry_points(group="console_scripts", name="occystrap")
    assert script.value == "occystrap_core.__main__:main"


def test_the_collector_is_paused_while_the_cli_loads_and_on_for_the_run() -> None:
    proc = subprocess.run([sys.executable, "-c", _RUN], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[False] True True 0"


@pytest.mark.parametrize("package", ["occystrap_core", "occystrap"])
def test_python_dash_m_runs_the_cli(package: str) -> None:
    proc = subprocess.run([sys.executable, "-m", package, "--version"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("occystrap ")
