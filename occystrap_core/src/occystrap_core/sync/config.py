"""The sync configuration file (docs/sync.md), read and validated with line numbers.

PyYAML composes the file into nodes, which keep their position; every value is
checked here, so a mistake is one error naming the file, the line and the key,
before anything is listed or copied. ``${VAR}`` in a string is replaced by that
environment variable (an unset one is an error), so secrets need not be written
in the file.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

from ..errors import NOT_A_REGEX, OccystrapError, UsageError
from ..oci.reference import port_problem
from ..uri import check_glob
from .rules import SemverRange, TagRules

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HOST_RE = re.compile(r"(?:[a-z0-9._-]+|\[[0-9a-f:.]+\])(?::\d+)?")
_NAMESPACE_RE = re.compile(r"[a-z0-9._-]+(?:/[a-z0-9._-]+)*")


class ConfigError(UsageError):
    """A configuration file that cannot be used; names the file and line."""


@dataclass(frozen=True)
class RegistrySettings:
    """Per-registry settings: credentials, TLS and request budget. ``host`` may name
    a namespace or repository (``HOST/NS``): then it holds credentials only, for the
    repositories under it."""

    host: str
    username: str | None = None
    password: str | None = None
    token: str | None = None
    insecure: bool = False
    tls_verify: bool = True  # False: any certificate is accepted from this host
    ca_cert: str | None = None  # trusted for this host alone, instead of the usual roots
    requests_per_second: float | None = None
    concurrency: int | None = None  # requests in flight to it at once, lowered on 429


@dataclass(frozen=True)
class SourceSpec:
    """One entry of ``sources``: a pattern URI or an explicit list of images, where
    they go, and which tags. ``line`` is where it starts in the file."""

    line: int
    destinations: tuple[str, ...]
    pattern: str | None = None
    images: tuple[str, ...] = ()
    rules: TagRules = field(default_factory=TagRules)
    platforms: str | None = None
    filters: tuple[str, ...] = ()
    referrers: bool = False  # copy signatures, SBOMs... with each image (docs/referrers.md)
    referrer_types: tuple[str, ...] = ()  # ...of these artifactTypes only


@dataclass(frozen=True)
class SyncConfig:
    sources: tuple[SourceSpec, ...]
    registries: dict[str, RegistrySettings] = field(default_factory=dict)
    path: str = ""  # the file read, named in errors ("": the one-line form)


class _Reader:
    """Turns nodes into checked values, each error naming the file and line."""

    def __init__(self, path: str):
        self.path = path
        self.constructor = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node, message: str) -> ConfigError:
        return ConfigError(f"{self.path} line {node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.Node, what: str, keys: tuple[str, ...]
                ) -> dict[str, yaml.Node]:
        return {key: value for key, _, value in self.items(node, what, keys)}

    def items(self, node: yaml.Node, what: str, keys: tuple[str, ...]
              ) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """Each key (checked against ``keys``, when given), its node and its value. YAML
        merge keys (``<<: *anchor``) are expanded: the mapping's own keys override them,
        and the first of several merged mappings wins."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        own: dict[str, tuple[str, yaml.Node, yaml.Node]] = {}
        merged: dict[str, tuple[str, yaml.Node, yaml.Node]] = {}
        for key_node, value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                for part in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                    for item in self.items(part, what, keys):
                        merged.setdefault(item[0], item)
                continue
            key = self.scalar(key_node, f"a key of {what}")
            if not isinstance(key, str) and not keys:  # any name goes, but it is a name
                raise self.fail(key_node, f"{what}: {key!r} is not a name (quote it)")
            if not isinstance(key, str) or (keys and key not in keys):
                raise self.fail(key_node, f"unknown key {key!r} in {what} "
                                          f"(known: {', '.join(keys)})")
            if key in own:
                raise self.fail(key_node, f"{key!r} is given twice in {what}")
            own[key] = (key, key_node, value)
        return list({**merged, **own}.values())

    def scalar(self, node: yaml.Node, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value")
        value = self.constructor.construct_object(node)
        if isinstance(value, str):
            def env(match: re.Match[str]) -> str:
                name = match.group(1)
                if name not in os.environ:
                    raise self.fail(node, f"{what}: environment variable {name} is not set")
                return os.environ[name]

            value = _ENV_RE.sub(env, value)
        return value

    def text(self, node: yaml.Node, what: str) -> str:
        value = self.scalar(node, what)
        if not isinstance(value, str) or not value:
            raise self.fail(node, f"{what} must be a non-empty string")
        return value

    def number(self, node: yaml.Node, what: str, kind: Callable[[Any], Any],
               minimum: float) -> Any:
        value = self.scalar(node, what)
        # YAML's .nan passes any comparison, and .inf any lower bound
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < minimum \
                or (kind is int and not isinstance(value, int)):
            raise self.fail(node, f"{what} must be a{'n integer' if kind is int else ' number'}"
                                  f" of at least {minimum:g}")
        return kind(value)

    def flag(self, node: yaml.Node, what: str) -> bool:
        value = self.scalar(node, what)
        if not isinstance(value, bool):
            raise self.fail(node, f"{what} must be true or false")
        return value

    def texts(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        """A string, or a list of them."""
        if isinstance(node, yaml.SequenceNode):
            if not node.value:
                raise self.fail(node, f"{what} is an empty list")
            return tuple(self.text(item, what) for item in node.value)
        return (self.text(node, what),)


SOURCE_KEYS = ("source", "images", "destinations", "tags", "platforms", "filters",
               "referrers", "referrer_types")
TAG_KEYS = ("include", "regex", "exclude", "semver", "latest", "order", "immutable")
CREDENTIAL_KEYS = ("username", "password", "token")
REGISTRY_KEYS = (*CREDENTIAL_KEYS, "insecure", "tls_verify", "ca_cert",
                 "requests_per_second", "concurrency")


def _rules(r: _Reader, node: yaml.Node | None, what: str) -> TagRules:
    if node is None:
        return TagRules()
    keys = r.mapping(node, what, TAG_KEYS)
    rules: dict[str, Any] = {}
    for key in ("include", "exclude", "immutable"):
        if key in keys:
            rules[key] = r.texts(keys[key], f"{what}.{key}")
            try:
                for glob in rules[key]:
                    check_glob(glob, f"{what}.{key}")
            except OccystrapError as e:
                raise r.fail(keys[key], str(e)) from None
    if "regex" in keys:
        text = r.text(keys["regex"], f"{what}.regex")
        try:
            rules["regex"] = re.compile(text)
        except NOT_A_REGEX as e:
            raise r.fail(keys["regex"], f"{what}.regex {text!r}: {e}") from None
    if "semver" in keys:
        try:
            rules["semver"] = SemverRange.parse(r.text(keys["semver"], f"{what}.semver"))
        except OccystrapError as e:
            raise r.fail(keys["semver"], f"{what}.{e}") from None
    if "latest" in keys:
        rules["latest"] = r.number(keys["latest"], f"{what}.latest", int, 1)
    if "order" in keys:
        rules["order"] = r.text(keys["order"], f"{what}.order")
        if rules["order"] not in ("semver", "created"):
            raise r.fail(keys["order"], f"{what}.order must be semver or created")
    return TagRules(**rules)


def _source(r: _Reader, node: yaml.Node, n: int, defaults: dict[str, yaml.Node]) -> SourceSpec:
    what = f"sources[{n}]"
    keys = {**defaults, **r.mapping(node, what, SOURCE_KEYS)}
    if ("source" in keys) == ("images" in keys):
        raise r.fail(node, f"{what} needs exactly one of 'source' (a pattern) or 'images' "
                           f"(a list)")
    if "destinations" not in keys:
        raise r.fail(node, f"{what} has no 'destinations' (nor does 'defaults')")
    platforms = None
    if "platforms" in keys:
        platforms = ",".join(r.texts(keys["platforms"], f"{what}.platforms"))
    return SourceSpec(
        line=node.start_mark.line + 1,
        destinations=r.texts(keys["destinations"], f"{what}.destinations"),
        pattern=r.text(keys["source"], f"{what}.source") if "source" in keys else None,
        images=r.texts(keys["images"], f"{what}.images") if "images" in keys else (),
        rules=_rules(r, keys.get("tags"), f"{what}.tags"),
        platforms=platforms,
        filters=r.texts(keys["filters"], f"{what}.filters") if "filters" in keys else (),
        referrers=r.flag(keys["referrers"], f"{what}.referrers") if "referrers" in keys
        else False,
        referrer_types=r.texts(keys["referrer_types"], f"{what}.referrer_types")
        if "referrer_types" in keys else ())


def _registry(r: _Reader, host: str, node: yaml.Node) -> RegistrySettings:
    what = f"registries.{host}"
    # TLS and budgets are the host's; a namespace's own are its credentials
    keys = r.mapping(node, what, CREDENTIAL_KEYS if "/" in host else REGISTRY_KEYS)
    values: dict[str, Any] = {}
    for key in CREDENTIAL_KEYS:
        if key in keys:
            values[key] = r.text(keys[key], f"{what}.{key}")
    for key in ("insecure", "tls_verify"):
        if key in keys:
            values[key] = r.flag(keys[key], f"{what}.{key}")
    if "ca_cert" in keys:
        values["ca_cert"] = r.text(keys["ca_cert"], f"{what}.ca_cert")
        if not os.path.exists(values["ca_cert"]):  # a PEM file or a directory of *.crt
            raise r.fail(keys["ca_cert"], f"{what}.ca_cert: no such file "
                                          f"{values['ca_cert']!r}")
    if "requests_per_second" in keys:
        values["requests_per_second"] = r.number(keys["requests_per_second"],
                                                 f"{what}.requests_per_second", float, 0.01)
    if "concurrency" in keys:
        values["concurrency"] = r.number(keys["concurrency"], f"{what}.concurrency", int, 1)
    return RegistrySettings(host=host, **values)


def parse(text: str, path: str) -> SyncConfig:
    """The configuration in ``text`` (read from ``path``, named in errors)."""
    r = _Reader(path)
    try:
        root = yaml.compose(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{path}: not a configuration: its collections are nested "
                          f"too deeply") from None
    if root is None:
        raise ConfigError(f"{path}: the file is empty; it needs a 'sources' list")
    top = r.mapping(root, "the file", ("sources", "defaults", "registries"))
    defaults = r.mapping(top["defaults"], "defaults",
                         ("destinations", "tags", "platforms", "filters", "referrers",
                          "referrer_types")) \
        if "defaults" in top else {}
    sources = top.get("sources")
    if not isinstance(sources, yaml.SequenceNode) or not sources.value:
        raise r.fail(sources or root, "'sources' must be a non-empty list")
    registries: dict[str, RegistrySettings] = {}
    if "registries" in top:
        for key, key_node, node in r.items(top["registries"], "registries", ()):
            host = key.lower().rstrip("/")  # as httpx and the credential hook see it
            name, slash, namespace = host.partition("/")
            if not _HOST_RE.fullmatch(name) or slash and not _NAMESPACE_RE.fullmatch(namespace):
                raise r.fail(key_node, f"registries: {key!r} is not HOST[:PORT][/NAMESPACE] "
                                       f"(no scheme: the host as written in the URIs)")
            problem = port_problem(name)
            if problem:
                raise r.fail(key_node, f"registries: {key!r}: {problem}")
            if host in registries:
                raise r.fail(key_node, f"registries: {host!r} is given twice")
            registries[host] = _registry(r, host, node)
    return SyncConfig(tuple(_source(r, node, n, defaults) for n, node in
                            enumerate(sources.value)), registries, path)


def load(path: str) -> SyncConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the configuration: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    return parse(text, path)
