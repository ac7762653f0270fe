"""Fallback URI resolution: the generic ``scheme://target?key=value`` parser.

It also takes occystrap 0.4.17's scheme names, with a note on stderr naming
today's: a plugin claiming one of them still wins, as this runs last.
"""

from __future__ import annotations

import dataclasses
import sys

from .. import hookimpl
from ..context import Context
from ..types import ResolvedURI, Role
from ..uri import parse_uri

#: 0.4.17 scheme -> (today's scheme, the roles it had then)
LEGACY_SCHEMES = {
    "oci": ("oci-bundle", ("output",)),
    "file": ("tar", ("input", "output")),
    "directory": ("dir", ("input", "output")),
}
_NOTED = "occystrap.legacy_schemes_noted"  # Context.shared: the schemes already noted


@hookimpl(trylast=True)
def occystrap_resolve_uri(uri: str, role: Role, ctx: Context) -> ResolvedURI:
    resolved = parse_uri(uri)
    legacy = LEGACY_SCHEMES.get(resolved.scheme)
    if legacy is None or role not in legacy[1]:
        return resolved
    scheme = legacy[0]
    noted: set[str] = ctx.shared(_NOTED, set)
    if resolved.scheme not in noted:  # once a run, however often the URI is resolved
        noted.add(resolved.scheme)
        print(f"Note: {resolved.scheme}:// is {scheme}:// now", file=sys.stderr)
    return dataclasses.replace(resolved, scheme=scheme, raw=scheme + uri[len(resolved.scheme):])
