"""``exclude``: drop paths matching glob patterns from every layer.

Patterns (several with a repeated ``pattern=`` key):

- a leading ``/`` (or ``./``) is optional, and empty and ``.`` components are
  dropped; a pattern containing ``/`` is anchored at the image root, one without
  ``/`` matches a name at any depth (like .gitignore);
- ``*`` and ``?`` stay within one path component, ``**`` spans any number of
  them, ``[abc]`` and ``{a,b}`` work as in a shell;
- a pattern matching a directory excludes everything below it.

Whiteouts are never dropped because their own name matches: they delete lower
content that this filter also excludes, and dropping them would resurrect files
the filter did not match. They go only with an excluded directory.

A hardlink whose target was excluded becomes a regular file holding the target's
content (excluded files are spooled to the temp directory for that), and later
hardlinks to the same target point at it. A hardlink to a file excluded in a lower
layer is refused: that content is not in its layer, and a kept link would name a
file the image no longer has.
"""

from __future__ import annotations

import logging
import re
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from typing import IO

from ..api import ImageOutput, Layer
from ..context import Context
from ..errors import UnsupportedError, UsageError
from ..layertar import clean_name, whiteout_target
from .rewrite import Emitted, LayerRewriteFilter, MemberRewriter

log = logging.getLogger("occystrap.filters.exclude")


def _translate(glob: str) -> str:
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and glob.find("]", i + 2) != -1:
            end = glob.index("]", i + 2)
            body = glob[i + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        elif c == "{" and "}" in glob[i:]:
            end = glob.index("}", i)
            alternatives = glob[i + 1:end].split(",")
            out.append("(?:" + "|".join(_translate(a) for a in alternatives) + ")")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A regex matching member paths (no leading ``/``) for one glob."""
    glob = pattern.strip()
    anchored = "/" in glob.rstrip("/")
    # as member names are cleaned: "./tmp" and "usr//./share" name "tmp" and "usr/share"
    parts = [p for p in glob.split("/") if p not in ("", ".")]
    glob = "/".join(parts)
    if not glob:
        raise UsageError(f"exclude: pattern {pattern!r} matches everything; refusing")
    if ".." in parts:
        raise UsageError(f"exclude: pattern {pattern!r} has a '..' component, which no "
                         f"path in a layer has")
    regex = _translate(glob)
    try:
        return re.compile(regex if anchored else "(?:.*/)?" + regex)
    except re.error as e:  # a range such as [z-a]
        raise UsageError(f"exclude: invalid pattern {pattern!r}: {e}") from None


class PathMatcher:
    def __init__(self, patterns: Sequence[str]):
        if not patterns:
            raise UsageError("exclude: give at least one pattern=GLOB")
        self.patterns = [compile_pattern(p) for p in patterns]

    def matches(self, path: str) -> bool:
        """Does ``path`` or one of its parent directories match a pattern?"""
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if any(p.fullmatch(prefix) for p in self.patterns):
                return True
        return False


class _ExcludeLayer(MemberRewriter):
    def __init__(self, matcher: PathMatcher, temp_dir: str, index: int):
        self.matcher = matcher
        self.temp_dir = temp_dir
        self.index = index
        self.excluded = 0
        self._spool: IO[bytes] | None = None
        self._spooled: dict[str, tuple[int, int]] = {}  # excluded file -> (offset, size)
        self._aliases: dict[str, str] = {}  # excluded hardlink -> the file it linked to
        self._moved: dict[str, str] = {}  # excluded file -> the kept path now holding it

    def _dropped(self, name: str) -> bool:
        whiteout = whiteout_target(name)
        if whiteout is not None:
            return bool(whiteout[0]) and self.matcher.matches(whiteout[0])
        return self.matcher.matches(name)

    def rewrite(self, member: tarfile.TarInfo, data: IO[bytes] | None) -> Emitted:
        name = clean_name(member.name).lstrip("/")  # matched like any other path
        if self._dropped(name):
            self.excluded += 1
            if member.isreg() and data is not None:
                self._keep_for_links(name, member.size, data)
            elif member.islnk():
                target = clean_name(member.linkname)
                self._aliases[name] = self._aliases.get(target, target)
            return
        if member.islnk():
            target = clean_name(member.linkname)
            target = self._aliases.get(target, target)
            if target in self._moved:
                member.linkname = self._moved[target]
            elif target in self._spooled:
                offset, size = self._spooled.pop(target)
                assert self._spool is not None
                self._spool.seek(offset)
                member.type, member.linkname, member.size = tarfile.REGTYPE, "", size
                self._moved[target] = member.name
                yield member, self._spool
                return
            elif self.matcher.matches(target):
                # its content is in a lower layer, which this one cannot reach
                raise UnsupportedError(
                    f"exclude: layer {self.index}: {name!r} is a hardlink to {target!r}, "
                    f"excluded in a lower layer; exclude {name!r} too")
        yield member, data

    def _keep_for_links(self, name: str, size: int, data: IO[bytes]) -> None:
        if self._spool is None:
            # open for the whole layer, closed by close()
            self._spool = tempfile.TemporaryFile(dir=self.temp_dir, prefix="exclude-")  # noqa: SIM115
        self._spool.seek(0, 2)
        self._spooled[name] = (self._spool.tell(), size)
        shutil.copyfileobj(data, self._spool)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
        if self.excluded:
            log.info("layer %d: excluded %d entries", self.index, self.excluded)


class Exclude(LayerRewriteFilter):
    name = "exclude"

    def __init__(self, inner: ImageOutput, ctx: Context, patterns: Sequence[str]):
        super().__init__(inner, ctx)
        self.matcher = PathMatcher(patterns)

    def member_rewriter(self, layer: Layer) -> MemberRewriter:
        return _ExcludeLayer(self.matcher, self.ctx.temp_dir, layer.index)
