"""For plugins that serve the Distribution API (the proxy, the daemon's embedded
registry of ``dockerpush://``): one definition of its routes, errors, uploads and the
checks on a pushed manifest.

Path parts are matched against strict patterns before any of them names a file or
reaches a response header; upload ids are minted by the server (hex).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from . import digest as digests
from .errors import OccystrapError
from .mediatypes import MEDIA_TYPE
from .oci.manifest import Manifest, parse
from .oci.reference import PATH_PATTERN, TAG_PATTERN

DIGEST_PATTERN = r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-f0-9]{32,128}"
UPLOAD_ID_PATTERN = r"[0-9a-f]{32}"
#: (pattern, route): a server looks up a handler named after the route and the method
ROUTES = [
    (re.compile(r"^/v2/?$"), "base"),
    (re.compile(rf"^/v2/(?P<name>{PATH_PATTERN})/blobs/uploads/?$"), "uploads"),
    (re.compile(rf"^/v2/(?P<name>{PATH_PATTERN})/blobs/uploads/(?P<uuid>{UPLOAD_ID_PATTERN})$"),
     "upload"),
    (re.compile(rf"^/v2/(?P<name>{PATH_PATTERN})/blobs/(?P<digest>{DIGEST_PATTERN})$"), "blob"),
    (re.compile(rf"^/v2/(?P<name>{PATH_PATTERN})/tags/list$"), "tags"),
    (re.compile(rf"^/v2/(?P<name>{PATH_PATTERN})/manifests/(?P<ref>{TAG_PATTERN}|"
                rf"{DIGEST_PATTERN})$"), "manifest"),
]
CONTENT_RANGE = re.compile(r"^(?:bytes )?0*([0-9]+)-0*([0-9]+)$")


def unknown_upload() -> RegistryError:
    """The answer for an upload id that names no upload in progress."""
    return RegistryError(404, "BLOB_UPLOAD_UNKNOWN", "no such upload")


class RegistryError(Exception):
    """A request refused with ``status`` and a distribution-spec error ``code``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code

    def body(self) -> bytes:
        return json.dumps({"errors": [{"code": self.code, "message": str(self)}]}).encode()


@dataclass(frozen=True)
class Pushed:
    """A manifest as a client pushed it."""

    data: bytes
    media_type: str
    digest: str


class Upload:
    """One blob upload in progress: its file, and the size and running hash of what
    was written to it (through :meth:`write`)."""

    def __init__(self, path: str):
        self.path = path
        self.size = 0
        self.hash = hashlib.sha256()
        self.lock = threading.Lock()  # one PATCH at a time, as the spec requires

    def write(self, f: BinaryIO, chunk: bytes) -> None:
        """Append ``chunk`` to the upload's file ``f`` (opened for appending)."""
        f.write(chunk)
        self.hash.update(chunk)
        self.size += len(chunk)

    @contextlib.contextmanager
    def patching(self, content_range: str) -> Iterator[None]:
        """One PATCH, whose body is written in the block: its ``Content-Range`` must
        continue the upload where it stands and span what the body carried. A body of
        another length is undone once it came, so the upload stands where it stood
        and the client can resume from its ``Range``."""
        match = CONTENT_RANGE.match(content_range)
        if match is None:  # none (a streamed upload), or not one we can check
            yield
            return
        # a number of more digits than any file's size is refused before int() (which
        # refuses more than 4300)
        start, end = (int(n) if len(n) <= 19 else -1 for n in match.groups())
        if start != self.size or end < start:
            raise RegistryError(416, "BLOB_UPLOAD_INVALID", "the range does not follow the upload")
        size, hashed = self.size, self.hash.copy()
        yield
        carried = self.size - size
        if carried != end - start + 1:
            os.truncate(self.path, size)
            self.size, self.hash = size, hashed
            raise RegistryError(416, "BLOB_UPLOAD_INVALID",
                                f"Content-Range {start}-{end} spans {end - start + 1} bytes; "
                                f"the body carried {carried}")

    def commit(self, digest: str, path_of: Callable[[str], str]) -> None:
        """Move the upload's file to ``path_of(digest)`` when its content hashes to
        ``digest`` (sha256: what clients push); else remove it. Either way the upload
        is over."""
        actual = "sha256:" + self.hash.hexdigest()
        wrong = not digests.is_valid(digest) or not digest.startswith("sha256:")
        if wrong or actual != digest:
            os.unlink(self.path)
            raise RegistryError(400, "DIGEST_INVALID", "a sha256 ?digest= is required"
                                if wrong else f"the content hashes to {actual}")
        os.replace(self.path, path_of(digest))

    def headers(self, name: str, uuid: str) -> dict[str, str]:
        """What an answer about the upload carries: where to send more, how much came."""
        return {"Location": f"/v2/{name}/blobs/uploads/{uuid}", "Docker-Upload-UUID": uuid,
                "Range": f"0-{max(self.size - 1, 0)}"}


def check_manifest(ref: str, data: bytes, media_type: str,
                   has_blob: Callable[[str], bool]) -> tuple[Pushed, Manifest | None]:
    """A pushed manifest, checked as a registry checks it: its digest against a digest
    ``ref``, its JSON and media type, and (for an image) that every blob it names
    (but foreign ones) was pushed. Returns it, and the image manifest when it is one."""
    digest = digests.of_bytes(data)
    if digests.is_valid(ref) and ref != digest:
        raise RegistryError(400, "DIGEST_INVALID", f"the manifest hashes to {digest}")
    try:
        doc = parse(data, media_type if MEDIA_TYPE.fullmatch(media_type) else None,
                    "the pushed manifest")
    except OccystrapError as e:  # not JSON, not a manifest, schema 1...
        raise RegistryError(400, "MANIFEST_INVALID", str(e)) from None
    if isinstance(doc, Manifest):
        for d in (doc.config, *doc.layers):
            if not d.urls and not has_blob(d.digest):
                raise RegistryError(400, "MANIFEST_BLOB_UNKNOWN", f"blob {d.digest} unknown")
    return Pushed(data, doc.media_type, digest), doc if isinstance(doc, Manifest) else None
