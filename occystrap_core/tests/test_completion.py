"""Shell completion: click's protocol run as a shell runs it, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# What a shell runs, plus a report of whether an HTTP library was imported on the way.
_RUN = """
import atexit, sys
from occystrap_core.cli import main
atexit.register(lambda: sys.stderr.write(
    "imported: " + " ".join(m for m in ("httpx", "httpcore", "h2") if m in sys.modules)))
main()
"""


def _complete(cwd: Path, *words: str) -> tuple[list[str], str]:
    """The candidates for the last of ``words`` (``""``: a new word), and stderr."""
    env = dict(os.environ, _OCCYSTRAP_COMPLETE="bash_complete",
               COMP_WORDS=" ".join(("occystrap", *words)), COMP_CWORD=str(len(words)))
    done = subprocess.run([sys.executable, "-c", _RUN], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if line], done.stderr


@pytest.mark.parametrize("words, expected", [
    (("pro",), ["process", "proxy"]),
    (("process", "--dry"), ["--dry-run"]),
    (("process", "tar://a.tar", "--ins"), ["--insecure"]),  # a global one, after the command
    (("info", "tar://a.tar", "--quay-t"), ["--quay-token"]),  # a plugin's global one
    (("info", "-O"), ["-O"]),  # its own, once
    (("process", "re"), ["registry://"]),
    (("process", "--retries", "3", "re"), ["registry://"]),  # after a global option
    (("info", "dockerp"), ["dockerpush://"]),  # a source-only scheme
    (("process", "tar://a.tar", "oci"), ["oci-bundle://", "oci-layout://"]),  # destinations
    (("process", "tar://a.tar", "dockerp"), []),  # not a destination
    (("process", "tar://"), ["tar://a.tar", "tar://b.tar", "tar://layout/"]),
    (("process", "tar://a.tar", "oci-layout://la"), ["oci-layout://layout/"]),
    (("check", "oci-layout://layout/i"), ["oci-layout://layout/index.json"]),
    (("process", "tar://a.tar", "registry://ho"), []),  # no files for a registry
])
def test_completion_candidates(tmp_path: Path, words: tuple[str, ...],
                               expected: list[str]) -> None:
    for name in ("a.tar", "b.tar", ".hidden.tar", "layout/index.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    candidates, stderr = _complete(tmp_path, *words)
    assert candidates == expected
    assert stderr.endswith("imported: ")  # no HTTP library


def test_a_global_option_whose_value_is_being_typed_breaks_nothing(tmp_path: Path) -> None:
    _complete(tmp_path, "process", "--retries", "")  # exit 0, no usage error
