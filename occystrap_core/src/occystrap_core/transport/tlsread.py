"""TLS sockets whose ``recv`` returns every record already arrived, not just one.

An ``SSLSocket.recv(n)`` returns at most one TLS record, 16 KiB, however large ``n``
and however much has arrived. httpcore asks for 64 KiB at a time and turns each
answer into one h11 event, passed up through half a dozen generators: over TLS that
Python work ran once per 16 KiB, 16,000 times per 256 MiB, and was most of a
download's CPU beyond the decryption itself (bench/registry_bench.py). This socket
keeps reading, without waiting, the records the kernel already holds, up to ``n``
bytes: a quarter of the events for the same bytes, decrypted by the same OpenSSL.

It is installed through the public ``SSLContext.sslsocket_class`` by
:func:`~occystrap_core.transport.base.ssl_context`. Nothing else changes: a ``recv``
still waits (under the socket's timeout) for the first byte only, and an error met
while reading on is raised by the next ``recv`` rather than losing the bytes in hand.
"""

from __future__ import annotations

import ssl


class GatheringSSLSocket(ssl.SSLSocket):
    """An :class:`ssl.SSLSocket` whose ``recv`` gathers the records that are there."""

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        data = super().recv(buflen, flags)
        if flags or not data or len(data) >= buflen:
            return data
        parts, have = [data], len(data)
        timeout = self.gettimeout()
        self.settimeout(0.0)  # what has arrived only: never wait for more
        try:
            while have < buflen:
                try:
                    more = super().recv(buflen - have)
                except OSError:  # nothing more yet (SSLWantRead...), or a failure the
                    break  # next recv meets again and raises
                if not more:
                    break
                parts.append(more)
                have += len(more)
        finally:
            self.settimeout(timeout)
        return parts[0] if len(parts) == 1 else b"".join(parts)
