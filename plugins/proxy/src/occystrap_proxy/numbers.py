"""Numbers a client or the command line writes in digits (a ``Range``, a tag list's
``n``, a ``--listen`` port), read without trusting their length or their digits.

``int()`` reads ``"²"`` (which ``str.isdigit()`` accepts) as nothing and refuses more
than 4,300 digits, raising where a client's mistake deserves an answer (a 416, the
whole list) or one ``Error:`` line.
"""

from __future__ import annotations


def at_most(text: str, limit: int) -> int | None:
    """``text`` as a number, or ``limit`` if it says more; None unless it is ASCII
    digits (one at least)."""
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    return limit if len(digits) > len(str(limit)) else min(int(digits), limit)


def less(a: str, b: str) -> bool:
    """Is the number ``a`` less than ``b``, both ASCII digits of any length?"""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)
