"""Image references: the one grammar, docker's (github.com/distribution/reference).

::

    reference := name [ ":" tag ] [ "@" digest ]
    name      := [ domain "/" ] path-component [ "/" path-component ]*
    domain    := host [ ":" port ]        host: a DNS name, an IPv4 address or [IPv6]
    path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}     (ASCII only)

Normalised (what a user types): the first component is a domain only if it has a
``.`` or a ``:``, is ``localhost`` or has upper case; otherwise the image is on Docker
Hub (``docker.io``; ``index.docker.io`` is the same), where a one-component path gets
``library/``. Unlike docker, a reference naming a registry but no repository
(``127.0.0.1:5000``, ``localhost``, ``registry.example:5000``) is an error rather than
a Docker Hub image of that name: credentials meant for that registry must never go to
Docker Hub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .. import digest as digests
from ..errors import CorruptImageError, URIError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DEFAULT_TAG = "latest"
MAX_NAME = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"^((?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)(?::({_TAG}))?(?:@({_DIGEST}))?$")
#: Patterns of a repository path (no domain) and a tag, for code matching them
#: inside larger strings (a registry's URL routes).
PATH_PATTERN = rf"{_COMPONENT}(?:/{_COMPONENT})*"
TAG_PATTERN = _TAG
DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
TAG_RE = re.compile(rf"^{_TAG}$")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


@dataclass(frozen=True)
class Reference:
    """``domain/path[:tag][@digest]``. ``domain`` is empty only for an unnormalised
    reference written without one (a name in an archive)."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository name, with its domain."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def api_host(self) -> str:
        """``host[:port]`` to send registry API requests to, in lower case, as httpx
        writes it: host names have no case."""
        return DOCKER_HUB_API if self.domain == DOCKER_HUB else self.domain.lower()

    @property
    def ref(self) -> str:
        """What goes after ``/manifests/``: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def familiar_name(self) -> str:
        """The repository name as Docker shows it (``busybox``, ``user/app``)."""
        if self.domain != DOCKER_HUB:
            return self.name
        if self.path.count("/") == 1 and self.path.startswith("library/"):
            return self.path.removeprefix("library/")
        return self.path

    @property
    def familiar(self) -> str:
        """The short form Docker shows and its daemon accepts (``busybox:1``)."""
        return _join(self.familiar_name, self.tag, self.digest)

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        return _join(self.name, self.tag, self.digest)


def _join(name: str, tag: str | None, digest: str | None) -> str:
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def port_problem(domain: str) -> str | None:
    """What is wrong with the port of ``domain`` (``HOST[:PORT]``), if anything."""
    port = domain.rpartition(":")[2] if not domain.endswith("]") else ""
    if port.isdigit() and (len(port) > 5 or not 0 < int(port) < 65536):
        return f"port {port} is not between 1 and 65535"
    return None


def host_problem(component: str) -> str | None:
    """What is wrong with the first ``component`` of a name, when it is a registry host
    (``HOST[:PORT]``, as opposed to a Docker Hub namespace), if anything."""
    if not is_domain(component):
        return None
    if not DOMAIN_RE.match(component):
        return f"invalid registry host {component!r}"
    return port_problem(component)


def is_domain(component: str) -> bool:
    """Is the first ``component`` of a name a registry host rather than a path?"""
    # docker's splitDockerDomain: upper case also means "not a path"
    return ("." in component or ":" in component or component == "localhost"
            or component != component.lower())


def _names_a_registry(name: str, tag: str | None) -> bool:
    """Is ``name[:tag]``, written without a ``/``, a registry host rather than an image?"""
    host = name.split(":", 1)[0]
    return (host == "localhost" or bool(_IPV4.match(host)) or name.startswith("[")
            or (tag is not None and tag.isdigit() and "." in name))


def parse(text: str, *, normalize: bool = True, default_tag: bool = True) -> Reference:
    """Parse ``[domain/]path[:tag][@digest]``; raise :class:`URIError` when it is not one.

    ``normalize`` applies Docker Hub's defaults (a user's reference); without it the
    domain stays empty when none is written (a name stored in an archive).
    ``default_tag`` gives ``latest`` when neither a tag nor a digest is written.
    """
    original = text

    def bad(why: str) -> URIError:
        return URIError(f"invalid image reference {original!r}: {why}")

    if not text:
        raise URIError("empty image reference")
    match = _REFERENCE.match(text)
    if not match:
        raise bad(_why_not(text))
    name, tag, digest = match.groups()
    if digest is not None:
        try:
            digests.validate(digest)
        except CorruptImageError:
            raise bad(f"{digest!r} is not a valid digest (expected sha256:<64 hex>)") from None
    if len(name) > MAX_NAME:
        raise bad(f"repository name longer than {MAX_NAME} characters")
    first, slash, rest = name.partition("/")
    if slash and is_domain(first):
        domain, path = first, rest
        problem = port_problem(domain)
        if problem:
            raise bad(problem)
        if normalize and domain in HUB_ALIASES:
            domain = DOCKER_HUB
    elif normalize:
        if not slash and _names_a_registry(name, tag):
            raise bad(f"{name}{':' + tag if tag else ''} names a registry but no repository "
                      f"(expected HOST[:PORT]/REPO[:TAG])")
        domain, path = DOCKER_HUB, name
    else:
        domain, path = "", name
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if default_tag and tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def _why_not(text: str) -> str:
    """What is wrong with a reference the grammar refused, in words."""
    name = text.split("@", 1)[0]
    colon, slash = name.rfind(":"), name.rfind("/")
    if colon > slash:
        tag = name[colon + 1:]
        if not TAG_RE.match(tag):
            return (f"invalid tag {tag!r} (ASCII letters, digits, '_', '.', '-', at most 128, "
                    f"not starting with '.' or '-')")
        name = name[:colon]
    if "@" in text and not re.fullmatch(_DIGEST, text.split("@", 1)[1]):
        return f"{text.split('@', 1)[1]!r} is not a valid digest (expected sha256:<64 hex>)"
    if not name:
        return "no repository name"
    first, separator, rest = name.partition("/")
    if separator and is_domain(first):
        if not DOMAIN_RE.match(first):
            return f"invalid registry host {first!r}"
        name = rest
        if not name:
            return "no repository name"
    elif not separator and name.startswith("["):
        return "names a registry but no repository (expected HOST[:PORT]/REPO[:TAG])"
    if name != name.lower():
        return "repository name must be lowercase"
    for component in name.split("/"):
        if not re.fullmatch(_COMPONENT, component):
            return f"invalid repository path component {component!r}"
    return "not [HOST[:PORT]/]REPO[:TAG][@DIGEST]"


def registry_key(host: str) -> str:
    """``host[:port]`` spelled one way per registry (Docker Hub's aliases are one)."""
    host = host.lower()
    return DOCKER_HUB if host in HUB_ALIASES else host


def same_registry(a: str, b: str) -> bool:
    """Do two ``host[:port]`` strings name the same registry?"""
    return registry_key(a) == registry_key(b)


def split_stored(ref: str) -> tuple[str, str | None]:
    """A name as an archive or layout stores it, not normalised (what the archive says
    is what is shown): ``("127.0.0.1:5000/team/app", "v1")`` from
    ``127.0.0.1:5000/team/app:v1``; a ``@digest`` is dropped. A name the grammar refuses
    (an archive may hold any string) is kept whole, without a tag."""
    try:
        parsed = parse(ref, normalize=False, default_tag=False)
    except URIError:
        return ref, None
    return parsed.name, parsed.tag


def join_stored(name: str | None, tag: str | None) -> str | None:
    """``name:tag``, or ``name`` without a tag; None without a name."""
    if not name:
        return None
    return f"{name}:{tag}" if tag else name
