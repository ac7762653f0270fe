"""The Quay REST API (``/api/v1``): repository and tag listings, with pagination.

The HTTP client comes from the core (``ctx.http_client``), so every API call gets the
run's retries, rate limit, TLS settings and proxies, and the client is closed with the
run. Failures become occystrap errors that start with ``quay API at HOST:``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import httpx

from occystrap_core.errors import OccystrapError, TransportError
from occystrap_core.transport.errors import error_detail, error_for_status
from occystrap_core.types import ClientConfig, ClientRequest, Credentials

if TYPE_CHECKING:
    from occystrap_core.context import Context

FACTORY = "quay-api"
PAGE_SIZE = 100  # the most Quay's tag API returns per page
_MAX_PAGES = 10_000  # a server repeating its cursor must not loop forever


def configure(request: ClientRequest, ctx: Context) -> ClientConfig:
    headers = {"Accept": "application/json"}
    token = request.credentials.token if request.credentials else None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return ClientConfig(base_url=f"{request.scheme}://{request.host}/api/v1/", headers=headers)


class QuayAPI:
    """One Quay server's API, through the run's shared client for it."""

    def __init__(self, ctx: Context, host: str, *, scheme: str = "https",
                 token: str | None = None):
        self.host = host
        self.authenticated = bool(token)
        credentials = Credentials(token=token, source="quay token") if token else None
        self.client = ctx.http_client(FACTORY, host, scheme=scheme, credentials=credentials)

    def repositories(self, namespace: str) -> Iterator[dict[str, Any]]:
        """Every repository of ``namespace`` the token (or anonymous) may see.

        ``public=true`` adds public repositories to those the token grants, so an
        anonymous listing of a public namespace works; ``next_page`` is Quay's cursor.
        """
        params: dict[str, str] = {"namespace": namespace, "public": "true",
                                  "last_modified": "true"}
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            page = self._get("repository", params, f"listing repositories of {namespace}")
            yield from _list_of(page, "repositories", self.host)
            cursor = page.get("next_page")
            if not cursor or cursor in seen:
                return
            seen.add(cursor)
            params["next_page"] = str(cursor)
        raise TransportError(f"quay API at {self.host}: more than {_MAX_PAGES} pages "
                             f"of repositories in {namespace}")

    def tags(self, namespace: str, repo: str,
             specific: str | None = None) -> Iterator[dict[str, Any]]:
        """The active tags of ``namespace/repo`` (only ``specific`` when given)."""
        params: dict[str, str] = {"onlyActiveTags": "true", "limit": str(PAGE_SIZE)}
        if specific is not None:
            params["specificTag"] = specific
        for number in range(1, _MAX_PAGES + 1):
            params["page"] = str(number)
            page = self._get(f"repository/{namespace}/{repo}/tag/", params,
                             f"listing tags of {namespace}/{repo}")
            yield from _list_of(page, "tags", self.host)
            if not page.get("has_additional"):
                return
        raise TransportError(f"quay API at {self.host}: more than {_MAX_PAGES} pages "
                             f"of tags in {namespace}/{repo}")

    def _get(self, path: str, params: dict[str, str], what: str) -> dict[str, Any]:
        try:
            response = self.client.get(path, params=params)
            response.read()
        except TransportError as e:  # from the retry layer, once its retries are spent
            raise TransportError(f"quay API at {self.host}: {what}: {e}") from None
        except httpx.HTTPError as e:
            raise TransportError(f"quay API at {self.host}: {what}: "
                                 f"{e or type(e).__name__}") from None
        if response.status_code != 200:
            raise self._status_error(response, what)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TransportError(f"quay API at {self.host}: {what}: the answer is not a Quay "
                                 f"API JSON object (is {self.host} a Quay server?)")
        return body

    def _status_error(self, response: httpx.Response, what: str) -> OccystrapError:
        status = response.status_code
        hint = "the token was refused" if self.authenticated else \
            "no token given: use --quay-token, QUAY_TOKEN or a token in the URI"
        return error_for_status(status, f"quay API at {self.host}: {what}: HTTP {status} "
                                        f"{response.reason_phrase}{error_detail(response)}",
                                auth_hint=hint)


def _list_of(page: dict[str, Any], key: str, host: str) -> list[dict[str, Any]]:
    items = page.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise TransportError(f"quay API at {host}: the answer has no {key!r} list")
    return items
