"""Plugin discovery, isolation and the scheme tables.

Built-ins from :mod:`occystrap_core.builtin` are registered directly; everything
else comes from entry points of the group ``occystrap``, discovered once per
process. Each entry point is loaded, registered and validated on its own: one
that fails is recorded as ``failed`` with a single warning and the rest keep
working (``OCCYSTRAP_STRICT_PLUGINS=1`` re-raises instead).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import pluggy

from . import hookspecs
from .errors import PluginConflictError, UnknownSchemeError
from .types import ClientFactory, FilterSpec, InputSource, OutputTarget, TransportLayer

GROUP = "occystrap"
CORE = "occystrap-core"

# Contribution hooks: hook name -> (kind shown to users, dataclass it must return).
CONTRIBUTIONS: dict[str, tuple[str, type]] = {
    "occystrap_input_sources": ("input", InputSource),
    "occystrap_output_targets": ("output", OutputTarget),
    "occystrap_filters": ("filter", FilterSpec),
    "occystrap_transport": ("client factory", ClientFactory),
    "occystrap_transport_layers": ("transport layer", TransportLayer),
}


@dataclass
class PluginRecord:
    """What ``occystrap plugins list`` shows for one plugin."""

    name: str
    distribution: str | None
    version: str | None
    status: str = "active"  # active | disabled | failed
    error: str | None = None
    builtin: bool = False
    hooks: tuple[str, ...] = ()
    contributions: dict[str, list[Any]] = field(default_factory=dict)
    plugin: Any = None

    @property
    def label(self) -> str:
        return f"{self.distribution or self.name} {self.version or '?'}"

    def schemes(self, hook: str) -> tuple[str, ...]:
        return tuple(s for c in self.contributions.get(hook, ()) for s in c.schemes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "builtin": self.builtin,
            "hooks": list(self.hooks),
            "input_schemes": list(self.schemes("occystrap_input_sources")),
            "output_schemes": list(self.schemes("occystrap_output_targets")),
            "filters": [f.name for f in self.contributions.get("occystrap_filters", ())],
            "client_factories": [f.name for f in self.contributions.get("occystrap_transport", ())],
        }


@dataclass(frozen=True)
class Entry:
    """A contribution together with the plugin that made it."""

    item: Any
    record: PluginRecord


class Table:
    """Contributions of one kind keyed by scheme (or name), with provenance."""

    def __init__(self, kind: str, entries: dict[str, Entry]):
        self.kind = kind
        self.entries = entries

    def get(self, key: str) -> Entry:
        try:
            return self.entries[key.lower()]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none"
            noun = "filter" if self.kind == "filter" else f"{self.kind} scheme"
            raise UnknownSchemeError(
                f"unknown {noun} {key!r} (available: {known})") from None

    def __iter__(self):
        return iter(sorted(self.entries.items()))


@functools.cache
def discover_entry_points() -> tuple[Any, ...]:
    """Every entry point of the group, once per process; duplicates dropped.

    The same distribution can be seen twice (an egg-info in the tree, lib and lib64
    both on the path); keep the first entry point of each name.
    """
    import importlib_metadata

    seen: dict[str, Any] = {}
    for ep in importlib_metadata.entry_points(group=GROUP):
        seen.setdefault(ep.name, ep)
    return tuple(seen.values())


def _dist_of(ep: Any) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _env_list(name: str) -> set[str]:
    return {p.strip() for p in os.environ.get(name, "").split(",") if p.strip()}


class Plugins:
    """The loaded plugin set: a pluggy manager plus provenance records and tables."""

    def __init__(self, pm: pluggy.PluginManager, records: list[PluginRecord]):
        self.pm = pm
        self.records = records

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def active(self) -> list[PluginRecord]:
        return [r for r in self.records if r.status == "active"]

    def _table(self, hook: str, key: Callable[[Any], Iterable[str]]) -> Table:
        kind = CONTRIBUTIONS[hook][0]
        entries: dict[str, Entry] = {}
        for record in self.active():
            for item in record.contributions.get(hook, ()):
                for k in key(item):
                    if k in entries and entries[k].record is not record:
                        other = entries[k].record
                        raise PluginConflictError(
                            f"{kind} {k!r} is claimed by both {other.label} and "
                            f"{record.label}; disable one with --disable-plugin")
                    entries[k] = Entry(item, record)
        return Table(kind, entries)

    @functools.cached_property
    def inputs(self) -> Table:
        return self._table("occystrap_input_sources", lambda c: c.schemes)

    @functools.cached_property
    def outputs(self) -> Table:
        return self._table("occystrap_output_targets", lambda c: c.schemes)

    @functools.cached_property
    def filters(self) -> Table:
        return self._table("occystrap_filters", lambda c: (c.name,))

    @functools.cached_property
    def client_factories(self) -> Table:
        return self._table("occystrap_transport", lambda c: (c.name,))

    def transport_layers(self) -> list[TransportLayer]:
        layers = [item for r in self.active()
                  for item in r.contributions.get("occystrap_transport_layers", ())]
        return sorted(layers, key=lambda layer: layer.order)


def _collect(pm: pluggy.PluginManager, plugin: Any) -> dict[str, list[Any]]:
    """Call a plugin's contribution hooks and check what they return."""
    found: dict[str, list[Any]] = {}
    for caller in pm.get_hookcallers(plugin) or ():
        if caller.name not in CONTRIBUTIONS:
            continue
        kind, cls = CONTRIBUTIONS[caller.name]
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            items = list(impl.function() or ())
            for item in items:
                if not isinstance(item, cls):
                    raise TypeError(f"{caller.name} returned {type(item).__name__}, "
                                    f"expected {cls.__name__}")
            found[caller.name] = items
    return found


def _register(pm: pluggy.PluginManager, plugin: Any, record: PluginRecord) -> None:
    """Register and validate one plugin; on failure leave nothing registered."""
    try:
        pm.register(plugin, name=record.name)
        callers = pm.get_hookcallers(plugin) or []
        unknown = [c.name for c in callers if not c.has_spec()]
        if unknown:
            raise pluggy.PluginValidationError(
                plugin, f"unknown hook {', '.join(sorted(unknown))}")
        record.hooks = tuple(sorted(c.name for c in callers))
        record.contributions = _collect(pm, plugin)
        record.plugin = plugin
    except BaseException:
        if pm.has_plugin(record.name):  # pluggy leaves partial registrations behind
            pm.unregister(name=record.name)
        raise


def _warn(message: str) -> None:
    print(f"Warning: {message}", file=sys.stderr)


def load_plugins(
    disabled: Iterable[str] = (),
    *,
    builtins: Sequence[Any] | None = None,
    entry_points: Iterable[Any] | None = None,
    load_entry_points: bool = True,
    strict: bool | None = None,
    warn: Callable[[str], None] = _warn,
) -> Plugins:
    """Build the plugin set for one run.

    Args:
        disabled: Entry-point or distribution names to skip (added to
            ``OCCYSTRAP_DISABLE_PLUGINS``). Skipped plugins are never imported.
        builtins: Core plugins to register directly (default: the core's own).
        entry_points: Entry points to load instead of discovering them (tests).
        load_entry_points: False keeps only the built-ins.
        strict: Re-raise plugin errors; default from ``OCCYSTRAP_STRICT_PLUGINS``.
        warn: Where the one-line warning for a failed plugin goes.
    """
    from . import __version__

    if strict is None:
        strict = os.environ.get("OCCYSTRAP_STRICT_PLUGINS", "") not in ("", "0")
    blocked = set(disabled) | _env_list("OCCYSTRAP_DISABLE_PLUGINS")

    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("OCCYSTRAP_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    records: list[PluginRecord] = []

    if builtins is None:
        from .builtin import PLUGINS as builtins
    for module in builtins:
        record = PluginRecord(name=f"{CORE}.{module.__name__.rsplit('.', 1)[-1]}",
                              distribution=CORE, version=__version__, builtin=True)
        _register(pm, module, record)  # a broken built-in is a bug: let it raise
        records.append(record)

    eps = discover_entry_points() if entry_points is None else entry_points
    for ep in (eps if load_entry_points else ()):
        dist, version = _dist_of(ep)
        record = PluginRecord(name=ep.name, distribution=dist or ep.name, version=version)
        records.append(record)
        if ep.name in blocked or (dist and dist in blocked):
            record.status = "disabled"
            continue
        try:
            _register(pm, ep.load(), record)
        except Exception as e:
            if strict:
                raise
            record.status = "failed"
            record.error = f"{type(e).__name__}: {e}".splitlines()[0]
            warn(f"plugin {record.label} failed to load ({record.error}); "
                 f"disable it with --disable-plugin {ep.name}")
    return Plugins(pm, records)
