"""Ending a finished CLI run without tearing the interpreter down.

When the run is over and the interpreter exits, it first joins every non-daemon
thread and calls the ``atexit`` handlers, the last registered first (logging's,
tempfile's, a plugin's); then it frees modules, classes and objects one by one:
some 30M instructions, 10-15 ms, of every run (a twentieth of a warm cached copy)
for memory the kernel takes back at once. This module's handler is registered when
the CLI module is imported, before what it imports registers theirs, so it is called
after them, and ends the process there with the run's exit code (Instagram's servers
skip the teardown the same way). A handler registered earlier still, by ``site`` or
a ``.pth`` file, is not called. Only :func:`program`, around the console script's
run, arms it; a traced or profiled process (coverage, cProfile) ends as usual, as
tracers save their data in handlers of their own that may have been registered
earlier.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Iterator

_code: int | None = None  # the exit code of a finished run, once armed


@contextlib.contextmanager
def program() -> Iterator[None]:
    """Around the whole run of the program: its end ends the process."""
    global _code
    try:
        yield
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            _code = e.code or 0
        raise
    _code = 0


def _end() -> None:
    if _code is None or sys.gettrace() is not None or sys.getprofile() is not None:
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except Exception:  # a closed pipe: the interpreter reports it, and exits with 120
        return
    os._exit(_code)


atexit.register(_end)
