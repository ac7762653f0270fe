"""Image references as archives and layouts store them (``name:tag``)."""

from __future__ import annotations


def split_reference(ref: str) -> tuple[str, str | None]:
    """``("127.0.0.1:5000/team/app", "v1")`` from ``127.0.0.1:5000/team/app:v1``.

    The tag is after the last ``:`` only if that comes after the last ``/``;
    otherwise the colon belongs to a registry port. A ``@digest`` is dropped.
    """
    ref = ref.split("@", 1)[0]
    colon, slash = ref.rfind(":"), ref.rfind("/")
    if colon > slash:
        return ref[:colon], ref[colon + 1:] or None
    return ref, None


def join_reference(name: str | None, tag: str | None) -> str | None:
    if not name:
        return None
    return f"{name}:{tag}" if tag else name
