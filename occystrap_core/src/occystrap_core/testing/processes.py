"""``occystrap`` as a process of its own, for tests that signal, kill or re-run it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

__all__ = ["OccystrapProcess", "wait_until"]


class OccystrapProcess:
    """``python -m occystrap_core --ca-cert CA --no-progress --min-speed 0 ARGS``, started
    at once, with its caches and temporary files under ``tmp`` (``cache/``, ``temp/``)
    so that a re-run with the same ``tmp`` finds what the first run left."""

    def __init__(self, tmp: Path, ca_cert: str, *args: str,
                 env: Mapping[str, str] | None = None):
        (tmp / "temp").mkdir(exist_ok=True)
        self.env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache"),
                    "OCCYSTRAP_TEMP_DIR": str(tmp / "temp"), **(env or {})}
        self.args = [sys.executable, "-m", "occystrap_core", "--ca-cert", ca_cert,
                     "--no-progress", "--min-speed", "0", *args]
        self.process = subprocess.Popen(self.args, env=self.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)

    def wait(self, timeout: float = 120) -> tuple[int, str]:
        """Its exit code and stderr; a test failure (the process killed) past ``timeout``."""
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            pytest.fail(f"occystrap did not stop within {timeout} s: {self.args}")
        return self.process.returncode, err


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` every 50 ms; a test failure naming ``what`` past ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
