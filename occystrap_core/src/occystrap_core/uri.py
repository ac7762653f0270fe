"""Generic parsing of ``scheme://target?key=value`` URIs and ``name:key=value`` filters.

Values stay strings here. They are converted against the consumer's
:class:`~occystrap_core.types.OptionSpec` list by :func:`convert_options`, so
nothing is coerced by guessing (``pattern=1`` is the string ``"1"``).
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, unquote

from .errors import URIError, UsageError
from .types import OptionSpec, ResolvedURI

_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_GLOB_CHARS = re.compile(r"[*?\[]")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` is a :func:`fnmatch.fnmatchcase` glob, not a literal name."""
    return bool(_GLOB_CHARS.search(pattern))


def check_glob(pattern: str, what: str = "glob") -> str:
    """``pattern``, checked before it reaches :func:`fnmatch.fnmatchcase`: a range in a
    ``[...]`` class whose start comes after its end (``[z-a]``, ``[9-0]``) is empty,
    which fnmatch accepts quietly; it is almost always a typo, so it is refused
    (UsageError naming ``what``, the pattern and the range). Classes are found as fnmatch
    finds them: a ``[`` without its ``]`` is literal, ``]`` first in a class (after an
    optional ``!``) is a member, and a ``-`` first or last is a member."""
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] != "[":
            i += 1
            continue
        j = i + 1
        if j < n and pattern[j] == "!":
            j += 1
        start = j
        if j < n and pattern[j] == "]":
            j += 1
        end = pattern.find("]", j)
        if end < 0:
            return pattern  # no class: every later "[" is literal too
        body = pattern[start:end]
        k = 0
        while k < len(body):
            if k + 2 < len(body) and body[k + 1] == "-":
                low, high = body[k], body[k + 2]
                if low > high:
                    raise UsageError(f"{what} {pattern!r}: the range {low}-{high} is empty "
                                     f"({low!r} comes after {high!r}); did you mean "
                                     f"{high}-{low}?")
                k += 3
            else:
                k += 1
        i = end + 1
    return pattern


def has_pattern(target: str) -> bool:
    """Whether a ``ROOT/REPO[:TAG]`` target names many images (a glob past the root).
    Here, not in :mod:`~occystrap_core.listing`, which a single image's run never needs."""
    return is_glob(target.partition("/")[2])


def parse_uri(uri: str) -> ResolvedURI:
    """Split a URI into scheme, percent-decoded target and query values."""
    m = _URI_RE.match(uri)
    if not m:
        raise URIError(f"{uri!r} is not a URI: expected SCHEME://..., "
                       f"for example tar://image.tar or registry://HOST/REPO:TAG")
    scheme, rest = m.group(1).lower(), m.group(2)
    target, _, query = rest.partition("?")
    values: dict[str, list[str]] = {}
    # "+" is itself (a ref such as 1.0.0+build), not a space as in HTML forms: %20 is one
    for key, value in parse_qsl(query.replace("+", "%2B"), keep_blank_values=True):
        values.setdefault(key, []).append(value)
    return ResolvedURI(scheme=scheme, target=unquote(target), raw=uri,
                       query={k: tuple(v) for k, v in values.items()})


def split_filter(spec: str) -> tuple[str, dict[str, tuple[str, ...]]]:
    """Parse ``name[:key=value,key=value...]``.

    A comma separates options only where it is followed by ``key=``; elsewhere it
    belongs to the value, so ``exclude:pattern=*.{a,b}`` keeps its braces. Repeat a
    key to give several values (``exclude:pattern=/tmp/*,pattern=*.pyc``); write
    ``\\,`` for a literal comma followed by text that looks like ``key=``.
    """
    name, _, rest = spec.partition(":")
    name = name.strip().lower().replace("_", "-")
    if not name:
        raise URIError(f"filter {spec!r} has no name")
    options: dict[str, list[str]] = {}
    if rest:
        parts = re.split(r"(?<!\\),(?=\s*[A-Za-z_][A-Za-z0-9_-]*=)", rest)
        for part in parts:
            key, eq, value = part.partition("=")
            key = key.strip()
            if not eq or not key:
                raise URIError(f"filter {spec!r}: expected key=value, got {part!r}")
            options.setdefault(key.replace("-", "_"), []).append(value.replace("\\,", ","))
    return name, {k: tuple(v) for k, v in options.items()}


def _convert(spec: OptionSpec, raw: str, where: str) -> Any:
    if spec.type is bool:
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise URIError(f"{where}: option {spec.name!r} expects true or false, got {raw!r}")
    try:
        return spec.type(raw)
    except (TypeError, ValueError):
        raise URIError(f"{where}: option {spec.name!r} expects "
                       f"{spec.type.__name__}, got {raw!r}") from None


def convert_options(specs: Iterable[OptionSpec], given: Mapping[str, tuple[str, ...]],
                    where: str) -> dict[str, Any]:
    """Check ``given`` against ``specs`` and convert each value to its type."""
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        known = ", ".join(sorted(by_name)) or "none"
        raise URIError(f"{where}: unknown option {unknown[0]!r} (accepted: {known})")
    result: dict[str, Any] = {}
    for name, spec in by_name.items():
        values = given.get(name)
        if not values:
            if spec.required:
                raise URIError(f"{where}: option {name!r} is required")
            result[name] = () if spec.multiple else spec.default
            continue
        converted = [_convert(spec, v, where) for v in values]
        if spec.multiple:
            result[name] = tuple(converted)
        elif len(converted) > 1:
            raise URIError(f"{where}: option {name!r} given more than once")
        else:
            result[name] = converted[0]
    return result


def local_path(uri: ResolvedURI) -> str:
    """The file or directory a ``tar://``-like URI names, ``~`` expanded."""
    if not uri.target:
        raise URIError(f"{uri.raw!r} names no path")
    return os.path.expanduser(uri.target)
