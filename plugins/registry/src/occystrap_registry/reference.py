"""Image references, parsed the way docker and the distribution project do it.

Grammar (github.com/distribution/reference)::

    reference := name [ ":" tag ] [ "@" digest ]
    name      := [domain "/"] path-component ["/" path-component]*
    domain    := host [":" port]

The first component is a domain only if it contains ``.`` or ``:``, or is
``localhost``; otherwise the image lives on Docker Hub and single names get
``library/``. Docker Hub's API host is ``registry-1.docker.io``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from occystrap_core import digest as digests
from occystrap_core.errors import CorruptImageError, URIError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_MAX_NAME = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # ASCII: \w is Unicode


@dataclass(frozen=True)
class Reference:
    """``domain/path[:tag][@digest]``; ``tag`` is ``latest`` when neither was given."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """``host[:port]`` to send registry API requests to."""
        return DOCKER_HUB_API if self.domain == DOCKER_HUB else self.domain

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def ref(self) -> str:
        """What goes after ``/manifests/``: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (
            f"@{self.digest}" if self.digest else "")


def _is_domain(component: str) -> bool:
    # docker's splitDockerDomain: upper case also means "not a path"
    return ("." in component or ":" in component or component == "localhost"
            or component != component.lower())


def parse(text: str) -> Reference:
    """Parse ``[domain/]path[:tag][@digest]`` or raise :class:`URIError`."""
    original = text
    if not text:
        raise URIError("empty image reference")

    def bad(why: str) -> URIError:
        return URIError(f"invalid image reference {original!r}: {why}")

    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        try:
            digests.validate(digest)
        except CorruptImageError:
            raise bad(f"{digest!r} is not a valid digest (expected sha256:<64 hex>)") from None
    # A tag is a ':' after the last '/', so that 'host:5000/repo' keeps its port.
    tag = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1:]
        if not _TAG_RE.match(tag):
            raise bad(f"invalid tag {tag!r} (letters, digits, '_', '.', '-', at most 128, "
                      f"not starting with '.' or '-')")

    first, sep, rest = text.partition("/")
    if sep and _is_domain(first):
        domain, path = first, rest
        if not _DOMAIN_RE.match(domain):
            raise bad(f"invalid registry host {domain!r}")
        port = domain.rpartition(":")[2] if not domain.endswith("]") else ""
        if port.isdigit() and not 0 < int(port) < 65536:
            raise bad(f"port {port} is not between 1 and 65535")
        if domain in _HUB_ALIASES:
            domain = DOCKER_HUB
    else:
        domain, path = DOCKER_HUB, text
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not path:
        raise bad("no repository name")
    for component in path.split("/"):
        if not _PATH_COMPONENT_RE.match(component):
            if component.lower() != component:
                raise bad("repository name must be lowercase")
            raise bad(f"invalid repository path component {component!r}")
    if len(f"{domain}/{path}") > _MAX_NAME:
        raise bad(f"repository name longer than {_MAX_NAME} characters")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(domain, path, tag, digest)


def registry_key(host: str) -> str:
    """``host[:port]`` spelled one way per registry (Docker Hub's aliases are one)."""
    host = host.lower()
    return DOCKER_HUB if host in _HUB_ALIASES else host


def same_registry(a: str, b: str) -> bool:
    """Do two ``host[:port]`` strings name the same registry?"""
    return registry_key(a) == registry_key(b)
