"""The ``Range`` header of a blob ``GET``: clients (containerd, skopeo) resume an
interrupted pull with ``Range: bytes=N-``.

One range is served (``N-``, ``N-M``, or the suffix ``-S``); anything else (several
ranges, another unit, a malformed one) is ignored as RFC 9110 allows, and the whole
blob is sent.
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")


class Unsatisfiable(Exception):
    """The range starts past the blob's end (or asks for none of it): answer 416."""


def _at_most(digits: str, limit: int) -> int:
    """``digits`` as a number, or ``limit`` if that is less: int() refuses more than
    4300 digits, and a client may send more."""
    digits = digits.lstrip("0") or "0"
    return limit if len(digits) > len(str(limit)) else min(int(digits), limit)


def _less(a: str, b: str) -> bool:
    """Is the number ``a`` less than ``b``, both digits of any length?"""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The bytes ``(first, last)`` (inclusive) of a blob of ``size`` that ``header``
    asks for, or None for the whole blob."""
    match = _RANGE.match(header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # a suffix: the last ``last`` bytes
        length = _at_most(last, size)
        if length == 0 or size == 0:
            raise Unsatisfiable()
        return size - length, size - 1
    start = _at_most(first, size)
    if last and _less(last, first):  # malformed: ignored
        return None
    if start >= size:
        raise Unsatisfiable()
    return start, min(_at_most(last, size), size - 1) if last else size - 1
