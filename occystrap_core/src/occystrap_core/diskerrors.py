"""Where a write the machine refused (a full disk, a quota) was going, for its error line.

The error of a write to an open file names no file. A run writes to its destination,
and to its temporary directory too (spooled layers, a filter's work): when both are
local and share a file system, the destination is the place to name; when the
destination is not local (a registry), the temporary directory is; otherwise either
could have filled, and both are named.
"""

from __future__ import annotations

import os


def where(writing: str | None, temp_dir: str | None) -> str | None:
    """What to name for a refused write: ``writing`` is the destination (a URI or a
    path, as the user gave it), ``temp_dir`` the run's temporary directory if it made
    one."""
    if temp_dir is None:
        return writing
    temp = f"the temporary directory {os.path.dirname(temp_dir)} (--temp-dir)"
    device = _device(_local(writing)) if writing else None
    if device is None:
        return temp if not writing or "://" in writing else f"{writing} or {temp}"
    return writing if device == _device(temp_dir) else f"{writing} or {temp}"


def _local(writing: str) -> str:
    """The path a destination names, when it names one (``tar://PATH?...``, ``PATH``)."""
    path = writing.split("://", 1)[-1]
    return path.split("?", 1)[0] if "://" in writing else path


def _device(path: str) -> int | None:
    """The file system of ``path``, or of the directory it would be made in; None when
    that does not exist either (not a path: the ``HOST/REPO`` of a registry)."""
    path = os.path.abspath(path)
    for candidate in (path, os.path.dirname(path)):
        try:
            return os.stat(candidate).st_dev
        except OSError:
            pass
    return None
