"""``docker://`` references: the core's one grammar; the daemon is given the familiar
form (``busybox:latest``, ``localhost/app:v1``), as the docker CLI gives it."""

from __future__ import annotations

from occystrap_core.errors import URIError
from occystrap_core.oci.reference import Reference, parse


def parse_reference(text: str, scheme: str) -> Reference:
    """Parse the part after ``scheme://``; raise URIError if it is not a reference."""
    if not text:
        raise URIError(f"{scheme}:// needs an image name, e.g. {scheme}://busybox:latest")
    return parse(text)
