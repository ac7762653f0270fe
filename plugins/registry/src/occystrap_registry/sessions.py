"""A journal of the upload sessions a run has open, so that a later run can resume
the ones a killed run left half-sent, and cancel the others.

A registry keeps an abandoned upload session (and its partial data) until its
purge interval, a week by default for the CNCF registry. An interrupted run
cancels its sessions itself; a killed one cannot, so each run appends every
session it opens, and every one it finishes, to a file it keeps ``flock``-ed (one
line per event: a line torn by a kill is ignored). A session sent in chunks also
gets a line each time the registry acknowledges one: its newest location, its
blob's digest, repository and offset.

The next run pushing to the same registry takes over the files whose lock is
free: it cancels the sessions still open in them (on that registry only:
credentials never go to another host), keeps the acknowledged ones younger than
:data:`RESUME_FOR` for its uploads to resume (:meth:`Journal.take`), and removes
the files. What it neither finished nor cancelled is carried over into its own
journal, for the run after it.

The files live in ``$OCCYSTRAP_UPLOAD_STATE_DIR`` if set, else ``uploads/`` in the
``--layer-cache`` directory if one is given and its cache can be used, else
``$XDG_CACHE_HOME/occystrap/uploads``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from occystrap_core import tempfiles

log = logging.getLogger("occystrap.registry")

SUFFIX = ".jsonl"
STATE_DIR_ENV = "OCCYSTRAP_UPLOAD_STATE_DIR"
RESUME_FOR = 24 * 3600.0  # older sessions are cancelled: registries purge them anyway


def state_dir(layer_cache: str | None) -> str | None:
    """Where journals go (made if missing); None when it cannot be made."""
    return tempfiles.state_dir(STATE_DIR_ENV, layer_cache, "uploads")


def _prefix(host: str) -> str:
    return host.replace(":", "_").replace("/", "_") + "-"


@dataclass(frozen=True)
class Resumable:
    """A session a killed run had sent ``offset`` bytes of ``digest`` through."""

    location: str
    repo: str
    digest: str
    offset: int


def _resumable(entry: dict[str, Any], now: float) -> Resumable | None:
    try:
        found = Resumable(str(entry["open"]), str(entry["repo"]), str(entry["digest"]),
                          int(entry["offset"]))
        fresh = now - float(entry["t"]) < RESUME_FOR
    except (KeyError, TypeError, ValueError):
        return None
    return found if found.offset > 0 and fresh else None


class Journal:
    """The sessions this run has open on one registry; thread-safe."""

    def __init__(self, host: str, directory: str | None):
        self.host = host
        self.directory = directory
        self._lock = threading.Lock()
        self._file: int | None = None
        self._path: str | None = None
        self._open: set[str] = set()
        self._resumable: dict[tuple[str, str], Resumable] = {}  # (repo, digest) -> session

    def _write(self, entry: dict[str, Any]) -> None:
        if self.directory is None:
            return
        try:
            if self._file is None:
                self._path = os.path.join(
                    self.directory,
                    f"{_prefix(self.host)}{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}")
                self._file = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                                     | os.O_CLOEXEC, 0o600)
                fcntl.flock(self._file, fcntl.LOCK_EX)
            # One write per line: a kill leaves at most the last one torn.
            os.write(self._file, (json.dumps(entry) + "\n").encode())
        except OSError as e:  # a read-only or full disk: the push goes on without it
            log.warning("upload sessions cannot be journaled in %s (%s): a killed run's "
                        "will be neither resumed nor cancelled", self.directory, e.strerror)
            self.directory = None
            if self._file is not None:
                os.close(self._file)
                self._file = None

    def opened(self, location: str, *, repo: str | None = None, digest: str | None = None,
               offset: int = 0) -> None:
        """A session is open at ``location``; with ``digest``, ``offset`` bytes of that
        blob are acknowledged there (so a later run may resume it)."""
        entry: dict[str, Any] = {"open": location}
        if digest is not None and offset > 0:
            entry.update(repo=repo, digest=digest, offset=offset, t=time.time())
        with self._lock:
            self._open.add(location)
            self._write(entry)

    def closed(self, location: str) -> None:
        with self._lock:
            if location in self._open:
                self._open.discard(location)
                self._write({"done": location})

    def take(self, repo: str, digest: str) -> Resumable | None:
        """A session a killed run left with part of ``digest`` sent to ``repo``; the
        caller then owns it (it stays open in this journal until closed)."""
        with self._lock:
            return self._resumable.pop((repo, digest), None)

    def sweep(self, cancel: Callable[[str], bool]) -> None:
        """Take over what dead runs left on this registry: keep the sessions to resume,
        cancel the others (``cancel(location)`` says whether the registry holds the
        session no more), carry what is left into this journal."""
        now = time.time()
        for path, entries in stale_sessions(self.directory, self.host):
            kept = cancelled = 0
            for entry in entries:
                found = _resumable(entry, now)
                if found is None and cancel(entry["open"]):
                    cancelled += 1
                    continue
                kept += 1
                with self._lock:
                    self._open.add(entry["open"])
                    self._write(entry)
                    if found is not None:
                        self._resumable[(found.repo, found.digest)] = found
            if kept or cancelled:
                log.info("upload sessions a stopped run left on %s: %d cancelled, %d kept",
                         self.host, cancelled, kept)
            try:
                os.unlink(path)
            except OSError:  # gone already, or on a read-only disk: taken over all the same
                pass

    def close(self) -> None:
        """At the end of the run: forget the journal, unless sessions are still open
        (their cancelling failed, or they are kept to resume), for a later run."""
        with self._lock:
            if self._file is None:
                return
            if not self._open and self._path:
                os.unlink(self._path)
            os.close(self._file)
            self._file = None


def stale_sessions(directory: str | None, host: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """The journals of dead runs for ``host``, each with the sessions it left open
    (their newest lines). Two runs sweeping at once both take them: a session both
    resume is refused to one of them by the registry, which then starts over."""
    if directory is None:
        return []
    found = []
    try:
        names = os.listdir(directory)
    except OSError:  # unreadable: nothing can be taken over
        return []
    for name in names:
        if not (name.startswith(_prefix(host)) and name.endswith(SUFFIX)):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live run: not stale
                lines = f.read().splitlines()
        except (BlockingIOError, OSError):
            continue
        opened: dict[str, dict[str, Any]] = {}
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the last line of a run killed while writing it
            if not isinstance(entry, dict):
                continue
            if isinstance(entry.get("open"), str):
                opened[entry["open"]] = entry
            elif isinstance(entry.get("done"), str):
                opened.pop(entry["done"], None)
        found.append((path, list(opened.values())))
    return found


class Journals:
    """The run's journals by registry (``ctx.shared``)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._journals: dict[str, Journal] = {}

    def get(self, host: str) -> tuple[Journal, bool]:
        """The journal for ``host``, and whether it is new (then sweep that registry)."""
        with self._lock:
            journal = self._journals.get(host)
            if journal is not None:
                return journal, False
            journal = self._journals[host] = Journal(host, self.directory)
            return journal, True

    def close(self) -> None:
        with self._lock:
            journals = list(self._journals.values())
        for journal in journals:
            journal.close()
