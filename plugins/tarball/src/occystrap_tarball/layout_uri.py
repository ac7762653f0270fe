"""What an ``oci-layout://`` URI names: the layout directory, and, after a final
``@ALG:HEX`` (as in ``registry://HOST/REPO@sha256:...``), one manifest of it by digest.

A directory whose name ends in a well-formed digest cannot be named; anything else
after an ``@`` stays part of the path, unless no such path exists while the part before
names a directory: then it was meant as a digest, and a malformed one is said to be.
"""

from __future__ import annotations

import os

from occystrap_core import digest as digests
from occystrap_core.errors import CorruptImageError, URIError
from occystrap_core.types import ResolvedURI
from occystrap_core.uri import local_path


def layout_target(uri: ResolvedURI) -> tuple[str, str | None]:
    """The layout directory ``uri`` names, and the manifest digest it names if any."""
    path = local_path(uri)
    head, at, tail = path.rpartition("@")
    if not (at and head):
        return path, None
    if digests.is_valid(tail):
        return head, tail
    if ":" in tail and not os.path.lexists(path) and os.path.isdir(head):
        try:  # "SHA256:ABC..." (uppercase), a short hex: say what is wrong with it
            digests.validate(tail, f"digest after {head}@")
        except CorruptImageError as e:
            raise URIError(f"{e} (ALGORITHM:HEX, lowercase, as sha256:<64 hex digits>)"
                           ) from None
    return path, None
