"""The ``Range`` header of a blob ``GET``: clients (containerd, skopeo) resume an
interrupted pull with ``Range: bytes=N-``.

One range is served (``N-``, ``N-M``, or the suffix ``-S``); anything else (several
ranges, another unit, a malformed one) is ignored as RFC 9110 allows, and the whole
blob is sent.
"""

from __future__ import annotations

import re

from .numbers import at_most, less

_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")


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
        length = at_most(last, size)
        assert length is not None  # the pattern's digits
        if length == 0 or size == 0:
            raise Unsatisfiable()
        return size - length, size - 1
    start = at_most(first, size)
    assert start is not None
    if last and less(last, first):  # malformed: ignored
        return None
    if start >= size:
        raise Unsatisfiable()
    end = at_most(last, size)
    return start, size - 1 if end is None else min(end, size - 1)
