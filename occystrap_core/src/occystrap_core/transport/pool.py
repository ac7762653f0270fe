"""Builds and caches the run's httpx clients from plugin client factories.

A plugin's :class:`~occystrap_core.types.ClientFactory` only says what is specific
to it (base URL, auth, headers). Everything that must hold for all traffic is
added here: the network transport (TLS, HTTP/2, pool limits, proxies) from
``occystrap_base_transport`` and the layers from ``occystrap_transport_layers``
(the core's rate limiter and retries among them).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import httpx

from .. import __version__
from ..types import ClientRequest, Credentials

if TYPE_CHECKING:
    from ..context import Context

USER_AGENT = f"occystrap/{__version__}"


class _NoCookies(httpx.Cookies):
    """A jar that never takes a cookie.

    Registry clients keep none (Docker's, containerd's and skopeo's Go clients have no
    jar), and httpx wraps every response in urllib's request and response shims for
    its jar, whether or not it sets a cookie: 13 % of a HEAD's client CPU.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        pass


_NO_COOKIES = _NoCookies()


class Client(httpx.Client):
    """An httpx client without cookies (see :class:`_NoCookies`)."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise TypeError("occystrap's HTTP clients keep no cookies")


class ClientPool:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._clients: dict[tuple, httpx.Client] = {}
        self._lock = threading.Lock()

    def get(self, factory: str, host: str, *, scheme: str, credentials: Credentials | None,
            scope: dict[str, Any], tls_verify: bool = True) -> httpx.Client:
        key = (factory, host, scheme, credentials.identity if credentials else None,
               tuple(sorted(scope.items())), tls_verify)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = self._build(factory, host, scheme, credentials,
                                                          scope, tls_verify)
            return client

    def _build(self, factory: str, host: str, scheme: str, credentials: Credentials | None,
               scope: dict[str, Any], tls_verify: bool) -> httpx.Client:
        entry = self.ctx.plugins.client_factories.get(factory)
        # The network first: a test's base transport may install the run's clock.
        transport = self.transport(host, tls_verify)
        request = ClientRequest(factory=factory, host=host, scheme=scheme,
                                credentials=credentials, scope=scope)
        try:
            config = entry.item.configure(request, self.ctx)
        except BaseException:
            transport.close()
            raise
        settings = self.ctx.settings
        timeout = httpx.Timeout(config.timeout or settings.read_timeout,
                                connect=settings.connect_timeout)
        return Client(
            transport=transport,
            base_url=config.base_url or f"{scheme}://{host}",
            auth=config.auth,
            headers={"User-Agent": USER_AGENT, **config.headers},
            timeout=timeout,
            follow_redirects=True,
            event_hooks={k: list(v) for k, v in config.event_hooks.items()},
        )

    def transport(self, host: str, tls_verify: bool = True) -> httpx.BaseTransport:
        """The layered transport for ``host``: base transport, then each layer."""
        ctx = self.ctx
        transport = ctx.plugins.hook.occystrap_base_transport(host=host, ctx=ctx,
                                                              tls_verify=tls_verify)
        for layer in ctx.plugins.transport_layers():
            transport = layer.wrap(transport, host, ctx)
        return transport

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
