"""What ``occystrap process`` tells scripts: one line or one JSON object on stdout
(the human-readable lines stay on stderr; all of it when the image went to stdout),
and the digest for ``--digestfile``."""

from __future__ import annotations

import os
from typing import Any

from .errors import UsageError
from .redact import redact_text, redact_uri
from .tempfiles import is_stdout, write_atomic


def line(destination: str, digest: str | None) -> str:
    """``DESTINATION@DIGEST``, or the destination alone when nothing has a digest."""
    shown = redact_uri(destination)
    return f"{shown}@{digest}" if digest else shown


def as_dict(destination: str, location: str, digest: str | None, media_type: str | None,
            stats: dict[str, int] | None, problems: list[str] | None) -> dict[str, Any]:
    """One image's report; ``stats`` is None for an image of a set, whose counts
    are the run's."""
    report: dict[str, Any] = {"destination": redact_uri(destination),
                              "location": redact_text(location),
                              "manifest_digest": digest, "media_type": media_type}
    if stats is not None:
        report["bytes"] = stats["bytes"]
        report["blobs"] = {"copied": stats["layers"], "skipped": stats["skipped"],
                           "mounted": stats["mounted"]}
    report["verified"] = None if problems is None else not problems
    report["problems"] = None if problems is None else [redact_text(p) for p in problems]
    return report


def on_stdout(location: str) -> bool:
    """Did the image itself go to stdout (``tar://-``)? Its report then goes to stderr."""
    return os.path.isabs(location) and is_stdout(location)


def check_digestfile(path: str) -> None:
    """Fail before copying when the digest could not be written where asked."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"--digestfile {path}: no directory {directory}")
    if os.path.isdir(path):
        raise UsageError(f"--digestfile {path} is a directory")


def write_digestfile(path: str, digest: str | None, destination: str) -> None:
    """The manifest digest, without a newline (as skopeo writes it), atomically."""
    if digest is None:
        raise UsageError(f"{redact_uri(destination)} has no manifest digest for --digestfile")
    write_atomic(path, digest.encode())
