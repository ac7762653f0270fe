"""Docker-style image references: ``[HOST[:PORT]/]PATH[:TAG][@DIGEST]``.

A colon is a tag separator only after the last ``/``: in ``localhost:5000/img``
it belongs to the registry port, so that reference has no tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from occystrap_core import digest as digests
from occystrap_core.errors import CorruptImageError, URIError

# The grammar of github.com/distribution/reference, without IPv6 hosts.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
NAME_RE = re.compile(rf"^(?:{_DOMAIN}(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_MAX_NAME = 255
DEFAULT_TAG = "latest"


@dataclass(frozen=True)
class Reference:
    name: str
    tag: str | None = None
    digest: str | None = None

    @property
    def effective_tag(self) -> str | None:
        """The tag a daemon would use: ``latest`` unless a tag or digest is given."""
        if self.tag:
            return self.tag
        return None if self.digest else DEFAULT_TAG

    def __str__(self) -> str:
        """``name:tag``, ``name@digest`` or ``name:tag@digest``, as the daemon API takes it."""
        text = self.name
        if self.effective_tag:
            text += f":{self.effective_tag}"
        return text + (f"@{self.digest}" if self.digest else "")


def parse_reference(text: str, scheme: str) -> Reference:
    """Parse ``text`` (the part after ``scheme://``); raise URIError if it is malformed."""
    if not text:
        raise URIError(f"{scheme}:// needs an image name, e.g. {scheme}://busybox:latest")
    rest, _, digest = text.partition("@")
    if digest:
        try:
            digests.validate(digest, "image digest")
        except CorruptImageError as e:
            raise URIError(f"{scheme}://{text}: {e}") from None
    name, tag = rest, None
    colon, slash = rest.rfind(":"), rest.rfind("/")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1:]
        if not TAG_RE.match(tag):
            raise URIError(f"{scheme}://{text}: invalid tag {tag!r}")
    if len(name) > _MAX_NAME or not NAME_RE.match(name):
        raise URIError(f"{scheme}://{text}: invalid image name {name!r} (repository names "
                       f"are lower case: [HOST[:PORT]/]PATH[:TAG][@DIGEST])")
    return Reference(name, tag, digest or None)
