"""The default network transport under every client (TLS, HTTP/2, pool limits)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import hookimpl

if TYPE_CHECKING:
    import httpx

    from ..context import Context


@hookimpl(trylast=True)
def occystrap_base_transport(host: str, ctx: Context) -> httpx.BaseTransport:
    import httpx

    s = ctx.settings
    verify: object = s.ca_cert or True
    cert = (s.client_cert, s.client_key) if s.client_cert and s.client_key else s.client_cert
    return httpx.HTTPTransport(
        verify=verify, cert=cert, http2=s.http2,
        limits=httpx.Limits(max_connections=s.max_connections,
                            max_keepalive_connections=s.max_connections),
    )
