"""A journal of the upload sessions a run has open, so that a later run can cancel
the ones a killed run left behind on the registry.

A registry keeps an abandoned upload session (and its partial data) until its
purge interval, a week by default for the CNCF registry. An interrupted run
cancels its sessions itself; a killed one cannot, so each run appends every
session it opens, and every one it finishes, to a file under
``$XDG_CACHE_HOME/occystrap/uploads/`` that it keeps ``flock``-ed. The next run
pushing to the same registry finds the files whose lock is free, cancels the
sessions still open in them (on that registry only: credentials never go to
another host), and removes them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
from typing import Callable

from occystrap_core.tempfiles import cache_dir

log = logging.getLogger("occystrap.registry")

SUFFIX = ".jsonl"


def _prefix(host: str) -> str:
    return host.replace(":", "_").replace("/", "_") + "-"


class Journal:
    """The sessions this run has open on one registry; thread-safe."""

    def __init__(self, host: str):
        self.host = host
        self._lock = threading.Lock()
        self._file: int | None = None
        self._path: str | None = None
        self._open: set[str] = set()
        self._disabled = False

    def _write(self, entry: dict[str, str]) -> None:
        if self._disabled:
            return
        if self._file is None:
            directory = cache_dir("uploads")
            if directory is None:
                self._disabled = True
                return
            self._path = os.path.join(
                directory, f"{_prefix(self.host)}{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}")
            self._file = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                                 | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._file, fcntl.LOCK_EX)
        os.write(self._file, (json.dumps(entry) + "\n").encode())

    def opened(self, location: str) -> None:
        with self._lock:
            self._open.add(location)
            self._write({"open": location})

    def closed(self, location: str) -> None:
        with self._lock:
            if location in self._open:
                self._open.discard(location)
                self._write({"done": location})

    def close(self) -> None:
        """At the end of the run: forget the journal, unless sessions are still open
        (their cancelling failed), which a later run then tries again."""
        with self._lock:
            if self._file is None:
                return
            if not self._open and self._path:
                os.unlink(self._path)
            os.close(self._file)
            self._file = None


def stale_sessions(host: str) -> list[tuple[str, list[str]]]:
    """The journals of dead runs for ``host``, each with the sessions it left open.
    (Two runs sweeping at once both cancel them: the second finds them gone.)"""
    directory = cache_dir("uploads")
    if directory is None:
        return []
    found = []
    for name in os.listdir(directory):
        if not (name.startswith(_prefix(host)) and name.endswith(SUFFIX)):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live run: not stale
                lines = f.read().splitlines()
        except (BlockingIOError, OSError):
            continue
        opened: list[str] = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the last line of a run killed while writing it
            if "open" in entry:
                opened.append(entry["open"])
            elif entry.get("done") in opened:
                opened.remove(entry["done"])
        found.append((path, opened))
    return found


def sweep(host: str, cancel: Callable[[str], bool]) -> None:
    """Cancel what dead runs left open on ``host``; ``cancel(location)`` says whether
    the registry no longer holds the session (cancelled, or gone already)."""
    for path, locations in stale_sessions(host):
        left = [location for location in locations if not cancel(location)]
        if left:
            log.info("%d upload sessions a stopped run left on %s could not be cancelled",
                     len(left), host)
            continue
        if locations:
            log.info("cancelled %d upload sessions a stopped run left on %s",
                     len(locations), host)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class Journals:
    """The run's journals by registry (``ctx.shared``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._journals: dict[str, Journal] = {}

    def get(self, host: str) -> tuple[Journal, bool]:
        """The journal for ``host``, and whether it is new (then sweep that registry)."""
        with self._lock:
            journal = self._journals.get(host)
            if journal is not None:
                return journal, False
            journal = self._journals[host] = Journal(host)
            return journal, True

    def close(self) -> None:
        with self._lock:
            journals = list(self._journals.values())
        for journal in journals:
            journal.close()
