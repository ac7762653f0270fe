"""``docker://`` references: the core's one grammar. The daemon is given a short name as
written (``busybox``, ``app:v1``), as the docker CLI gives it, for the daemon's own
short-name resolution (Podman: ``localhost/`` first); a name written with a registry
is given in full, so that Podman cannot resolve it to another image."""

from __future__ import annotations

import re
from typing import Any

from occystrap_core.errors import URIError
from occystrap_core.oci.reference import Reference, parse


def parse_reference(text: str, scheme: str) -> Reference:
    """Parse the part after ``scheme://``; raise URIError if it is not a reference."""
    if not text:
        raise URIError(f"{scheme}:// needs an image name, e.g. {scheme}://busybox:latest")
    return parse(text)


# What ``docker save ID`` takes: a full ID or a prefix of one, with or without ``sha256:``.
_IMAGE_ID = re.compile(r"(?:sha256:)?([0-9a-f]{1,64})")


class DaemonReference:
    """What the daemon is asked for (``asked``). Text without a registry, an image ID
    included, goes as written: the daemon tries it as a name (adding :latest), then
    as an ID, as for the docker CLI."""

    def __init__(self, text: str, scheme: str):
        self.ref = parse_reference(text, scheme)
        id_like = _IMAGE_ID.fullmatch(text)
        self._id_prefix = id_like.group(1) if id_like else None
        short = not parse(text, normalize=False).domain
        self.asked = text if short else str(self.ref)

    def image_id(self, inspected: dict[str, Any]) -> str | None:
        """The full ID of the daemon's image if it was found by ID rather than by name."""
        found = str(inspected.get("Id") or "")
        if self._id_prefix and found.removeprefix("sha256:").startswith(self._id_prefix):
            return found
        return None
