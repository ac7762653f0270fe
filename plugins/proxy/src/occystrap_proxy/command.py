"""``occystrap proxy``: the command line, the listener and a graceful stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, Callable

import click

from occystrap_core.clitypes import Finite, NamedPath
from occystrap_core.context import Context
from occystrap_core.errors import UsageError
from occystrap_core.transport.tlscontext import load_key_pair
from occystrap_core.types import Credentials
from occystrap_core.uri import convert_options, split_filter

from .numbers import at_most

WORKERS = 64  # threads for blocking work, and as many for manifest requests (copies
# among them, limited by --concurrency)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``PORT`` (on 127.0.0.1)."""
    host, port = "127.0.0.1", text
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise UsageError(f"--listen {text!r}: expected [IPV6]:PORT")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    number = at_most(port, 65536)
    if number is None or number > 65535:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT with a port up to 65535")
    return host or "127.0.0.1", number


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _check_filters(ctx: Context, filters: tuple[str, ...]) -> None:
    """Unknown filters and bad options fail now, not at the first push."""
    for spec in filters:
        name, raw = split_filter(spec)
        convert_options(ctx.plugins.filters.get(name).item.options, raw, f"filter {name!r}")


def _credentials(username: str | None, password: str | None) -> Credentials | None:
    if username is None and password is None:
        return None
    return Credentials(username, password, source="--upstream-username")


def _lookup(ctx: Context, host: str, role: str) -> Callable[[str], Credentials | None]:
    """The credentials of ``host`` for a repository, in ``role`` whether the proxy reads
    or writes it (the downstream is an output: ``--dest-*``)."""
    return lambda repository: ctx.credentials(host, role, repository)


@click.command("proxy")
@click.option("-l", "--listen", default="127.0.0.1:5050", show_default=True,
              help="HOST:PORT (or [IPV6]:PORT) to serve on.")
@click.option("-d", "--downstream", required=True, metavar="HOST[/PREFIX]",
              help="Registry (and repository prefix) that receives and serves the images.")
@click.option("-u", "--upstream", metavar="[USER:PASS@]HOST",
              help="Pull-through: fetch what the downstream lacks from this registry.")
@click.option("--upstream-username", envvar="OCCYSTRAP_UPSTREAM_USERNAME",
              help="Upstream username (else the usual credential sources).")
@click.option("--upstream-password", envvar="OCCYSTRAP_UPSTREAM_PASSWORD",
              help="Upstream password.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="FILTER",
              help="NAME[:key=value,...] applied to every image; repeatable.")
@click.option("-c", "--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Images processed at once (pushes and pulls).")
@click.option("--freshness", type=Finite(min=0), default=300.0, show_default=True,
              metavar="SECONDS", help="Pull-through: how long a tag's upstream digest is "
                                      "trusted before the upstream is asked again.")
@click.option("--keep-blobs", type=Finite(min=0), default=600.0, show_default=True,
              metavar="SECONDS", help="How long a pushed blob stays on disk after its last use.")
@click.option("--htpasswd", type=NamedPath(exists=True, dir_okay=False),
              help="Require HTTP Basic from clients: USER:BCRYPT-HASH lines (htpasswd -B).")
@click.option("--tls-cert", type=NamedPath(exists=True, dir_okay=False),
              help="Serve HTTPS with this certificate (PEM; with --tls-key).")
@click.option("--tls-key", type=NamedPath(exists=True, dir_okay=False),
              help="Key of --tls-cert.")
@click.option("--events", "events_path", default="-", show_default=True, metavar="FILE",
              type=NamedPath(dir_okay=False, allow_dash=True),
              help="JSON-lines access and event log; - for stderr.")
@click.option("--shutdown-timeout", type=click.IntRange(min=0), default=300,
              show_default=True, metavar="SECONDS",
              help="On SIGTERM or Ctrl-C, how long requests in flight may take to finish.")
@click.pass_obj
def proxy(ctx: Context, listen: str, downstream: str, upstream: str | None,
          upstream_username: str | None, upstream_password: str | None,
          filters: tuple[str, ...], concurrency: int, freshness: float, keep_blobs: float,
          htpasswd: str | None, tls_cert: str | None, tls_key: str | None, events_path: str,
          shutdown_timeout: int) -> None:
    """Serve a registry front that filters images on the way.

    Clients push to it and each image (or multi-platform index) goes through the
    filters to DOWNSTREAM; the push succeeds once the downstream holds the result.
    With --upstream, a pull the downstream cannot serve is fetched from the upstream,
    filtered, pushed downstream and served. See docs/proxy.md.
    """
    import uvicorn

    from .app import ProxyApp
    from .auth import Authenticator
    from .events import EventLog
    from .service import ProxyService, Remote
    from .store import BlobStore

    host, port = parse_listen(listen)
    if bool(tls_cert) != bool(tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if tls_cert and tls_key:  # now, not once uvicorn starts: after "listening"
        load_key_pair(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), tls_cert, tls_key)
    _check_filters(ctx, filters)
    auth = Authenticator(htpasswd) if htpasswd else None
    down = Remote.parse(downstream, "--downstream")
    down = Remote(down.host, down.prefix, lookup=_lookup(ctx, down.host, "output"))
    up = None
    if upstream:
        up = Remote.parse(upstream, "--upstream")
        given = _credentials(upstream_username, upstream_password)
        up = Remote(up.host, up.prefix, given or up.credentials,
                    lookup=_lookup(ctx, up.host, "input"))
    sock = _listen(host, port)
    stream: IO[str] = sys.stderr if events_path == "-" else open(  # noqa: SIM115
        events_path, "a", encoding="utf-8")
    events = EventLog(stream)
    store = BlobStore(os.path.join(ctx.temp_dir, "proxy"), keep_blobs)
    service = ProxyService(ctx, down, up, filters, store, events, freshness=freshness,
                           limit=threading.BoundedSemaphore(concurrency))
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="proxy")
    images = ThreadPoolExecutor(WORKERS, thread_name_prefix="proxy-image")
    app = ProxyApp(service, events, pool, auth, sweep_every=max(1.0, min(60.0, keep_blobs / 4)),
                   images=images)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=shutdown_timeout,
                            ssl_certfile=tls_cert, ssl_keyfile=tls_key)
    server = uvicorn.Server(config)
    bound = sock.getsockname()
    events.emit("listening", address=f"{bound[0]}:{bound[1]}", port=bound[1],
                tls=bool(tls_cert), downstream=str(down), upstream=str(up) if up else None,
                filters=list(filters))
    stopped: list[int] = []
    try:
        with _signals_recorded(stopped):
            server.run(sockets=[sock])
    finally:
        ctx.cancel.set()  # whatever still runs after the grace period stops at its next chunk
        images.shutdown(wait=True, cancel_futures=True)
        pool.shutdown(wait=True, cancel_futures=True)
        sock.close()
        events.emit("stopped", signal=signal.Signals(stopped[0]).name if stopped else None,
                    **ctx.stats.values)
        if stream is not sys.stderr:
            stream.close()


@contextlib.contextmanager
def _signals_recorded(stopped: list[int]) -> Any:
    """While serving, SIGINT and SIGTERM are uvicorn's (a graceful stop); it hands them
    on when it is done, and this notes them instead of failing the command."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: stopped.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def build() -> click.Command:
    return proxy
