"""httpcore without h2 until a connection negotiates HTTP/2.

httpcore imports h2 (and hpack, hyperframe) at its own import whenever h2 is installed:
about 55M instructions, 6 % of a warm cached copy, for HTTP/2, which occystrap speaks only
over TLS. httpcore imports its HTTP/2 connection module again, from the connection that
negotiated h2, when it needs it (httpcore 1.0's ``_sync``/``_async`` ``connection``
modules; pyproject pins httpcore 1.0). So httpcore is imported with h2 marked absent, its
documented path for an environment without the ``http2`` extra, and the mark is removed
at once: HTTP/2 over TLS, and anything else importing h2 later, get the real package.
tests/test_packaging.py checks both sides.
"""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()


def import_httpcore() -> None:
    """Import httpcore, if nothing has, without importing h2 with it."""
    if "httpcore" in sys.modules and not _h2_marked():
        return  # (while marked, another thread is importing it: wait on the lock)
    with _lock:
        if "httpcore" in sys.modules:
            return
        marked = "h2" not in sys.modules
        if marked:
            sys.modules["h2"] = None  # type: ignore[assignment]  # None: "not importable"
        try:
            import httpcore  # noqa: F401
        finally:
            if marked and _h2_marked():
                del sys.modules["h2"]


def _h2_marked() -> bool:
    return "h2" in sys.modules and sys.modules["h2"] is None
