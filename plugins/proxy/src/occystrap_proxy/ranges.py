"""The ``Range`` header of a blob ``GET``: clients (containerd, skopeo) resume an
interrupted pull with ``Range: bytes=N-``.

One range is served (``N-``, ``N-M``, or the suffix ``-S``); anything else (several
ranges, another unit, a malformed one) is ignored as RFC 9110 allows, and the whole
blob is sent.
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Unsatisfiable(Exception):
    """The range starts past the blob's end (or asks for none of it): answer 416."""


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The bytes ``(first, last)`` (inclusive) of a blob of ``size`` that ``header``
    asks for, or None for the whole blob."""
    match = _RANGE.match(header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # a suffix: the last ``last`` bytes
        if int(last) == 0 or size == 0:
            raise Unsatisfiable()
        return max(size - int(last), 0), size - 1
    start = int(first)
    if last and int(last) < start:  # malformed: ignored
        return None
    if start >= size:
        raise Unsatisfiable()
    return start, min(int(last), size - 1) if last else size - 1
