"""Entry points of a group, found once and remembered between runs.

Finding them imports importlib_metadata, scans every distribution on ``sys.path``
and parses each plugin's metadata for its name and version: about 50 ms, a third of
a run that does nothing else. What was found is kept in the user's cache directory
with a key made of ``sys.path`` and the modification time of each of its entries that
holds distributions. Installing, upgrading or removing a distribution adds or removes
a directory in one of them, which changes its time, so the next run scans again; so
does anything unreadable, or a distribution's arrival in a directory that held none.
A directory holding none is left out of the key: the working directory ``python -m``
puts first, often busy and different from one run to the next, forces no scan.
``OCCYSTRAP_CACHE_DIR`` moves the cache; an empty value turns it off.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import stat
import sys
import tempfile
import zlib
from dataclasses import asdict, dataclass
from typing import Any

_VERSION = 3  # of the file's format
_DISTRIBUTIONS = (".dist-info", ".egg-info")  # what importlib_metadata finds on a path entry


@dataclass(frozen=True)
class Found:
    """An entry point, with the distribution that declares it."""

    name: str
    value: str  # ``module[:attr[.attr]]`` with optional ``[extras]``
    distribution: str | None
    version: str | None

    def load(self) -> Any:
        """The object the entry point names, imported (as importlib_metadata does)."""
        module, _, attrs = self.value.partition(":")
        obj = importlib.import_module(module.strip())
        for attr in filter(None, attrs.split("[", 1)[0].strip().split(".")):
            obj = getattr(obj, attr)
        return obj


def find(group: str) -> tuple[Found, ...]:
    """The entry points of ``group``, from the cache when it is current."""
    path = _cache_file(group)
    key = _key()
    if path is not None:
        cached = _read(path, key)
        if cached is not None:
            return cached
    found = _scan(group)
    if path is not None:
        _write(path, key, found)
    return found


def _scan(group: str) -> tuple[Found, ...]:
    import importlib_metadata

    found = []
    for ep in importlib_metadata.entry_points(group=group):
        dist = ep.dist
        metadata = dist.metadata if dist is not None else None  # parsed on each access
        found.append(Found(ep.name, ep.value, metadata["Name"] if metadata else None,
                           metadata["Version"] if metadata else None))
    return tuple(found)


def _key() -> list[Any]:
    """What the set of installed distributions depends on, cheaply."""
    entries: list[list[Any]] = []
    for entry in sys.path:
        try:
            stamp = _stamp(entry or ".")
        except OSError:
            stamp = -1  # unreadable now: keyed, so that it is scanned once readable
        if stamp is not None:
            entries.append([entry, stamp])
    return [_VERSION, sys.version, entries]


def _stamp(path: str) -> int | None:
    """A directory's modification time, or None when it holds no distribution."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_mtime_ns  # a zip file
    with os.scandir(path) as found:
        if any(e.name.endswith(_DISTRIBUTIONS) for e in found):
            return st.st_mtime_ns
    return None


def _cache_file(group: str) -> str | None:
    base = os.environ.get("OCCYSTRAP_CACHE_DIR")
    if base is None:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or
                            os.path.join(os.path.expanduser("~"), ".cache"), "occystrap")
    if not base:
        return None
    # one file per interpreter and group: environments sharing a home do not thrash
    # (a checksum, not a hash: the file records its full key, so a clash only costs a scan)
    name = zlib.crc32(f"{sys.prefix}\0{sys.executable}\0{group}".encode())
    return os.path.join(base, f"entry-points-{name:08x}.json")


def _read(path: str, key: list[Any]) -> tuple[Found, ...] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data["key"] != key:
            return None
        return tuple(Found(**entry) for entry in data["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, torn or from another version: scan


def _write(path: str, key: list[Any], found: tuple[Found, ...]) -> None:
    with contextlib.suppress(OSError):  # a cache that cannot be written is no cache
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".entry-points-", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": key, "entries": [asdict(e) for e in found]}, f)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
