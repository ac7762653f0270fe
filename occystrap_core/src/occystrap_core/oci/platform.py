"""Platforms: the one type, parser and matcher (containerd's ``platforms`` rules).

Spellings that mean the same platform are made equal before comparing:
``x86_64`` and ``x86-64`` are ``amd64`` (and ``amd64/v1`` plain ``amd64``),
``aarch64`` is ``arm64`` (and ``arm64/v8`` plain ``arm64``), ``arm`` is ``arm/v7``,
``armhf`` is ``arm/v7``, ``armel`` is ``arm/v6``, ``i386`` is ``386``, ``macos`` is
``darwin``; OS and architecture are not case-sensitive.

When no image matches exactly, a compatible one is taken, best first, as a
runtime would run it: an ``arm/v7`` host runs ``arm/v6`` and ``arm/v5`` images,
``arm64/v9`` runs ``arm64/v8``, ``amd64/v3`` runs ``amd64/v2`` and ``amd64``.
"""

from __future__ import annotations

import platform as _host
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..errors import URIError

_PART = re.compile(r"^[A-Za-z0-9_.-]+$")
_ARCH = {"i386": "386", "x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64",
         "armhf": "arm", "armel": "arm", "armv7l": "arm", "i686": "386"}
_ARM_DEFAULT = {"armhf": "v7", "armel": "v6", "armv7l": "v7"}
# Lower variants a host of the key runs too, best first.
_COMPATIBLE = {
    ("arm", "v8"): ("v7", "v6", "v5"), ("arm", "v7"): ("v6", "v5"), ("arm", "v6"): ("v5",),
    ("arm64", "v9"): (None,), ("amd64", "v4"): ("v3", "v2", None),
    ("amd64", "v3"): ("v2", None), ("amd64", "v2"): (None,),
}


@dataclass(frozen=True)
class Platform:
    """An OCI platform; ``str()`` gives ``os/arch[/variant]``."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        parts = [self.os, self.architecture] + ([self.variant] if self.variant else [])
        return "/".join(parts)

    def normalized(self) -> Platform:
        os_ = self.os.lower()
        if os_ == "macos":
            os_ = "darwin"
        raw = self.architecture.lower()
        arch = _ARCH.get(raw, raw)
        variant = (self.variant or "").lower() or None
        if arch == "amd64" and variant == "v1":
            variant = None
        elif arch == "arm64" and variant in ("8", "v8"):
            variant = None
        elif arch == "arm":
            variant = variant or _ARM_DEFAULT.get(raw, "v7")
            if variant in ("5", "6", "7", "8"):
                variant = f"v{variant}"
        elif arch == "386":
            variant = None
        return Platform(os_, arch, variant)

    def as_dict(self) -> dict[str, str]:
        """The OCI ``platform`` object."""
        return {"os": self.os, "architecture": self.architecture,
                **({"variant": self.variant} if self.variant else {})}


def parse(text: str) -> Platform:
    """``OS/ARCH[/VARIANT]``; raise :class:`URIError` for anything else."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(_PART.match(p) for p in parts):
        raise URIError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
    return Platform(*parts)


def host() -> Platform:
    """This machine's platform (Linux images are what a registry holds for it)."""
    return Platform("linux", _host.machine()).normalized()


def of_descriptor(descriptor: Mapping[str, Any]) -> Platform | None:
    """The platform an index entry is for; None for entries without one, and for
    buildx attestation manifests (``unknown/unknown``)."""
    p = descriptor.get("platform")
    if not isinstance(p, Mapping) or not p.get("os") or not p.get("architecture"):
        return None
    if p["os"] == "unknown" or p["architecture"] == "unknown":
        return None
    return Platform(str(p["os"]), str(p["architecture"]), p.get("variant") or None)


def of_config(config: Mapping[str, Any]) -> Platform | None:
    """The platform an image config says it is for."""
    if config.get("os") and config.get("architecture"):
        return Platform(str(config["os"]), str(config["architecture"]),
                        config.get("variant") or None)
    return None


def matches(wanted: Platform, candidate: Platform) -> bool:
    """Exactly the same platform, however either is spelled."""
    return wanted.normalized() == candidate.normalized()


def preference(wanted: Platform) -> list[Platform]:
    """``wanted`` and the platforms it runs, best first, all normalised."""
    exact = wanted.normalized()
    lower = _COMPATIBLE.get((exact.architecture, exact.variant or ""), ())
    return [exact] + [Platform(exact.os, exact.architecture, v) for v in lower]


def best(wanted: Platform, candidates: Sequence[Platform | None]) -> int | None:
    """The index of the candidate that suits ``wanted`` best, or None when none does."""
    normalized = [c.normalized() if c else None for c in candidates]
    for choice in preference(wanted):
        if choice in normalized:
            return normalized.index(choice)
    return None


def describe(platforms: Iterable[Platform | None]) -> str:
    names = sorted({str(p) for p in platforms if p})
    return ", ".join(names) if names else "none"
