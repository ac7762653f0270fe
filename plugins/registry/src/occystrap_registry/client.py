"""The registry client factory and a small wrapper for one repository's API calls.

HTTP clients come from the core (``ctx.http_client``) so that retries, rate
limits, TLS and HTTP/2 apply; this module only adds auth and turns registry
answers into occystrap errors that name the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import httpx

from occystrap_core.errors import OccystrapError, TransportError
from occystrap_core.oci.reference import Reference
from occystrap_core.transport.auth import RegistryAuth
from occystrap_core.transport.clock import get_clock
from occystrap_core.transport.errors import html_page, status_error
from occystrap_core.types import ClientConfig, ClientRequest, Credentials, ResolvedURI, Role

if TYPE_CHECKING:
    from occystrap_core.context import Context

FACTORY = "registry"


def configure(request: ClientRequest, ctx: Context) -> ClientConfig:
    return ClientConfig(auth=RegistryAuth(request.credentials, clock=get_clock(ctx),
                                          host=request.host),
                        headers={"Docker-Distribution-API-Version": "registry/2.0"})


def api_root(client: httpx.Client) -> str:
    """The client's base URL without its trailing slash, for :func:`absolute`."""
    return str(client.base_url).rstrip("/")


def absolute(root: str, url: str) -> str:
    """``url`` made absolute against ``root`` (:func:`api_root`) when it is a path: httpx
    parses a relative URL, then the merged one again (a tenth of building a HEAD)."""
    return root + url if url[:1] == "/" and url[:2] != "//" else url


class Repository:
    """One repository on one registry, with the run's shared client for that registry."""

    def __init__(self, ctx: Context, ref: Reference, uri: ResolvedURI, role: Role):
        self.ctx = ctx
        self.ref = ref
        self.host = ref.api_host
        self.path = ref.path
        insecure = bool(uri.options.get("insecure")) or ctx.settings.insecure
        self.scheme = "http" if insecure else "https"
        self.credentials: Credentials | None = uri.credentials or ctx.credentials(
            ref.domain, role, ref.path)
        self.client = ctx.http_client(FACTORY, self.host, scheme=self.scheme,
                                      credentials=self.credentials,
                                      tls_verify=uri.options.get("tls_verify") is not False)
        self.api = api_root(self.client)
        if isinstance(self.client.auth, RegistryAuth):
            # Announced before any request, so one token covers a copy's both ends.
            actions = "pull" if role == "input" else "pull,push"
            self.client.auth.expect([f"repository:{self.path}:{actions}"])

    def url(self, kind: str, ref: str = "") -> str:
        """``/v2/<repo>/<kind>/<ref>`` on this registry, absolute (see :func:`absolute`):
        kind is ``manifests``, ``blobs`` or ``blobs/uploads``."""
        return absolute(self.api, f"/v2/{self.path}/{kind}/{ref}")

    def request(self, method: str, url: str, *, what: str, ok: Iterable[int] = (200,),
                missing_ok: bool = False, **kwargs: Any) -> httpx.Response:
        """Send a request; a status outside ``ok``, or a web page where the registry
        should have answered, raises an error naming the registry.

        With ``missing_ok`` a 404 is returned instead of raised.
        """
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.HTTPError as e:
            raise self.transport_error(what, e) from None
        if missing_ok and response.status_code == 404:
            return response
        if response.status_code in ok and not html_page(response):
            return response
        raise status_error(response, what, expected=ok)

    def transport_error(self, what: str, e: Exception) -> OccystrapError:
        return TransportError(f"{what}: network error talking to {self.host}: "
                              f"{e or type(e).__name__}")

