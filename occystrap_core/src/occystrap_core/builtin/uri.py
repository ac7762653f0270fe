"""Fallback URI resolution: the generic ``scheme://target?key=value`` parser."""

from __future__ import annotations

from .. import hookimpl
from ..types import ResolvedURI
from ..uri import parse_uri


@hookimpl(trylast=True)
def occystrap_resolve_uri(uri: str) -> ResolvedURI:
    return parse_uri(uri)
