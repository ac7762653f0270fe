"""Content digests (``algorithm:hex``) as the OCI image spec defines them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import CorruptImageError

if TYPE_CHECKING:
    import hashlib

_LENGTHS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")


def validate(digest: str, what: str = "digest") -> str:
    """Return ``digest`` if it is a well-formed sha256/sha512 digest, else raise."""
    m = _DIGEST_RE.match(digest or "")
    if not m:
        raise CorruptImageError(f"invalid {what} {digest!r}")
    algo, hexpart = m.groups()
    if algo not in _LENGTHS:
        raise CorruptImageError(f"unsupported digest algorithm in {what} {digest!r}")
    if len(hexpart) != _LENGTHS[algo] or not re.fullmatch(r"[0-9a-f]+", hexpart):
        raise CorruptImageError(f"invalid {what} {digest!r}")
    return digest


def is_valid(digest: str) -> bool:
    try:
        validate(digest)
    except CorruptImageError:
        return False
    return True


def hasher(digest: str | None = None) -> hashlib._Hash:
    """A new hash object for ``digest``'s algorithm (sha256 when None)."""
    import hashlib  # here: the plugins' entry modules validate digests at start-up

    algo = validate(digest).split(":", 1)[0] if digest else "sha256"
    return hashlib.new(algo)


def of_bytes(data: bytes, algo: str = "sha256") -> str:
    import hashlib

    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def hex_of(digest: str) -> str:
    return validate(digest).split(":", 1)[1]
