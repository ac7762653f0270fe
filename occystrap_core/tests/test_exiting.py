"""The CLI ends its process once the run is over, skipping the interpreter's teardown
but nothing a run or a plugin asked for at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A handler registered before the CLI module is imported is called after the CLI's,
# so only when the process is left to end as usual ("late"); one registered during
# the run, as by a plugin, is called in every case ("handler").
_RUN = textwrap.dedent("""
    import atexit, sys
    atexit.register(lambda: sys.stderr.write("late\\n"))
    from occystrap_core import cli

    atexit.register(lambda: sys.stderr.write("handler\\n"))
    if sys.argv[1] == "traced":
        sys.settrace(lambda *a: None)
    sys.argv = ["occystrap", *sys.argv[2:]]
    cli.main()
""")


def _run(mode: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _RUN, mode, *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args, code", [(["--version"], 0),
                                        (["process", "nosuch://x", "tar:///dev/null"], 1),
                                        (["--no-such-option"], 2)])
def test_the_run_ends_the_process_with_its_code(args: list[str], code: int) -> None:
    proc = _run("plain", *args)
    assert proc.returncode == code
    lines = proc.stderr.splitlines()
    assert "handler" in lines and "late" not in lines
    if code == 0:
        assert proc.stdout.startswith("occystrap ")  # flushed before the end
    else:
        assert any(line.startswith(("Error:", "Usage:")) for line in lines)


def test_a_traced_process_is_torn_down_as_usual() -> None:
    """coverage and profilers save their data in handlers registered before ours."""
    proc = _run("traced", "--version")
    assert proc.returncode == 0
    assert proc.stderr.splitlines()[-2:] == ["handler", "late"]


def test_output_to_a_closed_pipe_is_reported_as_before() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "occystrap_core", "--version"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # nobody reads what is printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) != 0
    assert "Traceback" not in err
