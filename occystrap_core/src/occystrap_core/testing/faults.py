"""A fault-injecting front: a reverse proxy on 127.0.0.1 that breaks chosen requests.

Put a ``FaultFront`` in front of a real registry and point the client under test at it.
Requests and answers are forwarded byte for byte, except for the requests matching a
rule, which get a fault::

    with FaultFront(registry.url, upstream_ca=registry.ca_cert, tls=True) as front:
        front.add(Fault("reset", method="GET", path="/blobs/sha256:", offset=1000))
        ...  # the client talks to front.url (trusting front.ca_cert)
        assert front.injected() == 1

Or, with ``pytest_plugins = [..., "occystrap_core.testing.faults"]`` in a conftest,
the ``fault_front_factory`` fixture: ``front = fault_front_factory(registry_tls, tls=True)``.

Clients speak HTTP/1.1 over TCP or TLS, or HTTP/2 over TLS (ALPN ``h2``). The front
speaks HTTP/1.1 to the upstream with its own Host header, and rewrites ``Location``
headers that point at the upstream so that clients keep talking through the front.
Request and answer bodies are streamed both ways.

Rules (``Fault``) are tried in order; the first unspent one whose ``method``,
``path`` (``re.search`` on the path, without the query) and ``header`` (``re.search``
on that request header's value) match is taken, once it has let ``after`` such
requests by. A rule is
spent only when its fault is applied: a response fault meeting an answer it cannot
change passes the answer through unchanged and leaves the rule for the next match.
Response faults (every kind but ``status``, ``html``, ``redirect``, ``status_after``,
``lost``, ``stall`` and ``ignore_range``) only act on 2xx answers, so an auth challenge or a probing
HEAD's 404 does not use them up.

Fault kinds. "Bodyless" answers are answers to HEAD and 204/304 answers; ``L`` is the
body length; "offset" is ``Fault.offset``, or a random offset in ``[0, L)`` drawn from
``random.Random(seed)``, so a run is reproducible.

=================== ==================================================================
``reset``           send the head and ``min(offset, L-1)`` body bytes, then abort the TCP
                    connection (RST); bodyless or empty: abort right after the head.
                    HTTP/2: RST_STREAM (INTERNAL_ERROR), the connection stays usable.
``truncate``        keep Content-Length, send ``min(offset, L-1)`` bytes, close cleanly
                    (FIN; HTTP/2: END_STREAM early). Passes when the body is empty.
``corrupt``         flip (XOR 0xFF) the byte at ``min(offset, L-1)``. Passes when empty.
``short_length``    announce and send only ``min(offset, L-1)`` bytes: a complete, short
                    answer. Passes when the body is empty.
``long_length``     announce ``L + 1``, send the whole body, then close (HTTP/2:
                    END_STREAM). Passes when bodyless.
``wrong_digest``    replace Docker-Content-Digest by another ``sha256:`` digest.
``strip_digest``    drop Docker-Content-Digest. Both pass when the answer has none.
``reindent``        re-serialise a JSON body with ``json.dumps(doc, indent=3)`` and fix
                    Content-Length; the digest header is kept. Passes when bodyless or
                    not JSON.
``status``          answer ``status`` (with ``Retry-After: retry_after`` when given)
                    without forwarding; the request body is read and dropped first.
                    The body is a distribution error whose code is ``code``.
``status_after``    forward (so a PUT is stored), drop the upstream answer, answer
                    ``status`` as ``status`` does.
``lost``            forward, then abort without answering (HTTP/2: RST_STREAM).
``stall``           wait ``seconds``, then forward; drop the request if the client left.
``stall_body``      send the head and ``min(offset, L)`` bytes, wait ``seconds``, send the
                    rest. Applies to bodyless answers too (the wait follows the head).
``trickle``         send the body at ``rate`` bytes per second. Passes when empty.
``html``            answer a captive portal's ``200`` text/html page without forwarding.
``redirect``        answer ``307`` to ``location`` + the original path and query (and
                    ``location``'s own query after it, as a presigned URL's signature).
``redirect_upload`` forward, and point the upstream's ``Location`` (upload sessions) at
                    ``location`` + its path and query. Passes when there is none.
``ignore_range``    forward without the ``Range`` header, as a server without range
                    support would: the whole body, ``200``. Passes when there is none.
=================== ==================================================================

Every request is recorded in ``log`` as a ``Hit`` (with the number of the client
connection it came on, so a test can tell multiplexed requests from pooled ones, and
the body bytes sent so far); ``injected()`` counts applied faults.

``delay`` (seconds) holds every request that long before it is forwarded, whatever its
rules: a high-latency link, paid once per request, and concurrently by requests in flight
together (as on one multiplexed HTTP/2 connection or on many HTTP/1.1 ones).

``per_connection_bps`` caps each client connection, as some registries and CDNs do: the
answer bodies sent on one connection (all its HTTP/2 streams together) are paced to that
many bytes per second by a token bucket (:class:`Pacer`), so only parallel connections
go faster.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import http
import http.cookiejar
import json
import random
import re
import shutil
import socket
import ssl
import struct
import tempfile
import termios
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h11
import httpx
import pytest
import trustme

__all__ = ["KINDS", "Fault", "FaultFront", "Hit", "Pacer", "fault_front_factory"]

KINDS = frozenset(
    {
        "reset", "truncate", "corrupt", "short_length", "long_length", "wrong_digest",
        "strip_digest", "reindent", "status", "status_after", "lost", "stall",
        "stall_body", "trickle", "html", "redirect", "redirect_upload", "ignore_range",
    }
)  # fmt: skip
_LOCAL = frozenset({"status", "html", "redirect"})  # answered without the upstream
_AFTER = frozenset({"status_after", "lost"})  # forwarded, answer replaced


def error_body(code: str = "UNAVAILABLE") -> bytes:
    """The body of an injected error: a distribution error with ``code``."""
    return json.dumps({"errors": [{"code": code, "message": "injected"}]},
                      separators=(",", ":")).encode()


ERROR_BODY = error_body()
PORTAL_BODY = b"<html><body>Welcome to the captive portal</body></html>"
# Connection-level headers: each hop has its own, and httpx or h11/h2 write them.
_HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
        b"trailer", b"upgrade", b"host", b"expect", b"http2-settings",
    }
)  # fmt: skip
_CHUNK = 65536
_H2_WINDOW = 1 << 20  # per stream: bounds what a client upload may queue here
_H2_CONNECTION_WINDOW = 16 << 20

Headers = list[tuple[bytes, bytes]]
_JSON: Headers = [(b"content-type", b"application/json")]


@dataclass
class Fault:
    """One rule: which requests (``method``, ``path``) get which fault (``kind``), how often."""

    kind: str
    method: str | None = None  # None: any method
    path: str | None = None  # regular expression searched in the path (no query); None: any
    header: tuple[str, str] | None = None  # (name, regular expression searched in its value)
    times: int = 1  # applications before the rule is spent; -1: forever
    after: int = 0  # matching requests let by untouched before the rule starts to apply
    offset: int | None = None  # body byte offset; None: random inside the body (seeded)
    status: int = 503  # "status", "status_after"
    retry_after: str | None = None  # "status", "status_after": Retry-After value
    code: str = "UNAVAILABLE"  # "status", "status_after": the error code of the body
    challenge: str | None = None  # "status", "status_after": WWW-Authenticate value
    seconds: float = 0.0  # "stall": before the head; "stall_body": after ``offset`` bytes
    rate: int = 400  # "trickle": body bytes per second
    location: str | None = None  # "redirect", "redirect_upload": base URL to send clients to

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}, expected one of {sorted(KINDS)}")
        if self.kind in ("redirect", "redirect_upload") and not self.location:
            raise ValueError(f"fault {self.kind!r} needs a location")
        if self.rate <= 0:
            raise ValueError("rate must be positive")


@dataclass
class Hit:
    """One request the front received, and what it did with it."""

    method: str
    path: str  # without the query
    status: int | None  # status sent to the client; None if no answer was sent
    fault: str | None  # kind of the fault applied, if any
    http_version: str  # "HTTP/1.1" or "HTTP/2"
    headers: dict[str, str]  # as received, lower-cased names (HTTP/2: :authority as host)
    query: str = ""
    connection: int = 0  # the client connection it came on, numbered from 0 as accepted
    sent: int = 0  # answer body bytes sent so far (counted as they are handed over)
    arrived: float = 0.0  # time.monotonic() when the request's head came in
    answered: float | None = None  # time.monotonic() when its status was sent; None: never


class Pacer:
    """A token bucket: how long to wait after sending ``n`` bytes to stay at ``rate``
    bytes per second, allowing bursts of ``burst`` bytes. ``clock`` gives seconds."""

    def __init__(self, rate: float, clock: Callable[[], float], burst: int = 256 * 1024):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate, self.clock, self.burst = rate, clock, burst
        self.tokens = float(burst)
        self.stamp = clock()

    def take(self, n: int) -> float:
        """Spend ``n`` bytes; the seconds to wait before sending more (the debt repaid)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - n
        self.stamp = now
        return max(0.0, -self.tokens / self.rate)


@dataclass
class _Rule:
    fault: Fault
    left: int
    passed: int = 0  # matching requests let by (``Fault.after``)


class _ClientGone(Exception):
    """The client went away (or broke its request) while the front was serving it."""


class _Upstream(Protocol):
    url: str
    ca_cert: str | None


class FaultFront:
    """A fault-injecting reverse proxy on 127.0.0.1 in front of ``upstream``.

    ``upstream_ca`` is the PEM CA of an https upstream. ``tls`` serves HTTPS with a
    certificate for 127.0.0.1 and localhost from a throwaway CA (``ca_cert``,
    ``cert_dir``, set by ``start()``), offering HTTP/2 unless ``http2`` is False.
    ``host_name`` is the name in ``host`` and ``url`` (``localhost`` gives a second
    origin on the same machine). ``seed`` seeds the random body offsets. ``delay``
    holds every request that many seconds before it is forwarded, with ``sleep`` (a
    test can pass its own, to see the delay applied without waiting for it).
    ``per_connection_bps`` paces each connection's answer bodies to that rate.
    """

    def __init__(
        self,
        upstream: str,
        *,
        upstream_ca: str | None = None,
        tls: bool = False,
        http2: bool = True,
        seed: int = 0,
        host_name: str = "127.0.0.1",
        delay: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        per_connection_bps: float | None = None,
    ):
        self.upstream = upstream.rstrip("/")
        parts = urlsplit(self.upstream)
        self._origin = f"{parts.scheme}://{parts.netloc}".lower()
        self.upstream_ca = upstream_ca
        self.tls = tls
        self.http2 = http2
        self.host_name = host_name
        if delay < 0:
            raise ValueError("delay must not be negative")
        self.delay, self._sleep = delay, sleep
        if per_connection_bps is not None and per_connection_bps <= 0:
            raise ValueError("per_connection_bps must be positive")
        self.per_connection_bps = per_connection_bps
        self.ca_cert: str | None = None
        self.cert_dir: str | None = None
        self._rng = random.Random(seed)  # used on the loop thread only
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._log: list[Hit] = []
        self._port: int | None = None
        self._tmp: str | None = None
        self._server_ssl: ssl.SSLContext | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._accepted = 0  # loop thread only: client connections so far
        self._client: httpx.AsyncClient | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Bind a free port on 127.0.0.1 and serve from a background thread."""
        if self._thread is not None:
            raise RuntimeError("fault front already started")
        self._ready.clear()
        self._error, self._port = None, None
        if self.tls:
            self._make_certificates()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(),), name="fault-front", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(15) or self._port is None:
            self.stop()
            raise RuntimeError(f"fault front did not start: {self._error!r}")

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop may have ended already
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(15)
        self._thread = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = self.ca_cert = self.cert_dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        if self._port is None:
            raise RuntimeError("fault front not started")
        return f"{self.host_name}:{self._port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    # -- rules and observation -----------------------------------------------

    def add(self, *faults: Fault) -> None:
        """Append rules; the first unspent matching rule applies to a request."""
        with self._lock:
            self._rules.extend(_Rule(f, f.times) for f in faults)

    def clear(self) -> None:
        """Drop every rule, spent or not, and the log (so ``injected()`` restarts at 0)."""
        with self._lock:
            self._rules.clear()
            self._log.clear()

    @property
    def log(self) -> list[Hit]:
        """A copy of the hits so far, oldest first."""
        with self._lock:
            return [replace(hit, headers=dict(hit.headers)) for hit in self._log]

    def injected(self) -> int:
        """How many faults were applied (since start or the last ``clear()``)."""
        with self._lock:
            return sum(1 for hit in self._log if hit.fault is not None)

    def _take(self, method: str, path: str, headers: dict[str, str]) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                fault = rule.fault
                if rule.left == 0 or (fault.method is not None and fault.method.upper() != method):
                    continue
                if fault.path is not None and not re.search(fault.path, path):
                    continue
                if fault.header is not None and not re.search(
                        fault.header[1], headers.get(fault.header[0].lower(), "")):
                    continue
                if rule.passed < fault.after:
                    rule.passed += 1
                    continue
                if rule.left > 0:
                    rule.left -= 1
                return rule
        return None

    def _give_back(self, rule: _Rule) -> None:
        with self._lock:
            if rule.left >= 0:
                rule.left += 1

    def _note(self, hit: Hit, *, status: int | None = None, fault: str | None = None) -> None:
        # Noted before the bytes go out, so a client that got them sees the log up to date.
        with self._lock:
            if status is not None:
                hit.status, hit.answered = status, time.monotonic()
            if fault is not None:
                hit.fault = fault

    # -- the loop thread -----------------------------------------------------

    def _make_certificates(self) -> None:
        self._tmp = tempfile.mkdtemp(prefix="occystrap-fault-front-")
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        ca_path = Path(self._tmp) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        (Path(self._tmp) / "certs").mkdir()
        ca.cert_pem.write_to_path(str(Path(self._tmp) / "certs" / "ca.crt"))
        self.ca_cert, self.cert_dir = str(ca_path), str(Path(self._tmp) / "certs")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(ctx)
        ctx.set_alpn_protocols(["h2", "http/1.1"] if self.http2 else ["http/1.1"])
        self._server_ssl = ctx

    async def _main(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=self.upstream_ca) if self.upstream_ca else True
            )
            self._client = httpx.AsyncClient(
                verify=verify,
                trust_env=False,
                timeout=httpx.Timeout(60, connect=10),
                follow_redirects=False,
                # Cookies are the client's business: keep none here, or clients would share them.
                cookies=http.cookiejar.CookieJar(
                    http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
                ),
            )
            for name in list(self._client.headers):  # send the client's headers, not httpx's
                del self._client.headers[name]
            server = await asyncio.start_server(
                self._on_connect, "127.0.0.1", 0, ssl=self._server_ssl
            )
            self._port = server.sockets[0].getsockname()[1]
        except OSError as exc:  # start() reports it (a bind error, an unreadable CA file)
            self._error = exc
            return
        finally:
            self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._client.aclose()

    def _pacer(self) -> Pacer | None:
        """A new connection's pacer (on the loop thread), None when uncapped."""
        if self.per_connection_bps is None:
            return None
        # A tenth of a second's worth of burst: a loop waking late (a busy machine) then
        # catches up instead of losing throughput, as a CDN's token bucket allows.
        rate = self.per_connection_bps
        return Pacer(rate, asyncio.get_running_loop().time, burst=max(_CHUNK, int(rate / 10)))

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number, self._accepted = self._accepted, self._accepted + 1
        # A task of our own: start_server's would complain when stop() cancels it.
        task = asyncio.get_running_loop().create_task(self._connection(reader, writer, number))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
                await _H2Connection(self, reader, writer, number).run()
            else:
                await self._serve_h1(reader, writer, number)
        except (OSError, _ClientGone, h11.ProtocolError, h2.exceptions.ProtocolError):
            pass  # the client broke the connection: nothing left to answer
        finally:
            writer.close()

    async def _serve_h1(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        conn = h11.Connection(h11.SERVER)
        pacer = self._pacer()
        while True:
            try:
                event = await _h11_event(conn, reader)
            except h11.RemoteProtocolError:
                # Not HTTP (e.g. a TLS probe of a client trying https first): say so, then hang up.
                with contextlib.suppress(h11.ProtocolError):
                    writer.write(
                        conn.send(h11.Response(status_code=400, headers=[("Content-Length", "0")]))
                        or b""
                    )
                return
            if not isinstance(event, h11.Request):
                return
            exchange = _H1Exchange(conn, reader, writer, event)
            exchange.connection = number
            exchange.pacer = pacer
            await self._serve(exchange)
            if exchange.ended or conn.our_state is not h11.DONE:
                return
            async for _ in exchange.body():  # whatever the handler did not read
                pass
            if conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    # -- one request ---------------------------------------------------------

    async def _serve(self, ex: _Exchange) -> None:
        path, _, query = ex.target.partition("?")
        received: dict[str, str] = {}
        for name, value in ex.headers:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            received[key] = f"{received[key]}, {text}" if key in received else text
        hit = Hit(ex.method, path, None, None, ex.http_version, received, query, ex.connection,
                  arrived=time.monotonic())
        with self._lock:
            self._log.append(hit)
        rule = self._take(ex.method, path, received)
        try:
            if self.delay:
                await self._sleep(self.delay)
            await self._answer(ex, hit, rule.fault if rule else None)
        except (OSError, _ClientGone, h11.ProtocolError, h2.exceptions.ProtocolError):
            await ex.abandon()
        finally:
            if rule is not None and hit.fault is None:
                self._give_back(rule)

    async def _answer(self, ex: _Exchange, hit: Hit, fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        if fault is not None and kind == "stall":
            self._note(hit, fault="stall")
            await asyncio.sleep(fault.seconds)
            if not ex.alive():
                return
        if fault is not None and kind in _LOCAL:
            async for _ in ex.body():
                pass
            self._note(hit, fault=fault.kind)
            await self._local_answer(ex, hit, fault)
            return
        strip_range = kind == "ignore_range" and _get(ex.headers, b"range") is not None
        try:
            response = await self._forward(ex, strip_range)
        except httpx.HTTPError as exc:
            if ex.gone:
                raise _ClientGone from exc
            body = json.dumps(
                {"errors": [{"code": "UNAVAILABLE", "message": f"upstream: {exc!r}"}]}
            ).encode()
            await self._send_whole(ex, hit, 502, _JSON, body)
            return
        try:
            if fault is not None and kind in _AFTER:
                await response.aread()
                self._note(hit, fault=fault.kind)
                if kind == "lost":
                    await ex.reset()
                else:
                    await self._send_whole(ex, hit, fault.status, _error_headers(fault),
                                           error_body(fault.code))
                return
            if kind == "ignore_range":
                if strip_range:
                    self._note(hit, fault=kind)
                fault = None
            await self._relay(ex, hit, response, fault)
        except httpx.HTTPError:
            await ex.reset()  # the upstream broke mid-answer: so does the front
        finally:
            await response.aclose()

    async def _forward(self, ex: _Exchange, strip_range: bool = False) -> httpx.Response:
        assert self._client is not None
        dropped = _HOP_BY_HOP | {b"range"} if strip_range else _HOP_BY_HOP
        headers = [(k, v) for k, v in ex.headers if k.lower() not in dropped]
        request = self._client.build_request(
            ex.method,
            self.upstream + ex.target,
            headers=headers,
            content=ex.body() if ex.has_body else None,
        )
        return await self._client.send(request, stream=True)

    async def _local_answer(self, ex: _Exchange, hit: Hit, fault: Fault) -> None:
        if fault.kind == "status":
            await self._send_whole(ex, hit, fault.status, _error_headers(fault),
                                   error_body(fault.code))
        elif fault.kind == "html":
            await self._send_whole(
                ex, hit, 200, [(b"content-type", b"text/html; charset=utf-8")], PORTAL_BODY
            )
        else:
            assert fault.location is not None
            base, _, query = fault.location.partition("?")  # a presigned URL's signature
            location = base.rstrip("/") + ex.target
            if query:
                location += ("&" if "?" in ex.target else "?") + query
            await self._send_whole(ex, hit, 307, [(b"location", location.encode())], b"")

    async def _send_whole(
        self, ex: _Exchange, hit: Hit, status: int, headers: Headers, body: bytes
    ) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        self._note(hit, status=status)
        await ex.send_head(status, headers)
        if body and ex.method != "HEAD":
            await ex.send(body)
        await ex.end()

    async def _relay(
        self, ex: _Exchange, hit: Hit, response: httpx.Response, fault: Fault | None
    ) -> None:
        status = response.status_code
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]
        if fault is not None and not 200 <= status < 300:
            fault = None
        upload_base = (
            fault.location if fault is not None and fault.kind == "redirect_upload" else None
        )
        headers = self._rewrite_locations(headers, upload_base)
        bodyless = ex.method == "HEAD" or status in (204, 304)
        announced = _get(headers, b"content-length")
        plan = _Plan(None, headers, response.aiter_raw())
        if fault is not None:
            whole = None
            if not bodyless and (announced is None or fault.kind == "reindent"):
                whole = await response.aread()  # unknown length, or a manifest to reindent
            if whole is not None:
                plan.chunks = _once(whole)
            length = 0 if bodyless else len(whole) if whole is not None else int(announced or 0)
            plan = self._plan(fault, plan, length, bodyless, whole)
        self._note(hit, status=status, fault=plan.kind)
        await ex.send_head(status, plan.headers)
        await _pump(ex, plan, hit)
        await {"end": ex.end, "close": ex.close, "reset": ex.reset}[plan.finish]()

    def _plan(
        self, fault: Fault, plan: _Plan, length: int, bodyless: bool, whole: bytes | None
    ) -> _Plan:
        """How to apply a response fault; ``plan`` (unchanged, no kind) when it would
        change nothing."""
        kind, headers = fault.kind, plan.headers
        empty = bodyless or length == 0
        if (empty and kind in ("truncate", "corrupt", "short_length", "trickle")) or (
            bodyless and kind in ("long_length", "reindent")
        ):
            return plan
        faulty = _Plan(kind, headers, plan.chunks)
        if kind in ("reset", "truncate", "corrupt", "short_length"):
            cut = 0 if empty else self._offset(fault, length, length - 1)
            if kind == "corrupt":
                faulty.flip = cut
            else:
                faulty.limit = cut
            if kind == "short_length":
                faulty.headers = _set(headers, b"content-length", str(cut).encode())
            faulty.finish = {"reset": "reset", "truncate": "close"}.get(kind, "end")
        elif kind == "long_length":
            faulty.headers, faulty.finish = (
                _set(headers, b"content-length", str(length + 1).encode()),
                "close",
            )
        elif kind in ("wrong_digest", "strip_digest"):
            digest = _get(headers, b"docker-content-digest")
            if digest is None:
                return plan
            other = b"sha256:" + hashlib.sha256(b"not " + digest).hexdigest().encode()
            faulty.headers = _set(
                headers, b"docker-content-digest", other if kind == "wrong_digest" else None
            )
        elif kind == "reindent":
            try:
                body = json.dumps(json.loads(whole or b""), indent=3).encode()
            except ValueError:
                return plan
            faulty.chunks = _once(body)
            faulty.headers = _set(headers, b"content-length", str(len(body)).encode())
        elif kind == "stall_body":
            faulty.pause_at = 0 if empty else self._offset(fault, length, length)
            faulty.pause = fault.seconds
        elif kind == "trickle":
            faulty.rate = fault.rate
        elif kind == "redirect_upload" and _get(headers, b"location") is None:
            return plan
        return faulty

    def _offset(self, fault: Fault, length: int, top: int) -> int:
        """``fault.offset`` capped to ``top``, or a seeded random offset inside the body."""
        return (
            min(max(fault.offset, 0), top)
            if fault.offset is not None
            else self._rng.randrange(length)
        )

    def _rewrite_locations(self, headers: Headers, upload_base: str | None) -> Headers:
        out = []
        for name, value in headers:
            if name.lower() == b"location":
                text = value.decode("latin-1")
                if upload_base is not None:
                    parts = urlsplit(text)
                    text = (
                        upload_base.rstrip("/")
                        + parts.path
                        + (f"?{parts.query}" if parts.query else "")
                    )
                elif text.lower().startswith(self._origin):
                    text = self.url + text[len(self._origin) :]
                value = text.encode("latin-1")
            out.append((name, value))
        return out


@dataclass
class _Plan:
    """What to send for one answer: head, which body bytes and how, and how to end."""

    kind: str | None  # the fault applied, None for a plain relay
    headers: Headers
    chunks: AsyncIterator[bytes]
    limit: int | None = None  # send only this many body bytes
    flip: int | None = None  # XOR 0xFF the byte at this offset
    pause_at: int | None = None  # wait ``pause`` seconds once this many bytes are sent
    pause: float = 0.0
    rate: int | None = None  # bytes per second
    finish: str = "end"  # "end": complete; "close": FIN / END_STREAM; "reset": RST / RST_STREAM


async def _pump(ex: _Exchange, plan: _Plan, hit: Hit) -> None:
    """Send the planned body bytes of ``plan.chunks`` (counted in ``hit.sent``)."""
    loop = asyncio.get_running_loop()
    step = max(1, plan.rate // 20) if plan.rate else _CHUNK  # trickle: ~20 writes a second
    started, sent = loop.time(), 0
    pause_at = plan.pause_at
    async for chunk in plan.chunks:
        if plan.limit is not None:
            chunk = chunk[: plan.limit - sent]
        if plan.flip is not None and sent <= plan.flip < sent + len(chunk):
            changed = bytearray(chunk)
            changed[plan.flip - sent] ^= 0xFF
            chunk = bytes(changed)
        while chunk:
            if pause_at is not None and sent == pause_at:
                await ex.flush()
                await asyncio.sleep(plan.pause)
                pause_at = None
            size = min(len(chunk), step, pause_at - sent if pause_at is not None else len(chunk))
            hit.sent = sent + size  # before they go out, as _note does
            await ex.send(chunk[:size])
            chunk, sent = chunk[size:], sent + size
            if ex.pacer is not None:
                await asyncio.sleep(ex.pacer.take(size))
            if plan.rate:
                await asyncio.sleep(max(0.0, started + sent / plan.rate - loop.time()))
        if plan.limit is not None and sent >= plan.limit:
            break
    if pause_at is not None:  # at (or past) the end of the body
        await ex.flush()
        await asyncio.sleep(plan.pause)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


def _get(headers: Headers, name: bytes) -> bytes | None:
    """The first ``name`` (lower-case) header's value."""
    return next((v for k, v in headers if k.lower() == name), None)


def _set(headers: Headers, name: bytes, value: bytes | None) -> Headers:
    """``headers`` with the ``name`` (lower-case) header set to ``value`` in place
    (None: removed)."""
    at = next((i for i, (k, _) in enumerate(headers) if k.lower() == name), len(headers))
    out = [(k, v) for k, v in headers if k.lower() != name]
    if value is not None:
        out.insert(min(at, len(out)), (headers[at][0] if at < len(headers) else name, value))
    return out


def _error_headers(fault: Fault) -> Headers:
    retry = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after is not None else []
    if fault.challenge is not None:
        retry.append((b"www-authenticate", fault.challenge.encode()))
    return [*_JSON, *retry]


async def _h11_event(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> type[h11.NEED_DATA | h11.PAUSED] | h11.Event:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(_CHUNK))


def _unsent(writer: asyncio.StreamWriter) -> int:
    """Bytes the kernel still holds for the peer (unsent or unacknowledged); 0 if unknown."""
    sock = writer.get_extra_info("socket")
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (AttributeError, OSError):
        return 0


async def _flushed(writer: asyncio.StreamWriter, timeout: float = 2.0) -> None:
    """Wait until what was written reached the peer, so an abort cannot discard it."""
    await writer.drain()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    quiet = 0
    while quiet < 2 and loop.time() < deadline:  # twice: the loop may still be moving bytes
        await asyncio.sleep(0.002)
        quiet = (
            quiet + 1 if not writer.transport.get_write_buffer_size() and not _unsent(writer) else 0
        )


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) rather than a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Exchange(ABC):
    """One request and its answer, over HTTP/1.1 or an HTTP/2 stream."""

    http_version: str
    method: str
    target: str  # path and query
    headers: Headers  # as received, without HTTP/2 pseudo-headers
    has_body: bool
    gone = False  # the client left or broke its request
    connection = 0  # the number of the client connection it came on
    pacer: Pacer | None = None  # the connection's throughput cap

    @abstractmethod
    def body(self) -> AsyncIterator[bytes]:
        """The request body; raises ``_ClientGone`` if the client breaks it off."""

    @abstractmethod
    async def send_head(self, status: int, headers: Headers) -> None: ...

    @abstractmethod
    async def send(self, data: bytes) -> None: ...

    @abstractmethod
    async def flush(self) -> None:
        """Wait until the bytes sent so far left the front."""

    @abstractmethod
    async def end(self) -> None:
        """Complete the answer."""

    @abstractmethod
    async def close(self) -> None:
        """End the answer where it is, cleanly (FIN, or END_STREAM)."""

    @abstractmethod
    async def reset(self) -> None:
        """Break the answer off (RST, or RST_STREAM)."""

    @abstractmethod
    async def abandon(self) -> None:
        """Give up on this exchange after an error, leaving nothing half-sent reusable."""

    @abstractmethod
    def alive(self) -> bool:
        """Whether the client may still be waiting for the answer."""


class _H1Exchange(_Exchange):
    http_version = "HTTP/1.1"

    def __init__(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: h11.Request,
    ):
        self.conn, self.reader, self.writer = conn, reader, writer
        self.method = request.method.decode("ascii")
        self.target = request.target.decode("latin-1")
        self.headers = list(request.headers.raw_items())
        length = _get(self.headers, b"content-length")
        self.has_body = _get(self.headers, b"transfer-encoding") is not None or length not in (
            None,
            b"0",
        )
        self.ended = False  # the connection was closed or aborted: no next request on it

    async def body(self) -> AsyncIterator[bytes]:
        if self.conn.they_are_waiting_for_100_continue:
            await self._write(h11.InformationalResponse(status_code=100, headers=[]))
        while self.conn.their_state is h11.SEND_BODY:
            try:
                event = await _h11_event(self.conn, self.reader)
            except (OSError, h11.ProtocolError) as exc:
                self.gone = True
                raise _ClientGone from exc
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif not isinstance(event, h11.EndOfMessage):
                self.gone = True
                raise _ClientGone(f"request body broken off: {event!r}")

    async def _write(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def send_head(self, status: int, headers: Headers) -> None:
        await self._write(h11.Response(status_code=status, headers=headers, reason=_reason(status)))

    async def send(self, data: bytes) -> None:
        await self._write(h11.Data(data=data))

    async def flush(self) -> None:
        await _flushed(self.writer)

    async def end(self) -> None:
        await self._write(h11.EndOfMessage())

    async def close(self) -> None:
        self.ended = True
        await self.writer.drain()
        self.writer.close()  # sends what is buffered, then FIN (TLS: close_notify first)

    async def reset(self) -> None:
        self.ended = True
        with contextlib.suppress(OSError):
            await _flushed(self.writer)
        _abort(self.writer)

    async def abandon(self) -> None:
        self.ended = True
        _abort(self.writer)

    def alive(self) -> bool:
        return not (
            self.reader.at_eof() or self.reader.exception() is not None or self.writer.is_closing()
        )


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class _H2Connection:
    """Serves one HTTP/2 connection: a reader loop, and one task per stream."""

    def __init__(
        self,
        front: FaultFront,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        number: int,
    ):
        self.front, self.reader, self.writer, self.number = front, reader, writer, number
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.streams: dict[int, _H2Exchange] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.window = asyncio.Event()  # set (and replaced) whenever the peer opens a window
        self.closed = False
        self.pacer = front._pacer()  # shared by the connection's streams

    def write(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.writer.write(data)

    async def flush(self) -> None:
        self.write()
        await self.writer.drain()

    def wake(self) -> None:
        self.window.set()
        self.window = asyncio.Event()

    async def run(self) -> None:
        self.h2.initiate_connection()
        codes = h2.settings.SettingCodes
        self.h2.update_settings(
            {codes.INITIAL_WINDOW_SIZE: _H2_WINDOW, codes.MAX_CONCURRENT_STREAMS: 256}
        )
        self.h2.increment_flow_control_window(_H2_CONNECTION_WINDOW - 65535)
        self.write()
        try:
            while not self.closed:
                data = await self.reader.read(_CHUNK)
                if not data:
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    self.write()  # the GOAWAY h2 queued
                    break
                for event in events:
                    self.dispatch(event)
                self.write()  # no drain here: the reader must keep reading window updates
        finally:
            self.closed = True
            self.wake()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = [(bytes(k), bytes(v)) for k, v in event.headers or []]
            ex = _H2Exchange(self, event.stream_id, headers, ended=event.stream_ended is not None)
            ex.connection = self.number
            ex.pacer = self.pacer
            self.streams[event.stream_id] = ex
            ex.task = asyncio.create_task(self.serve(ex))
            self.tasks.add(ex.task)
            ex.task.add_done_callback(self.tasks.discard)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None and not stream.finished:
                stream.queue.put_nowait((event.data or b"", event.flow_controlled_length or 0))
            else:  # nobody reads it: free the window right away
                self.ack(event.stream_id or 0, event.flow_controlled_length or 0)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.client_ended = True
                stream.queue.put_nowait(None)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id or 0, None)
            if stream is not None:
                stream.gone = True
                if stream.task is not None:
                    stream.task.cancel()
            self.wake()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.wake()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed = True

    async def serve(self, ex: _H2Exchange) -> None:
        try:
            await self.front._serve(ex)
        finally:
            ex.finished = True
            while not ex.queue.empty():
                item = ex.queue.get_nowait()
                if item is not None:
                    self.ack(ex.stream_id, item[1])
            self.streams.pop(ex.stream_id, None)
            if not ex.gone and not self.closed:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    # Answer sent while the client still uploads: stop the upload.
                    if not ex.client_ended:
                        self.h2.reset_stream(ex.stream_id, h2.errors.ErrorCodes.NO_ERROR)
                self.write()

    def ack(self, stream_id: int, size: int) -> None:
        if size and not self.closed:
            self.h2.acknowledge_received_data(size, stream_id)
            self.write()


class _H2Exchange(_Exchange):
    http_version = "HTTP/2"

    def __init__(self, owner: _H2Connection, stream_id: int, headers: Headers, *, ended: bool):
        self.owner, self.stream_id = owner, stream_id
        pseudo = {k: v for k, v in headers if k.startswith(b":")}
        self.method = pseudo.get(b":method", b"GET").decode("ascii")
        self.target = pseudo.get(b":path", b"/").decode("latin-1")
        self.headers = [(k, v) for k, v in headers if not k.startswith(b":")]
        if b":authority" in pseudo and _get(self.headers, b"host") is None:
            self.headers.insert(0, (b"host", pseudo[b":authority"]))
        self.has_body = not ended
        self.client_ended = ended  # the client sent END_STREAM
        self.queue: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.finished = False

    async def body(self) -> AsyncIterator[bytes]:
        while self.has_body:
            item = await self.queue.get()
            if item is None:
                self.has_body = False  # read to the end: later calls yield nothing
                return
            data, size = item
            self.owner.ack(self.stream_id, size)  # window opens as the upstream takes the bytes
            yield data

    def _check(self) -> None:
        if self.gone or self.owner.closed:
            raise _ClientGone(f"stream {self.stream_id} is gone")

    async def _do(self, action: Callable[..., None], *args: object) -> None:
        self._check()
        try:
            action(self.stream_id, *args)
        except h2.exceptions.ProtocolError as exc:
            raise _ClientGone from exc
        await self.owner.flush()

    async def send_head(self, status: int, headers: Headers) -> None:
        head = [
            (b":status", str(status).encode()),
            *((k.lower(), v) for k, v in headers),
        ]  # h2 wants lower case
        await self._do(self.owner.h2.send_headers, head)

    async def send(self, data: bytes) -> None:
        while data:
            self._check()
            window = self.owner.window
            try:
                size = min(len(data), self.owner.h2.local_flow_control_window(self.stream_id),
                           self.owner.h2.max_outbound_frame_size)  # fmt: skip
            except h2.exceptions.ProtocolError as exc:
                raise _ClientGone from exc
            if size <= 0:
                await window.wait()
                continue
            piece, data = data[:size], data[size:]
            await self._do(self.owner.h2.send_data, piece)

    async def flush(self) -> None:
        await self.owner.flush()

    async def end(self) -> None:
        await self._do(self.owner.h2.end_stream)

    async def close(self) -> None:
        await self.end()

    async def reset(self) -> None:
        await self._do(self.owner.h2.reset_stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
        self.gone = True

    async def abandon(self) -> None:
        if not self.gone and not self.owner.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.owner.h2.reset_stream(self.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            self.owner.write()
        self.gone = True

    def alive(self) -> bool:
        return not (self.gone or self.owner.closed)


@pytest.fixture
def fault_front_factory() -> Iterator[Callable[..., FaultFront]]:
    """Build started ``FaultFront``s, stopped at teardown.

    Call it with an upstream URL or a running registry (anything with ``url`` and
    ``ca_cert``), then ``FaultFront`` keyword arguments.
    """
    fronts: list[FaultFront] = []

    def make(upstream: str | _Upstream, **kwargs: Any) -> FaultFront:
        if not isinstance(upstream, str):
            kwargs.setdefault("upstream_ca", upstream.ca_cert)
            upstream = upstream.url
        front = FaultFront(upstream, **kwargs)
        fronts.append(front)
        front.start()
        return front

    yield make
    for front in reversed(fronts):
        front.stop()
