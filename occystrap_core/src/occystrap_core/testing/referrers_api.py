"""A registry with the referrers API, for tests: the real registry (2.8 has no such
API) behind a front that adds it from the registry's own content.

``ReferrersFront(server.url)`` forwards everything, except that:

- ``GET /v2/<name>/referrers/<digest>[?artifactType=T]`` answers the OCI index kept in
  the registry under the subject's fallback tag (empty when there is none), filtered
  by ``artifactType`` with ``OCI-Filters-Applied: artifactType``, as the spec says;
- a manifest ``PUT`` whose manifest has a ``subject`` is stored, then added to that
  index by the front itself, and answered with ``OCI-Subject``: the client must not
  maintain the index (a client that did would show in ``front.log``).

It is a :class:`~occystrap_core.testing.faults.FaultFront`, so its log records every
request, and faults can be added as usual.
"""

from __future__ import annotations

import json
import re

from .. import mediatypes as mt
from ..errors import OccystrapError
from ..oci import referrers
from ..oci.manifest import parse
from .faults import Fault, FaultFront, Hit, _Exchange

_NAME = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_REFERRERS = re.compile(rf"^/v2/(?P<name>{_NAME})/referrers/(?P<digest>[a-z0-9]+:[a-f0-9]+)$")
_MANIFEST = re.compile(rf"^/v2/(?P<name>{_NAME})/manifests/(?P<ref>[^/]+)$")

__all__ = ["ReferrersFront"]


class ReferrersFront(FaultFront):
    """The real registry, with the referrers API added in front of it."""

    async def _answer(self, ex: _Exchange, hit: Hit, fault: Fault | None) -> None:
        path, _, query = ex.target.partition("?")
        listing = _REFERRERS.match(path)
        if fault is None and ex.method == "GET" and listing:
            await self._list(ex, hit, listing["name"], listing["digest"], query)
            return
        pushing = _MANIFEST.match(path)
        if fault is None and ex.method == "PUT" and pushing:
            await self._push(ex, hit, pushing["name"])
            return
        await super()._answer(ex, hit, fault)

    async def _index(self, name: str, digest: str) -> bytes | None:
        assert self._client is not None
        response = await self._client.get(
            f"{self.upstream}/v2/{name}/manifests/{referrers.fallback_tag(digest)}",
            headers={"Accept": mt.OCI_INDEX})
        return response.content if response.status_code == 200 else None

    async def _list(self, ex: _Exchange, hit: Hit, name: str, digest: str,
                    query: str) -> None:
        wanted = dict(p.partition("=")[::2] for p in query.split("&") if p).get("artifactType")
        data = await self._index(name, digest)
        listed = referrers.listed(data, wanted) if data is not None else []
        body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                           "manifests": [d.json() for d in listed]}).encode()
        headers = [(b"content-type", mt.OCI_INDEX.encode())]
        if wanted:
            headers.append((b"oci-filters-applied", b"artifactType"))
        await self._send_whole(ex, hit, 200, headers, body)

    async def _push(self, ex: _Exchange, hit: Hit, name: str) -> None:
        assert self._client is not None
        data = b"".join([chunk async for chunk in ex.body()])
        headers = [(k, v) for k, v in ex.headers if k.lower() not in (b"host", b"content-length")]
        response = await self._client.request("PUT", self.upstream + ex.target, headers=headers,
                                              content=data)
        answer = [(k, v) for k, v in response.headers.raw
                  if k.lower() not in (b"content-length", b"transfer-encoding", b"connection")]
        try:
            doc = parse(data, _get_type(ex))
        except OccystrapError:
            doc = None  # the registry said what it thinks of it
        if response.status_code == 201 and doc is not None and doc.subject is not None:
            tag = referrers.fallback_tag(doc.subject.digest)
            index = referrers.merged(await self._index(name, doc.subject.digest),
                                     referrers.descriptor_of(doc))
            stored = await self._client.put(f"{self.upstream}/v2/{name}/manifests/{tag}",
                                            content=index,
                                            headers={"Content-Type": mt.OCI_INDEX})
            stored.raise_for_status()
            answer.append((b"oci-subject", doc.subject.digest.encode()))
        await self._send_whole(ex, hit, response.status_code, answer, response.content)


def _get_type(ex: _Exchange) -> str | None:
    for key, value in ex.headers:
        if key.lower() == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip() or None
    return None
