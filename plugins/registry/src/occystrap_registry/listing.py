"""Listing a registry: ``/v2/_catalog`` and ``/v2/<name>/tags/list``, page by page.

Both follow the distribution spec's pagination: ask for ``n`` entries, then follow
the ``Link: <...>; rel="next"`` header until there is none; a Link back to a page
already read is an error, not the end of the list (``sync --prune`` deletes what a
list lacks). The catalog needs the
``registry:catalog:*`` scope, which token servers grant only to some users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence
from urllib.parse import quote

import httpx

from occystrap_core.api import BulkItem, ImageLister
from occystrap_core.digest import is_valid, of_bytes
from occystrap_core.errors import OccystrapError, TransportError, UnsupportedError, URIError
from occystrap_core.listing import split_pattern
from occystrap_core.oci.reference import DOCKER_HUB, host_problem
from occystrap_core.oci.reference import parse as parse_reference
from occystrap_core.transport.auth import SCOPES
from occystrap_core.transport.errors import html_page, status_error
from occystrap_core.types import ResolvedURI

from . import deletes
from .client import FACTORY, absolute, api_root
from .locations import HEADS_KEY, ManifestHeads
from .source import ACCEPT

if TYPE_CHECKING:
    from occystrap_core.context import Context

PAGE_SIZE = 1000  # CNCF distribution's own cap for n=
_MAX_PAGES = 100_000  # a server repeating its Link must not loop forever
CATALOG_SCOPE = "registry:catalog:*"


class RegistryLister(ImageLister):
    """The repositories and tags of the registry a ``registry://HOST/...`` URI names."""

    def __init__(self, uri: ResolvedURI, ctx: Context):
        # a REPO@DIGEST target names its repository's registry too (tags, delete)
        self.root = split_pattern(uri.target.partition("@")[0]).root
        problem = host_problem(self.root.partition("/")[0])
        if problem:  # said of the host given, not of the made-up repository below
            raise URIError(f"registry://{self.root}: {problem}")
        ref = parse_reference(f"{self.root}/x")  # the API host and credential domain
        self.host = ref.api_host
        self.hub = ref.domain == DOCKER_HUB
        self.insecure = bool(uri.options.get("insecure")) or ctx.settings.insecure
        self.tls_verify = uri.options.get("tls_verify") is not False
        self.page_size = _page_size(uri.options.get("page_size"))
        self.uri_credentials = uri.credentials
        self.ctx = ctx
        self.domain = ref.domain
        self.heads: ManifestHeads = ctx.shared(HEADS_KEY, ManifestHeads)
        self.client = self._client(None)
        self.api = api_root(self.client)

    def _client(self, repository: str | None) -> httpx.Client:
        """The client with the credentials for ``repository`` (an auth file may hold
        some per namespace), those for the host when it is None (the catalog)."""
        credentials = self.uri_credentials or self.ctx.credentials(self.domain, "input",
                                                                   repository)
        return self.ctx.http_client(FACTORY, self.host,
                                    scheme="http" if self.insecure else "https",
                                    credentials=credentials, tls_verify=self.tls_verify)

    def repositories(self) -> Iterator[str]:
        for page in self._pages("/v2/_catalog", "listing the catalog", [CATALOG_SCOPE], None):
            yield from _names(page, "repositories", self.host)

    def _path(self, repository: str) -> str:
        """The repository's name in the API: Docker Hub keeps official images under
        ``library/`` (``docker.io/busybox`` is ``library/busybox``), as references say."""
        return parse_reference(f"{self.root}/{repository}").path if self.hub else repository

    def tags(self, repository: str) -> Iterator[str]:
        repository = self._path(repository)
        scope = [f"repository:{repository}:pull"]
        for page in self._pages(f"/v2/{repository}/tags/list",
                                f"listing the tags of {repository}", scope, repository):
            yield from _names(page, "tags", self.host)

    knows_digests = True

    def digest(self, repository: str, tag: str) -> str | None:
        repository = self._path(repository)
        response = self._send("HEAD", f"/v2/{repository}/manifests/{tag}",
                              f"HEAD manifest {repository}:{tag}",
                              [f"repository:{repository}:pull"], repository, ok=(200, 404),
                              headers={"Accept": ACCEPT})
        stated = response.headers.get("Docker-Content-Digest")
        found = stated if response.status_code == 200 and stated and is_valid(stated) else None
        if found is None and response.status_code == 200:
            # the tag is there, its digest unsaid (a proxy stripped it): the bytes say it
            response = self._send("GET", f"/v2/{repository}/manifests/{tag}",
                                  f"manifest {repository}:{tag}",
                                  [f"repository:{repository}:pull"], repository,
                                  ok=(200, 404),
                                  headers={"Accept": ACCEPT})
            found = of_bytes(response.content) if response.status_code == 200 else None
        if found is not None or response.status_code == 404:
            self.heads.put(self.host, repository, tag, found)  # a copy may follow: no 2nd HEAD
        return found

    def delete(self, repository: str, tag: str) -> None:
        error = self.delete_tags(repository, [tag])[tag]
        if error is not None:
            raise error

    def delete_tags(self, repository: str, tags: Sequence[str]
                    ) -> dict[str, OccystrapError | None]:
        """By tag where the registry can (distribution 3); else by digest, only when no
        other tag of the repository points at that manifest (it would go too): tags
        deleted together (v1.2 and v1.2.3 of one image) may share it."""
        repository = self._path(repository)
        scopes = [f"repository:{repository}:pull,push,delete"]
        done: dict[str, OccystrapError | None] = {}
        by_digest: dict[str, list[str]] = {}  # what the registry could not delete by tag
        refused = False  # a tag DELETE answered 405: deletes may be disabled altogether
        for tag in tags:
            try:
                response = self._send("DELETE", f"/v2/{repository}/manifests/{tag}",
                                      f"deleting {repository}:{tag}", scopes, repository,
                                      ok=(202, 400, 404, 405))
                digest = None if response.status_code in (202, 404) \
                    else self.digest(repository, tag)
            except OccystrapError as e:
                done[tag] = e
                continue
            if digest is None:
                done[tag] = None  # deleted, or gone meanwhile
            else:
                by_digest.setdefault(digest, []).append(tag)
                refused |= response.status_code == 405
        if not by_digest:
            return done
        if refused and self._send(
                "DELETE", f"/v2/{repository}/manifests/{deletes.NO_MANIFEST}",
                f"asking whether {self.host} deletes manifests", scopes, repository,
                ok=(202, 400, 404, 405)).status_code == 405:
            return {**done, **{t: deletes.disabled(f"deleting {repository}:{t}", self.host)
                               for group in by_digest.values() for t in group}}
        try:
            others = {t: self.digest(repository, t) for t in self.tags(repository)
                      if t not in tags}
        except OccystrapError as e:
            return {**done, **{t: e for group in by_digest.values() for t in group}}
        for digest, group in by_digest.items():
            what = f"deleting {repository}:{', '.join(group)}"
            shared = sorted(t for t, d in others.items() if d == digest)
            try:
                if shared:
                    raise UnsupportedError(
                        f"{what}: {self.host} deletes manifests, not tags, and {digest} is "
                        f"also tagged {', '.join(shared)}: left as it is")
                self._send("DELETE", f"/v2/{repository}/manifests/{digest}", what, scopes,
                           repository, ok=(202, 404))
                error = None
            except OccystrapError as e:
                error = e
            done.update((t, error) for t in group)
        return done

    def item(self, repository: str, tag: str) -> BulkItem:
        userinfo = ""
        creds = self.uri_credentials
        if creds is not None and (creds.username or creds.password):
            userinfo = f"{quote(creds.username or '', safe='')}:" \
                       f"{quote(creds.password or '', safe='')}@"
        uri = f"registry://{userinfo}{self.root}/{repository}" + (f":{tag}" if tag else "")
        options = [o for o, on in (("insecure=true", self.insecure),
                                   ("tls_verify=false", not self.tls_verify)) if on]
        if options:
            uri += "?" + "&".join(options)
        namespace, _, name = repository.rpartition("/")
        return BulkItem(uri=uri, fields={"registry": self.root, "repo": repository,
                                         "namespace": namespace, "name": name, "tag": tag})

    def _send(self, method: str, url: str, what: str, scopes: list[str],
              repository: str | None, ok: tuple[int, ...] = (200,),
              headers: dict[str, str] | None = None) -> httpx.Response:
        try:
            response = self._client(repository).request(
                method, absolute(self.api, url), headers=headers, extensions={SCOPES: scopes})
            response.read()
        except httpx.HTTPError as e:
            raise TransportError(f"{what}: network error talking to {self.host}: "
                                 f"{e or type(e).__name__}") from None
        if response.status_code not in ok or html_page(response):
            raise status_error(response, what, expected=ok)  # it names the host
        return response

    def _pages(self, path: str, what: str, scopes: list[str],
               repository: str | None) -> Iterator[dict[str, Any]]:
        url: str | None = f"{path}?n={self.page_size}"
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            assert url is not None
            seen.add(absolute(self.api, url))
            response = self._send("GET", url, what, scopes, repository)
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise TransportError(f"{what} on {self.host}: the answer is not a JSON object")
            yield body
            url = response.links.get("next", {}).get("url")
            if not url:
                return
            if absolute(self.api, url) in seen:  # a partial list is no list: prune trusts it
                raise TransportError(f"{what} on {self.host}: the next page's Link points "
                                     f"back to a page already read ({url})")
        raise TransportError(f"{what} on {self.host}: more than {_MAX_PAGES} pages")


def _page_size(value: int | None) -> int:
    """``?page_size=N``: a page holds at least one entry (n=0 or less asks for none, or
    for whatever the registry makes of it)."""
    if value is None:
        return PAGE_SIZE
    if value < 1:
        raise URIError(f"registry://: option 'page_size' must be at least 1, got {value}")
    return value


def _names(page: dict[str, Any], key: str, host: str) -> list[str]:
    # null: a repository without tags; no key at all is no list, not an empty one
    # (sync --prune would delete every tag of the mirror)
    items = page[key] or [] if key in page else None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise TransportError(f"registry {host}: the answer has no {key!r} list of names")
    return items
