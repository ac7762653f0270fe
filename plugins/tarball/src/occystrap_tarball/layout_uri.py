"""What an ``oci-layout://`` URI names: the layout directory, and, after a final
``@ALG:HEX`` (as in ``registry://HOST/REPO@sha256:...``), one manifest of it by digest.

A directory whose name ends in a well-formed digest cannot be named; anything else
after an ``@`` stays part of the path.
"""

from __future__ import annotations

from occystrap_core import digest as digests
from occystrap_core.types import ResolvedURI
from occystrap_core.uri import local_path


def layout_target(uri: ResolvedURI) -> tuple[str, str | None]:
    """The layout directory ``uri`` names, and the manifest digest it names if any."""
    path = local_path(uri)
    head, at, tail = path.rpartition("@")
    if at and head and digests.is_valid(tail):
        return head, tail
    return path, None
