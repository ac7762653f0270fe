"""Platform parsing, normalisation and matching, as containerd's ``platforms`` package does.

Normalising makes equivalent spellings equal: ``arm64`` is ``arm64/v8``,
``x86_64`` is ``amd64`` (no variant), ``arm`` means ``arm/v7``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from occystrap_core.errors import URIError
from occystrap_core.types import Platform

_ARCH = {"i386": "386", "x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64",
         "armhf": "arm", "armel": "arm"}
_ARM_VARIANT_DEFAULT = {"armhf": "v7", "armel": "v6"}


def parse(text: str) -> Platform:
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise URIError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
    return Platform(*parts)


def normalise(p: Platform) -> Platform:
    os_ = p.os.lower()
    if os_ == "macos":
        os_ = "darwin"
    raw_arch = p.architecture.lower()
    arch = _ARCH.get(raw_arch, raw_arch)
    variant = (p.variant or "").lower() or None
    if arch == "amd64" and variant == "v1":
        variant = None
    elif arch == "arm64" and variant in ("8", "v8"):
        variant = None
    elif arch == "arm":
        variant = variant or _ARM_VARIANT_DEFAULT.get(raw_arch, "v7")
        if variant in ("5", "6", "7", "8"):
            variant = f"v{variant}"
    return Platform(os_, arch, variant)


def of_descriptor(desc: Mapping[str, Any]) -> Platform | None:
    """The platform of an index entry; None for entries without one (attestations)."""
    p = desc.get("platform")
    if not isinstance(p, Mapping) or not p.get("os") or not p.get("architecture"):
        return None
    if p["os"] == "unknown" or p["architecture"] == "unknown":
        return None  # buildx attestation manifests
    return Platform(str(p["os"]), str(p["architecture"]), p.get("variant") or None)


def matches(wanted: Platform, candidate: Platform) -> bool:
    return normalise(wanted) == normalise(candidate)


def describe(platforms: Iterable[Platform]) -> str:
    names = sorted({str(p) for p in platforms})
    return ", ".join(names) if names else "none"
