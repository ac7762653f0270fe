"""Image names as archives and layouts store them (``name:tag``), read with the
core's one grammar, not normalised: what the archive says is what is shown."""

from __future__ import annotations

from occystrap_core.errors import URIError
from occystrap_core.oci.reference import parse


def split_reference(ref: str) -> tuple[str, str | None]:
    """``("127.0.0.1:5000/team/app", "v1")`` from ``127.0.0.1:5000/team/app:v1``; a
    ``@digest`` is dropped. A name the grammar refuses (an archive may hold any
    string) is kept whole, without a tag."""
    try:
        parsed = parse(ref, normalize=False, default_tag=False)
    except URIError:
        return ref, None
    return parsed.name, parsed.tag


def join_reference(name: str | None, tag: str | None) -> str | None:
    if not name:
        return None
    return f"{name}:{tag}" if tag else name
