"""The default network transport: TLS settings, HTTP/2, pool limits and proxies."""

from __future__ import annotations

import functools
import os
import re
import ssl
import threading
import urllib.request
from collections.abc import Iterable
from typing import TYPE_CHECKING

import httpx

from ..errors import UsageError
from . import certsd
from .optional import import_httpcore
from .tlscontext import RouteContext, client_context, load_key_pair
from .tlsread import GatheringSSLSocket

if TYPE_CHECKING:
    from ..context import Context

SSL_KEY = "occystrap.transport.ssl"
# Request extension marking a bulk download (a layer blob streamed to its end):
# sent over pooled HTTP/1.1, like every request with a body. See ProxyRouter.
BULK = "occystrap.bulk"
# Bodiless requests in flight at once on one client from which on they go over HTTP/2
# (OCCYSTRAP_HTTP2_OVERLAP; 1: from the first). A run that asks one thing at a time (a
# warm no-op copy: two HEADs) stays on HTTP/1.1 and never imports asyncio, anyio's
# backend and h2: a fifth of such a run's CPU.
OVERLAP = 3
# For routes to http:// origins, which httpcore never wraps in TLS: it verifies like a
# real context but trusts nothing, so it could never pass a certificate.
_NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
# How OpenSSL names the files of a hashed certificate directory: subject hash, ".N".
_HASHED = re.compile(r"[0-9a-f]{8}\.[0-9]+")


@functools.cache
def _hashed_dir(path: str) -> bool:
    """Whether ``path`` is a certificate directory OpenSSL can look names up in."""
    try:
        with os.scandir(path) as entries:
            return any(_HASHED.fullmatch(entry.name) for entry in entries)
    except OSError:
        return False


def default_roots(alpn: Iterable[str] = ("http/1.1",)) -> RouteContext:
    """A verifying context trusting the system's roots (as OpenSSL finds them, with
    ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``), else certifi's.

    Parsing a whole bundle (ca-certificates' 150 roots) costs 35 ms, and certifi's as
    much again, in each context a run builds. A hashed directory (Debian's and Alpine's
    ``/etc/ssl/certs``) is given to OpenSSL as it is: while verifying, it reads only the
    roots a server's chain names. A bundle file is loaded whole, unless it is the
    system's own next to the system's own directory: update-ca-certificates writes both
    from the same roots. certifi is loaded only where the system has neither.
    """
    paths = ssl.get_default_verify_paths()
    hashed = paths.capath is not None and _hashed_dir(paths.capath)
    if not hashed and paths.cafile is None:
        import certifi

        return client_context(alpn, cafile=certifi.where())
    real = os.path.realpath
    system_pair = (hashed and paths.cafile is not None
                   and real(paths.cafile) == real(paths.openssl_cafile)
                   and real(paths.capath) == real(paths.openssl_capath))
    return client_context(alpn, cafile=None if system_pair else paths.cafile,
                          capath=paths.capath if hashed else None)


def ssl_context(ctx: Context, *, http2: bool = False, cafile: str | None = None,
                verify: bool = True, cert_dir: str | None = None) -> ssl.SSLContext:
    """The run's TLS settings: ``--ca-cert`` (or ``cafile``, a host's own CA: a PEM file,
    or a directory laid out as a :mod:`certificate directory <.certsd>`) replacing
    the default roots (:func:`default_roots`), ``--client-cert``/``--client-key`` for mutual TLS,
    and a host's :mod:`certificate directory <.certsd>` ``cert_dir`` added to them.
    ``verify=False`` (``--tls-verify=false``, ``?tls_verify=false``) accepts any
    certificate for any name: the connection is encrypted, but to whoever answers.

    HTTP/2 connections get a context of their own: httpcore sets the ALPN protocols on
    the context at every connect, so with one shared context an HTTP/1.1 connection
    could now and then offer h2, and then use httpcore's sync HTTP/2, unsafe in threads.
    Each context offers its route's protocols from the start (:mod:`.tlscontext`).
    """
    alpn = ("http/1.1", "h2") if http2 else ("http/1.1",)

    def build() -> ssl.SSLContext:
        s = ctx.settings
        if s.client_key and not s.client_cert:  # else the key is silently not offered
            raise UsageError(f"--client-key {s.client_key} needs --client-cert, the "
                             f"certificate it is the key of")
        ca = cafile or s.ca_cert
        try:
            if not verify:  # no roots to load: nothing is checked against them
                context = client_context(alpn, verify=False)
            elif ca and os.path.isdir(ca):  # a certificate directory, as skopeo's --cert-dir
                context = client_context(alpn, cadata=certsd.ca_data(ca))
                certsd.load(context, ca, client=not s.client_cert)
            elif ca:
                context = client_context(alpn, cafile=ca)
            else:
                context = default_roots(alpn)
            if s.client_cert:
                load_key_pair(context, s.client_cert, s.client_key)
            if cert_dir:  # its client certificate is offered even when nothing is verified
                certsd.load(context, cert_dir, client=not s.client_cert)
            context.sslsocket_class = GatheringSSLSocket  # 64 KiB per recv, not 16
        except OSError as e:  # ssl.SSLError included
            files = ", ".join(f for f in (ca, s.client_cert, s.client_key, cert_dir) if f)
            raise UsageError(f"cannot load TLS certificates ({files or 'system store'}): "
                             f"{e}") from None
        return context

    key = (f"{SSL_KEY}.h2" if http2 else SSL_KEY) + ("" if verify else ".noverify") \
        + (f".{cafile}" if cafile else "") + (f".dir.{cert_dir}" if cert_dir else "")
    return ctx.shared(key, build)


def has_body(request: httpx.Request) -> bool:
    """Whether httpcore sends the request as headers plus a body (even an empty one)."""
    return "content-length" in request.headers or "transfer-encoding" in request.headers


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """Does ``NO_PROXY`` name ``host``? As curl reads it: comma-separated names, each
    matching the host and its subdomains (a leading dot changes nothing), optionally
    with a port; ``*`` matches every host."""
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*":
            return True
        name, _, wanted = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if wanted and (not wanted.isdigit() or port != int(wanted)):
            continue
        name = name.lstrip(".").strip("[]")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _overlap() -> int:
    text = os.environ.get("OCCYSTRAP_HTTP2_OVERLAP", "")
    if not text:
        return OVERLAP
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"OCCYSTRAP_HTTP2_OVERLAP={text!r}: a whole number of requests, "
                         f"at least 1")
    return int(text)


class ProxyRouter(httpx.BaseTransport):
    """Sends each request direct or through the proxy the environment names for it
    (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``).

    httpx ignores environment proxies once a client is given ``transport=``, and
    routing here rather than with client ``mounts`` keeps one stack of layers
    above every route, redirected hops included.
    """

    def __init__(self, ctx: Context, *, tls_verify: bool = True):
        self.ctx = ctx
        # one client's choice (?tls_verify=false) or the run's (--tls-verify=false)
        self.verify = tls_verify and ctx.settings.tls_verify
        if ctx.settings.ca_cert or ctx.settings.client_cert:
            ssl_context(ctx)  # now, so that a bad --ca-cert fails before any request
        self.proxies = {k: v for k, v in urllib.request.getproxies_environment().items()
                        if k in ("http", "https", "all", "no") and v}
        self._routes: dict[tuple[str | None, bool, bool, str | None, str | None],
                           httpx.BaseTransport] = {}
        self._cert_dirs: dict[str, str | None] = {}  # HOST[:PORT] -> certsd.cert_dir()
        self._lock = threading.Lock()
        self._overlap = _overlap()
        self._bodiless = 0  # bodiless HTTPS requests in flight, until they overlap
        self._multiplexing = False  # once they have: HTTP/2 for them from then on

    def proxy_for(self, url: httpx.URL) -> str | None:
        if not self.proxies:
            return None
        proxy = self.proxies.get(url.scheme) or self.proxies.get("all")
        if proxy and _bypassed(url.host, url.port, self.proxies.get("no", "")):
            return None
        return proxy

    def _route(self, proxy: str | None, http2: bool, tls: bool, cafile: str | None = None,
               cert_dir: str | None = None) -> httpx.BaseTransport:
        key = (proxy, http2, tls, cafile, cert_dir)
        transport = self._routes.get(key)  # once made, never replaced until close()
        if transport is not None:
            return transport
        with self._lock:
            transport = self._routes.get(key)
            if transport is None:
                import_httpcore()
                limits = httpx.Limits(max_connections=self.ctx.settings.max_connections,
                                      max_keepalive_connections=self.ctx.settings.max_connections)
                if http2:
                    from .h2 import H2Transport  # imports asyncio: not for plain-HTTP runs

                    transport = H2Transport(verify=ssl_context(self.ctx, http2=True,
                                                               cafile=cafile,
                                                               verify=self.verify,
                                                               cert_dir=cert_dir),
                                            proxy=proxy, limits=limits)
                else:
                    transport = httpx.HTTPTransport(
                        verify=ssl_context(self.ctx, cafile=cafile, verify=self.verify,
                                           cert_dir=cert_dir)
                        if tls else _NO_TLS,
                        proxy=proxy, limits=limits)
                self._routes[key] = transport
            return transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # Requests with a body and bulk downloads use pooled HTTP/1.1 connections: h2
        # handles each 16-32 KiB DATA frame in Python (a 512 MiB pull took 3x as long),
        # httpcore ends an empty POST's stream in a second frame that can race the server's
        # early answer (StreamClosedError), and big transfers gain nothing from multiplexing.
        # The rest (manifests, HEADs, tokens, configs) share one HTTP/2 connection per host
        # once they overlap (OVERLAP).
        tls = request.url.scheme == "https"
        http2 = (self.ctx.settings.http2 and tls and not has_body(request)
                 and not request.extensions.get(BULK))
        netloc = request.url.netloc.decode().lower() if tls else ""
        cafile = self.ctx.settings.host_ca_certs.get(netloc) \
            if tls and self.ctx.settings.host_ca_certs else None
        cert_dir = self._cert_dir(netloc) if tls and cafile is None else None
        proxy = self.proxy_for(request.url)
        if not http2 or self._multiplexing:
            return self._route(proxy, http2, tls, cafile, cert_dir).handle_request(request)
        with self._lock:
            self._bodiless += 1
            self._multiplexing = self._multiplexing or self._bodiless >= self._overlap
            http2 = self._multiplexing
        try:
            return self._route(proxy, http2, tls, cafile, cert_dir).handle_request(request)
        finally:
            with self._lock:
                self._bodiless -= 1

    def _cert_dir(self, netloc: str) -> str | None:
        """``netloc``'s certificate directory, looked for once per run."""
        try:
            return self._cert_dirs[netloc]
        except KeyError:
            found = self._cert_dirs[netloc] = certsd.cert_dir(netloc)
            return found

    def close(self) -> None:
        with self._lock:
            routes, self._routes = list(self._routes.values()), {}
        for transport in routes:
            transport.close()
