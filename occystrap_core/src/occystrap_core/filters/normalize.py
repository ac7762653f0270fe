"""``normalize-timestamps``: the same content gives the same digests, whenever it was built.

Every member's mtime becomes ``ts`` and the PAX time records (atime, ctime,
sub-second mtime, libarchive's creation time) are dropped. With ``config=true``
(the default) the config's ``created`` and every ``history[].created`` that is
present are set to ``ts`` as well, and so is the manifest's
``org.opencontainers.image.created`` annotation when it has one, since they would
otherwise still differ between two builds and change the config and manifest digests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from ..api import ImageOutput, Layer
from ..context import Context
from .rewrite import Emitted, LayerRewriteFilter, MemberRewriter

if TYPE_CHECKING:
    import tarfile

_TIME_RECORDS = ("atime", "ctime", "mtime", "LIBARCHIVE.creationtime")
CREATED = "org.opencontainers.image.created"


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Normalize(MemberRewriter):
    def __init__(self, ts: int):
        self.ts = ts

    def rewrite(self, member: tarfile.TarInfo, data: IO[bytes] | None) -> Emitted:
        member.mtime = self.ts
        member.pax_headers = {k: v for k, v in member.pax_headers.items()
                              if k not in _TIME_RECORDS}
        yield member, data


class NormalizeTimestamps(LayerRewriteFilter):
    name = "normalize-timestamps"

    def __init__(self, inner: ImageOutput, ctx: Context, ts: int, config: bool):
        super().__init__(inner, ctx)
        self.ts = ts
        self.config = config

    def member_rewriter(self, layer: Layer) -> MemberRewriter:
        return _Normalize(self.ts)

    def edit_config(self, config: dict[str, Any]) -> None:
        if not self.config:
            return
        created = rfc3339(self.ts)
        if "created" in config:
            config["created"] = created
        for entry in config.get("history") or ():
            if isinstance(entry, dict) and "created" in entry:
                entry["created"] = created

    def edit_annotations(self, annotations: dict[str, str]) -> None:
        if self.config and CREATED in annotations:  # buildah and buildx may set it
            annotations[CREATED] = rfc3339(self.ts)
