"""Tag rules: which of a repository's tags a sync keeps.

Applied in this order: include globs (any), regular expression (``re.search``),
exclude globs, semver range, then keep the latest N (by semver, or by the image's
``created`` date, which :mod:`.plan` reads from each candidate's config). What is
left is sorted by name. ``in_scope`` (everything but latest N) is what ``--prune`` may
delete from: a tag the rules would never have copied is never deleted.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Mapping

from ..errors import UsageError

# lenient: v1, 1.2, 1.2.3, v1.2.3-rc.1+build
_VERSION_RE = re.compile(r"^[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?"
                         r"(?:\+[0-9A-Za-z.-]+)?$")
_COMPARATOR_RE = re.compile(r"^\s*(>=|<=|==|!=|>|<|=)?\s*(\S+)\s*$")


@dataclass(frozen=True, order=True)
class Version:
    """A semantic version; a pre-release sorts before its release."""

    numbers: tuple[int, int, int]
    release: bool  # no pre-release part: True sorts after False
    pre: tuple[tuple[int, int | str], ...]

    @classmethod
    def parse(cls, text: str) -> Version | None:
        match = _VERSION_RE.match(text)
        if match is None:
            return None
        major, minor, patch, pre = match.groups()
        parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in (pre or "").split(".")
                      if p)
        return cls((int(major), int(minor or 0), int(patch or 0)), pre is None, parts)


_OPS = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    "<": lambda a, b: a < b, "==": lambda a, b: a == b, "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


@dataclass(frozen=True)
class SemverRange:
    """``>=1.2,<2``: every comparator must hold; a tag that is no version never does.
    A pre-release sorts before its release, yet is not ``<`` it (as PEP 440 has it):
    ``<2`` means the 1.x line, not ``2.0.0-rc.1``."""

    comparators: tuple[tuple[str, Version], ...]

    @classmethod
    def parse(cls, text: str) -> SemverRange:
        comparators = []
        for part in text.split(","):
            match = _COMPARATOR_RE.match(part)
            version = Version.parse(match.group(2)) if match else None
            if match is None or version is None:
                raise UsageError(f"semver range {text!r}: {part.strip()!r} is not a "
                                 f"comparison such as >=1.2 or <2")
            comparators.append((match.group(1) or "==", version))
        return cls(tuple(comparators))

    def contains(self, tag: str) -> bool:
        version = Version.parse(tag)
        return version is not None and all(
            _OPS[op](version, v) and not (op == "<" and v.release and not version.release
                                          and version.numbers == v.numbers)
            for op, v in self.comparators)


@dataclass(frozen=True)
class TagRules:
    """One source's tag rules; the defaults keep every tag."""

    include: tuple[str, ...] = ("*",)
    regex: re.Pattern[str] | None = None
    exclude: tuple[str, ...] = ()
    semver: SemverRange | None = None
    latest: int | None = None
    order: str = "semver"  # what "latest" means: "semver", or "created" (the config's date)
    immutable: tuple[str, ...] = ()  # present in the destination: never looked at again

    def in_scope(self, tag: str) -> bool:
        return (any(fnmatch.fnmatchcase(tag, g) for g in self.include)
                and (self.regex is None or self.regex.search(tag) is not None)
                and not any(fnmatch.fnmatchcase(tag, g) for g in self.exclude)
                and (self.semver is None or self.semver.contains(tag)))

    @property
    def by_date(self) -> bool:
        return self.latest is not None and self.order == "created"

    def select(self, tags: Iterable[str]) -> list[str]:
        """The tags to copy; with :attr:`by_date`, every candidate (see :meth:`newest`)."""
        kept = sorted({t for t in tags if self.in_scope(t)})
        if self.latest is not None and not self.by_date:
            versioned = sorted((v, t) for t in kept if (v := Version.parse(t)) is not None)
            kept = sorted(t for _, t in versioned[-self.latest:])
        return kept

    def newest(self, created: Mapping[str, datetime | None]) -> list[str]:
        """The ``latest`` tags with the newest dates (ties: by name); undated ones drop."""
        dated = sorted((when, tag) for tag, when in created.items() if when is not None)
        return sorted(tag for _, tag in dated[-(self.latest or 0):]) if self.latest else []

    def is_immutable(self, tag: str) -> bool:
        return any(fnmatch.fnmatchcase(tag, g) for g in self.immutable)
