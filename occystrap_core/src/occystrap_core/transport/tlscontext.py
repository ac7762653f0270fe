"""Client TLS contexts whose ALPN protocols are set once, before any connection.

httpcore sets the ALPN protocols on the ``SSLContext`` it is given at every connect
(``["http/1.1"]``, with ``"h2"`` for an HTTP/2 pool). Each call has OpenSSL free the
context's list and store a new one, while another thread's connect may be copying
that list into its new connection: CPython creates the connection (``SSL_new``)
without holding the interpreter's lock. Now and then a ClientHello went out with a
garbled ALPN extension, and the registry answered with an "unexpected message"
alert (Go's, for a ClientHello it cannot parse), failing the run.

Each of the run's contexts serves connections of one kind (an HTTP/2 route has its
own: :func:`~occystrap_core.transport.base.ssl_context`), so its list never changes:
:func:`client_context` sets it when the context is made, and a later call asking
for the same list leaves OpenSSL's untouched. A call asking for another list still
sets it, as before.
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Iterable

from ..errors import UsageError


class RouteContext(ssl.SSLContext):
    """An :class:`ssl.SSLContext` that sets its ALPN protocols only when they change."""

    _alpn: list[str] | None = None

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        protocols = list(alpn_protocols)
        if protocols != self._alpn:
            super().set_alpn_protocols(protocols)
            self._alpn = protocols


def client_context(alpn: Iterable[str], *, cafile: str | None = None,
                   capath: str | None = None, cadata: str | None = None,
                   verify: bool = True) -> RouteContext:
    """A client context as :func:`ssl.create_default_context` makes it (the system's
    roots unless ``cafile``, ``capath`` or ``cadata`` are given; ``SSLKEYLOGFILE``
    honoured), offering ``alpn``. ``verify=False`` checks no certificate and no name."""
    context = RouteContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and names
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cafile or capath or cadata:
        context.load_verify_locations(cafile, capath, cadata)
    else:
        context.load_default_certs()
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog and not sys.flags.ignore_environment:
        context.keylog_filename = keylog
    context.set_alpn_protocols(alpn)
    return context


class _Passphrase(Exception):
    """A key asked for its passphrase."""


def _refuse_passphrase() -> str:
    raise _Passphrase


def load_key_pair(context: ssl.SSLContext, cert: str, key: str | None) -> None:
    """``context.load_cert_chain(cert, key)``, failing with one error in words that
    names the files. A key with a passphrase is refused: OpenSSL would otherwise ask
    for it on the terminal, in the middle of a run or of a server's start."""
    files = ", ".join(f for f in (cert, key) if f)
    try:
        context.load_cert_chain(cert, key, password=_refuse_passphrase)
    except _Passphrase:
        why = "the key is encrypted; give it without a passphrase"
    except ssl.SSLError as e:
        why = ("the key is not the certificate's" if e.reason == "KEY_VALUES_MISMATCH"
               else "not a PEM certificate and its key" + (f" ({e.reason})" if e.reason else ""))
    except OSError as e:
        why = e.strerror or str(e)
    else:
        return
    raise UsageError(f"cannot load TLS certificates ({files}): {why}")
