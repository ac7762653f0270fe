"""The persistent layer cache (``--layer-cache DIR``): facts about bytes, in SQLite.

A filtered or recompressed copy spends its time downloading, rewriting and
compressing layers. This cache remembers what that work gave, as statements that
are true of the bytes whatever run made them, so using one can never make a wrong
image:

- ``transforms``: applying STEP to the tar with digest INPUT gives OUTPUT (SIZE
  bytes). A STEP names one transforming stage completely: a filter's name, options
  and the distribution and version that provide it (:func:`filter_step`), or an
  output's compression, level and compressor version.
- ``locations``: REGISTRY held DIGEST in REPOSITORY (a later run may mount it).
- ``images``: the source manifest SOURCE through the chain CHAIN (every step of the
  filters and the output's encoding) gave the manifest MANIFEST.

A fact says nothing about what a destination holds: users check the blobs are there
(or mount them) before skipping any work, and ignore an entry whose blob is gone.

The store is ``DIR/cache.sqlite3`` in WAL mode, so several processes share it:
every write is one short transaction, and readers never wait for writers. Rows
carry the time they were last used; :meth:`LayerCache.prune` drops the least
recently used. A cache that cannot be opened or read is a warning, never a failed
copy (:func:`open_for_run`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from . import digest as digests
from .errors import OccystrapError, UsageError

if TYPE_CHECKING:
    from .plugins import PluginRecord

log = logging.getLogger("occystrap.layercache")

FILENAME = "cache.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000  # a writer waits this long for another process's transaction
TOUCH_AFTER = 3600.0  # seconds: a hit refreshes ``used`` at most this often (a write)
TABLES = ("transforms", "locations", "images")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transforms (
    input TEXT NOT NULL, step TEXT NOT NULL, output TEXT NOT NULL, size INTEGER NOT NULL,
    used REAL NOT NULL, PRIMARY KEY (input, step)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS locations (
    registry TEXT NOT NULL, digest TEXT NOT NULL, repository TEXT NOT NULL,
    used REAL NOT NULL, PRIMARY KEY (registry, digest, repository)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS images (
    source TEXT NOT NULL, chain TEXT NOT NULL, digest TEXT NOT NULL, manifest BLOB NOT NULL,
    media_type TEXT NOT NULL, used REAL NOT NULL, PRIMARY KEY (source, chain)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS transforms_used ON transforms (used);
CREATE INDEX IF NOT EXISTS locations_used ON locations (used);
CREATE INDEX IF NOT EXISTS images_used ON images (used);
"""

T = TypeVar("T")


class CacheError(OccystrapError):
    """The cache directory cannot be used (unreadable, corrupt, from a newer occystrap)."""


class _NotOurs(sqlite3.DatabaseError):
    """A sound database this occystrap must leave as it is (another program's, a newer
    occystrap's); ``advice`` says what to do instead of removing it."""

    def __init__(self, message: str, advice: str):
        super().__init__(message)
        self.advice = advice


_ANOTHER_DIRECTORY = "name another directory (it is not this occystrap's to change)"


def filter_step(name: str, options: Mapping[str, Any], record: PluginRecord) -> str:
    """The step identity of a filter: its name, canonical options, and the plugin
    (distribution and version) that provides it. Another version may write other
    bytes, so it never shares entries."""
    canonical = json.dumps(dict(options), sort_keys=True, separators=(",", ":"), default=str)
    return f"filter {name}{canonical} {record.distribution}=={record.version}"


class LayerCache:
    """The store; safe to share between threads (one connection behind a lock).

    Lookups and records never raise: a database error is logged once as a warning
    and the cache is off for the rest of the run. ``now`` is the clock (tests pass
    a fake one).
    """

    def __init__(self, directory: str, now: Callable[[], float] = time.time, *,
                 create: bool = True):
        """``create``: make ``directory`` and the database if missing (a copy does; the
        ``cache`` commands, which read what copies made, do not)."""
        self.directory = directory
        self.path = os.path.join(directory, FILENAME)
        self.now = now
        self._lock = threading.Lock()
        self._off = False
        try:
            if create:
                os.makedirs(directory, exist_ok=True)
            elif not os.path.lexists(self.path):
                raise CacheError(f"layer cache {directory}: no layer cache there (a copy "
                                 f"with --layer-cache DIR makes one)")
            if os.path.exists(self.path) and not os.path.isfile(self.path):
                raise CacheError(f"layer cache {self.path}: not a regular file; "
                                 f"{_ANOTHER_DIRECTORY}")
            # autocommit: each statement is its own short transaction
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                       isolation_level=None, check_same_thread=False)
        except OSError as e:  # from makedirs
            link = _link_to_nothing(directory)
            if link:
                why = f"{link} is a symbolic link to {os.readlink(link)}, which does not exist"
            elif isinstance(e, FileExistsError):  # a file where the directory should be
                why = f"{e.filename} is not a directory"
            else:
                why = str(e)
            raise CacheError(f"layer cache {directory}: cannot make it: {why}") from None
        except sqlite3.Error as e:
            raise CacheError(f"layer cache {directory}: cannot open it: {e}; "
                             f"{_advice(e, directory)}") from None
        try:
            self._set_up()
        except sqlite3.Error as e:
            self._db.close()
            raise CacheError(f"layer cache {self.path}: unusable ({e}); "
                             f"{_advice(e, directory)}") from None

    def _set_up(self) -> None:
        """:meth:`_setup`, started over while SQLite answers BUSY: it does so at once,
        without waiting, where waiting could deadlock (processes setting up one new
        cache together), and its documentation has the caller try again."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                return self._setup()
            except sqlite3.OperationalError as e:
                if not e.sqlite_errorname.startswith("SQLITE_BUSY") or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)

    def _setup(self) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Checked before anything is written: switching to WAL rewrites the file's header.
        version = self._version(db)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent; a crash may lose
        if version == SCHEMA_VERSION:              # the last writes only
            return
        db.execute("BEGIN IMMEDIATE")  # one process creates the schema; others wait
        try:
            if self._version(db) != SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite rolls back itself on some errors (a full disk)
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _version(db: sqlite3.Connection) -> int:
        """The schema version; an error for a database that is not a layer cache (another
        program's, which must be left as it is) or is a newer occystrap's."""
        # one statement, one snapshot: a cache gets its version in the transaction that
        # creates its tables, which another process may commit between two statements
        version, tables = db.execute("SELECT user_version, EXISTS (SELECT 1 FROM "
                                     "sqlite_master) FROM pragma_user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise _NotOurs(f"schema version {version} is newer than this occystrap's "
                           f"{SCHEMA_VERSION}",
                           "use the newer occystrap, or name another directory")
        if version == 0 and tables:
            raise _NotOurs("a database of something else, not a layer cache",
                           _ANOTHER_DIRECTORY)
        return int(version)

    def _run(self, what: str, work: Callable[[sqlite3.Connection], T], default: T) -> T:
        with self._lock:
            if self._off:
                return default
            try:
                return work(self._db)
            except sqlite3.Error as e:
                self._off = True
                log.warning("layer cache %s: %s failed (%s); going on without the cache",
                            self.path, what, e)
                return default

    # --- transforms -----------------------------------------------------------

    def transform(self, input: str, step: str) -> tuple[str, int] | None:
        """``(output digest, size)`` of applying ``step`` to ``input``, if known."""
        def work(db: sqlite3.Connection) -> tuple[str, int] | None:
            row = db.execute("SELECT output, size, used FROM transforms WHERE input = ? "
                             "AND step = ?", (input, step)).fetchone()
            if row is None:
                return None
            self._touch(db, "transforms", row[2], "input = ? AND step = ?", (input, step))
            return str(row[0]), int(row[1])

        return self._run("a lookup", work, None)

    def record_transform(self, input: str, step: str, output: str, size: int) -> None:
        self._write("INSERT OR REPLACE INTO transforms VALUES (?, ?, ?, ?, ?)",
                    (input, step, output, size, self.now()))

    # --- locations ------------------------------------------------------------

    def locations(self, registry: str, digest: str, limit: int = -1) -> list[str]:
        """Repositories of ``registry`` that held ``digest``, most recently used first;
        at most ``limit`` of them when it is not negative (a base layer may be in every
        repository of a mirror, and a mount tries only a few)."""
        def work(db: sqlite3.Connection) -> list[str]:
            rows = db.execute("SELECT repository FROM locations WHERE registry = ? AND "
                              "digest = ? ORDER BY used DESC LIMIT ?",
                              (registry, digest, limit)).fetchall()
            return [str(r[0]) for r in rows]

        return self._run("a lookup", work, [])

    def record_location(self, registry: str, digest: str, repository: str) -> None:
        self._write("INSERT OR REPLACE INTO locations VALUES (?, ?, ?, ?)",
                    (registry, digest, repository, self.now()))

    def forget_location(self, registry: str, digest: str, repository: str) -> None:
        """The repository no longer holds the blob (a mount from it was refused)."""
        self._write("DELETE FROM locations WHERE registry = ? AND digest = ? AND "
                    "repository = ?", (registry, digest, repository))

    # --- images ---------------------------------------------------------------

    def image(self, source: str, chain: str) -> tuple[bytes, str] | None:
        """The manifest (bytes, media type) ``source`` gave through ``chain``, if known.
        The bytes are checked against the digest they were stored under."""
        def work(db: sqlite3.Connection) -> tuple[str, bytes, str] | None:
            row = db.execute("SELECT digest, manifest, media_type, used FROM images WHERE "
                             "source = ? AND chain = ?", (source, chain)).fetchone()
            if row is None:
                return None
            self._touch(db, "images", row[3], "source = ? AND chain = ?", (source, chain))
            return str(row[0]), bytes(row[1]), str(row[2])

        found = self._run("a lookup", work, None)
        if found is None:
            return None
        digest, data, media_type = found
        if digests.of_bytes(data) != digest:
            log.warning("layer cache %s: a stored manifest does not hash to its digest "
                        "%s; ignored", self.path, digest)
            return None
        return data, media_type

    def record_image(self, source: str, chain: str, manifest: bytes, media_type: str) -> None:
        self._write("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?)",
                    (source, chain, digests.of_bytes(manifest), manifest, media_type,
                     self.now()))

    # --- upkeep ---------------------------------------------------------------

    def _touch(self, db: sqlite3.Connection, table: str, used: float, where: str,
               key: tuple[str, ...]) -> None:
        now = self.now()
        if now - used >= TOUCH_AFTER:  # a write per hit only when it matters for pruning
            db.execute(f"UPDATE {table} SET used = ? WHERE {where}", (now, *key))

    def _write(self, sql: str, values: tuple[Any, ...]) -> None:
        self._run("a write", lambda db: db.execute(sql, values), None)

    def size(self) -> int:
        """Bytes on disk: the database and its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(self.path + suffix)
            except FileNotFoundError:
                pass
        return total

    def info(self) -> dict[str, Any]:
        """Row counts, size and age of the entries, for ``occystrap cache info``."""
        def work(db: sqlite3.Connection) -> dict[str, Any]:
            counts = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
            used = [db.execute(f"SELECT MIN(used), MAX(used) FROM {t}").fetchone()
                    for t in TABLES]
            oldest = [u[0] for u in used if u[0] is not None]
            newest = [u[1] for u in used if u[1] is not None]
            return {"path": self.path, "size": self.size(), **counts,
                    "oldest_used": min(oldest) if oldest else None,
                    "newest_used": max(newest) if newest else None}

        return self._checked("reading", work)

    def prune(self, max_age: float | None = None, max_size: int | None = None
              ) -> dict[str, int]:
        """Delete entries unused for ``max_age`` seconds, then the least recently used
        until the database holds at most ``max_size`` bytes; compact it. Returns the
        number of rows deleted and the size before and after."""
        def work(db: sqlite3.Connection) -> dict[str, int]:
            before, deleted = self.size(), 0
            if max_age is not None:
                cutoff = self.now() - max_age
                for table in TABLES:
                    deleted += db.execute(f"DELETE FROM {table} WHERE used < ?",
                                          (cutoff,)).rowcount
            while max_size is not None and _used_bytes(db) > max_size:
                rows = sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                           for t in TABLES)
                if not rows:
                    break  # an empty database is as small as it gets
                # drop the oldest share the size is over by (a tenth at least), then measure
                share = max(0.1, 1 - max_size / _used_bytes(db))
                deleted += self._drop_oldest(db, max(1, int(rows * share)))
            compacted = self._compact(db)
            return {"deleted": deleted, "size_before": before, "size_after": self.size(),
                    "compacted": compacted}

        return self._checked("pruning", work)

    def _drop_oldest(self, db: sqlite3.Connection, count: int) -> int:
        union = " UNION ALL ".join(f"SELECT used FROM {t}" for t in TABLES)
        row = db.execute(f"SELECT used FROM ({union}) ORDER BY used LIMIT 1 OFFSET ?",
                         (count - 1,)).fetchone()
        if row is None:
            row = db.execute(f"SELECT MAX(used) FROM ({union})").fetchone()
        return sum(db.execute(f"DELETE FROM {t} WHERE used <= ?", (row[0],)).rowcount
                   for t in TABLES)

    @staticmethod
    def _compact(db: sqlite3.Connection) -> bool:
        """VACUUM, which writes a copy of what is kept; False when the file system has
        no room for it (SQLite then reuses the freed pages for later entries)."""
        try:
            db.execute("VACUUM")
        except sqlite3.OperationalError as e:
            if getattr(e, "sqlite_errorname", None) != "SQLITE_FULL":
                raise
            return False
        finally:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return True

    def _checked(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """For the ``cache`` commands: an error is the command's failure."""
        with self._lock:
            try:
                return work(self._db)
            except sqlite3.Error as e:
                raise CacheError(f"layer cache {self.path}: {what} failed: {e}") from None

    def close(self) -> None:
        with self._lock:
            self._off = True
            self._db.close()


_ROOM = 64 * 1024  # bytes: less free than the WAL's shared memory grows by is a full disk
_UNWRITABLE = ("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")


def _advice(e: sqlite3.Error, directory: str) -> str:
    """What to do about a cache that cannot be set up. Removing it is the remedy for a
    damaged file only: on a full or read-only disk the cache is sound (SQLite rolled
    back what it could not write) and removing it would only lose entries."""
    if isinstance(e, _NotOurs):
        return e.advice
    name = getattr(e, "sqlite_errorname", None) or ""  # None: not raised by SQLite
    if name == "SQLITE_FULL" or name.startswith("SQLITE_IOERR") and _full(directory):
        # an existing cache on a full disk is an I/O error: its WAL files cannot grow
        return "its file system is full: free space there (the cache need not be removed)"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):  # for longer than BUSY_TIMEOUT_MS
        return ("another process holds it locked: try again once that one is done (the "
                "cache need not be removed)")
    if name.startswith(_UNWRITABLE):  # SQLite makes the WAL's files beside the database
        return (f"occystrap cannot write in {directory} (a read-only file system, or its "
                f"permissions): make it writable, or name another directory (the cache "
                f"need not be removed)")
    return "remove it to start afresh"


def _used_bytes(db: sqlite3.Connection) -> int:
    """What the rows take: the database's pages less its free ones (the file keeps its
    size until VACUUM)."""
    pages, free, size = db.execute("SELECT * FROM pragma_page_count, pragma_freelist_count, "
                                   "pragma_page_size").fetchone()
    return int((pages - free) * size)


def _full(directory: str) -> bool:
    try:
        return shutil.disk_usage(directory).free < _ROOM
    except OSError:
        return False


def _link_to_nothing(path: str) -> str | None:
    """The topmost of ``path`` and the directories above it that is a symbolic link to
    nothing: makedirs says 'File exists' or 'No such file or directory' of it."""
    found, path = None, os.path.abspath(path)
    while True:
        if os.path.islink(path) and not os.path.exists(path):
            found = path
        parent = os.path.dirname(path)
        if parent == path:
            return found
        path = parent


def open_for_run(directory: str) -> LayerCache | None:
    """The cache for a copy: a cache that cannot be used is a warning, and None."""
    try:
        return LayerCache(directory)
    except CacheError as e:
        log.warning("%s; going on without the cache", e)
        return None


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_NO_LIMIT = float(2**63)  # bytes: more than any disk holds


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``45m``, ``90s`` or ``2w``, in ASCII digits (as every
    number occystrap reads); inf for more digits than a float holds: nothing is that old."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower(), re.ASCII)
    if not match:
        raise UsageError(f"--max-age: expected a number and a unit (s, m, h, d, w), "
                         f"such as 30d, not {text!r}")
    return float(match.group(1)) * _DURATION[match.group(2)]


def parse_size(text: str) -> int:
    """Bytes in ``64M``, ``1G``, ``512K`` or ``4096`` (powers of 1024; ``MiB`` too), in
    ASCII digits."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower(),
                         re.ASCII)
    if not match:
        raise UsageError(f"--max-size: expected a size such as 64M or 1G, not {text!r}")
    # more digits than a float holds are inf: no limit, as any size beyond a disk's
    return int(min(float(match.group(1)) * _SIZE[match.group(2)], _NO_LIMIT))


def describe(info: Mapping[str, Any]) -> str:
    """``occystrap cache info`` as text."""
    from datetime import UTC, datetime

    from .info import human_size

    def when(ts: float | None) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"

    return "\n".join([f"Path:        {info['path']}",
                      f"Size:        {human_size(info['size'])}",
                      f"Transforms:  {info['transforms']}",
                      f"Locations:   {info['locations']}",
                      f"Images:      {info['images']}",
                      f"Oldest used: {when(info['oldest_used'])}",
                      f"Newest used: {when(info['newest_used'])}"])
