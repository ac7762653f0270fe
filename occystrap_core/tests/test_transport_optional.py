"""httpcore imported without h2 (transport/optional.py): threads that need it wait."""

from __future__ import annotations

import sys
import threading

from occystrap_core.transport import optional


def test_a_thread_waits_while_another_imports_httpcore_with_h2_marked(monkeypatch):
    """While one thread imports httpcore with h2 marked absent, httpcore is already in
    sys.modules; another thread must not take that for done (its first HTTP/2 connection
    would find h2 missing), but wait until the mark is gone."""
    import httpcore  # noqa: F401  # as it is mid-import: in sys.modules

    returned = threading.Event()
    with optional._lock:  # the importing thread holds the lock until the mark is gone
        monkeypatch.setitem(sys.modules, "h2", None)
        waiter = threading.Thread(target=lambda: (optional.import_httpcore(), returned.set()))
        waiter.start()
        assert not returned.wait(0.2), "returned while h2 was still marked absent"
        monkeypatch.undo()
    waiter.join(10)
    assert returned.is_set()
    assert not optional._h2_marked()
