"""What a registry that refuses deletes is told: one probe and one message for the
``delete`` command and ``sync --prune``.

CNCF distribution answers 405 to every DELETE unless ``storage.delete.enabled`` is
set. A registry that deletes manifests but not tags answers a tag DELETE with 400 or
405, as the distribution spec allows (distribution 2.x answers 400), so a 405 on a tag
alone does not tell the two apart. A DELETE of
:data:`NO_MANIFEST` does: no manifest has that digest, so it deletes nothing wherever
it is sent, and only a registry refusing every delete answers it 405.
"""

from __future__ import annotations

from occystrap_core.digest import of_bytes
from occystrap_core.errors import UnsupportedError

NO_MANIFEST = of_bytes(b"")  # the digest of no bytes: a manifest is a JSON document


def disabled(what: str, host: str) -> UnsupportedError:
    """The error for a registry that refuses every delete."""
    return UnsupportedError(f"{what}: {host} does not allow deletes, of tags or manifests "
                            f"(HTTP 405); CNCF distribution deletes only with "
                            f"storage.delete.enabled")
