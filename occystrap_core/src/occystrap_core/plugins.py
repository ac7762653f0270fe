"""Plugin discovery, isolation and the scheme tables.

Built-ins from :mod:`occystrap_core.builtin` are registered directly; everything
else comes from entry points of the group ``occystrap``, discovered once per
process. Each entry point is loaded, registered and validated on its own: one
that fails is recorded as ``failed`` with a single warning and the rest keep
working (``OCCYSTRAP_STRICT_PLUGINS=1`` re-raises instead).

Once every plugin is registered, the contribution hooks are called through pluggy,
once per contributing plugin (:meth:`pluggy.PluginManager.subset_hook_caller`), in
pluggy's call order: tracing, ``tryfirst``/``trylast`` and wrappers apply as to any
hook, and each contribution stays attributed to the distribution that made it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Hashable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator, Sequence

import pluggy

from . import hookspecs
from .errors import PluginConflictError, UnknownSchemeError
from .types import (
    ClientFactory,
    CommandSpec,
    FilterSpec,
    GlobalOption,
    InputSource,
    Lister,
    OutputTarget,
    TransportLayer,
)

GROUP = "occystrap"
CORE = "occystrap-core"

# Contribution hooks: hook name -> (kind shown to users, dataclass it must return).
CONTRIBUTIONS: dict[str, tuple[str, type]] = {
    "occystrap_input_sources": ("input", InputSource),
    "occystrap_output_targets": ("output", OutputTarget),
    "occystrap_filters": ("filter", FilterSpec),
    "occystrap_transport": ("client factory", ClientFactory),
    "occystrap_transport_layers": ("transport layer", TransportLayer),
    "occystrap_global_options": ("global option", GlobalOption),
    "occystrap_commands": ("command", CommandSpec),
    "occystrap_listers": ("lister", Lister),
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
        def names(hook: str) -> list[str]:
            return [c.name for c in self.contributions.get(hook, ())]

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
            "filters": names("occystrap_filters"),
            "client_factories": names("occystrap_transport"),
            "global_options": names("occystrap_global_options"),
            "commands": names("occystrap_commands"),
            "listers": list(self.schemes("occystrap_listers")),
        }


def blamed(plugins: Plugins | None, error: BaseException) -> list[PluginRecord]:
    """The loaded third-party plugins whose own code ``error``'s traceback passes through
    (or that of an exception it was raised from, or while handling): those an
    unexpected error may be a bug in. One merely used in the run is not."""
    if plugins is None:
        return []
    passed = set(_traceback_modules(error))
    candidates = [r for r in plugins.records
                  if not r.builtin and r.status == "active" and r.plugin is not None]
    if not passed or not candidates:
        return []
    installed = _installed_packages()
    return [r for r in candidates
            if any(_within(m, _own_code(plugins.pm, r, installed)) for m in passed)]


_CORE_PACKAGES = {"", "occystrap_core", "occystrap"}  # never all of a plugin's own code


def _within(module: str, prefixes: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _normalised(distribution: str) -> str:
    return distribution.lower().replace("_", "-").replace(".", "-")


def _installed_packages() -> dict[str, set[str]]:
    """Distribution (normalised name) -> the top-level packages it installs."""
    from importlib.metadata import packages_distributions

    by_dist: dict[str, set[str]] = {}
    try:
        for package, dists in packages_distributions().items():
            for dist in dists:
                by_dist.setdefault(_normalised(dist), set()).add(package)
    except Exception:  # some distribution's broken metadata: plugins' modules still count
        pass
    return by_dist


def _own_code(pm: pluggy.PluginManager, record: PluginRecord,
              installed: dict[str, set[str]]) -> set[str]:
    """The modules (and packages: every module below them) of a plugin's own code: the
    package of the module its entry point loaded, the modules of its hook functions,
    and the top-level packages its distribution installs."""
    plugin = record.plugin
    module = plugin.__name__ if isinstance(plugin, ModuleType) else \
        getattr(plugin, "__module__", None) or type(plugin).__module__
    own = {module.rpartition(".")[0] or module}
    own |= {impl.function.__module__ for caller in pm.get_hookcallers(plugin) or ()
            for impl in caller.get_hookimpls() if impl.plugin is plugin}
    own |= installed.get(_normalised(record.distribution or record.name), set())
    return own - _CORE_PACKAGES


def _traceback_modules(error: BaseException) -> Iterator[str]:
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        tb = e.__traceback__
        while tb is not None:
            yield str(tb.tb_frame.f_globals.get("__name__", ""))
            tb = tb.tb_next
        pending += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]


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
            filter_ = self.kind == "filter"
            noun = "filter" if filter_ else f"{self.kind} scheme"
            # a typo (regsitry://) gets the nearest name
            import difflib

            near = [n if filter_ else f"{n}://"
                    for n in difflib.get_close_matches(key.lower(), self.entries, n=1)]
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise UnknownSchemeError(
                f"unknown {noun} {key!r} (available: {known}){hint}") from None

    def __iter__(self) -> Iterator[tuple[str, Entry]]:
        return iter(sorted(self.entries.items()))


@functools.cache
def discover_entry_points() -> tuple[Any, ...]:
    """Every entry point of the group, once per process; duplicates dropped.

    The same distribution can be seen twice (an egg-info in the tree, lib and lib64
    both on the path); keep the first entry point of each name. Remembered between
    runs while the installed distributions stay the same (:mod:`.entrypoints`).
    """
    from .entrypoints import find

    seen: dict[str, Any] = {}
    for ep in find(GROUP):
        seen.setdefault(ep.name, ep)
    return tuple(seen.values())


def _dist_of(ep: Any) -> tuple[str | None, str | None]:
    from .entrypoints import Found

    if isinstance(ep, Found):
        return ep.distribution, ep.version
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _env_list(name: str) -> set[str]:
    return {p.strip() for p in os.environ.get(name, "").split(",") if p.strip()}


class Plugins:
    """The loaded plugin set: a pluggy manager plus provenance records and tables."""

    def __init__(self, pm: pluggy.PluginManager, records: list[PluginRecord],
                 collected: dict[str, list[Entry]]):
        self.pm = pm
        self.records = records
        self.collected = collected

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def active(self) -> list[PluginRecord]:
        return [r for r in self.records if r.status == "active"]

    def contributions(self, hook: str) -> list[Entry]:
        """What active plugins contributed through ``hook``, in pluggy's call order."""
        return [e for e in self.collected.get(hook, ()) if e.record.status == "active"]

    def _table(self, hook: str, key: Callable[[Any], Iterable[str]]) -> Table:
        kind = CONTRIBUTIONS[hook][0]
        entries: dict[str, Entry] = {}
        for entry in self.contributions(hook):
            for k in key(entry.item):
                if k in entries and entries[k].record is not entry.record:
                    raise PluginConflictError(
                        f"{kind} {k!r} is claimed by both {entries[k].record.label} and "
                        f"{entry.record.label}; disable one with --disable-plugin")
                entries[k] = entry
        return Table(kind, entries)

    @functools.cached_property
    def inputs(self) -> Table:
        return self._table("occystrap_input_sources", lambda c: c.schemes)

    @functools.cached_property
    def outputs(self) -> Table:
        return self._table("occystrap_output_targets", lambda c: c.schemes)

    @functools.cached_property
    def listers(self) -> Table:
        return self._table("occystrap_listers", lambda c: c.schemes)

    @functools.cached_property
    def filters(self) -> Table:
        return self._table("occystrap_filters", lambda c: (c.name,))

    @functools.cached_property
    def client_factories(self) -> Table:
        return self._table("occystrap_transport", lambda c: (c.name,))

    @functools.cached_property
    def global_options(self) -> Table:
        return self._table("occystrap_global_options", lambda o: (o.name,))

    @functools.cached_property
    def commands(self) -> Table:
        return self._table("occystrap_commands", lambda c: (c.name,))

    def transport_layers(self) -> list[TransportLayer]:
        layers = [e.item for e in self.contributions("occystrap_transport_layers")]
        return sorted(layers, key=lambda layer: layer.order)  # stable: ties keep call order


def _contributors(caller: pluggy.HookCaller) -> list[pluggy.HookImpl]:
    """The non-wrapper implementations of a hook, in the order pluggy calls them."""
    return [i for i in reversed(caller.get_hookimpls()) if not (i.wrapper or i.hookwrapper)]


def _call_one(pm: pluggy.PluginManager, hook: str, impl: pluggy.HookImpl,
              others: Iterable[Any]) -> list[Any]:
    """Call ``hook`` through pluggy for one plugin (wrappers included); check the results."""
    cls = CONTRIBUTIONS[hook][1]
    results = pm.subset_hook_caller(hook, remove_plugins=others)()
    items = [item for result in results for item in result or ()]
    for item in items:
        if not isinstance(item, cls):
            raise TypeError(f"{hook} returned {type(item).__name__}, expected {cls.__name__}")
    return items


def _collect(pm: pluggy.PluginManager, records: Sequence[PluginRecord],
             fail: Callable[[PluginRecord, Exception], None]) -> dict[str, list[Entry]]:
    """Call every contribution hook, one plugin at a time, and record what each gave.

    A plugin whose hook raises or returns the wrong type is handed to ``fail`` (which
    unregisters it) and the others are still collected.
    """
    by_name = {r.name: r for r in records}
    collected: dict[str, list[Entry]] = {}
    for hook in CONTRIBUTIONS:
        impls = _contributors(getattr(pm.hook, hook))
        entries = collected[hook] = []
        for impl in impls:
            record = by_name[impl.plugin_name]
            if record.status != "active":  # failed in an earlier hook
                continue
            try:
                items = _call_one(pm, hook, impl, [i.plugin for i in impls if i is not impl])
            except Exception as e:
                fail(record, e)
                continue
            record.contributions[hook] = items
            entries += [Entry(item, record) for item in items]
    return collected


def _register(pm: pluggy.PluginManager, plugin: Any, record: PluginRecord) -> None:
    """Register and validate one plugin; on failure leave nothing registered."""
    if not isinstance(plugin, Hashable):  # pluggy keeps plugins in sets and dict keys
        raise TypeError(f"plugin object {type(plugin).__name__} is not hashable: use a "
                        f"module, a class or an instance of one")
    try:
        pm.register(plugin, name=record.name)
        callers = pm.get_hookcallers(plugin) or []
        unknown = [c.name for c in callers if not c.has_spec()]
        if unknown:
            raise pluggy.PluginValidationError(
                plugin, f"unknown hook {', '.join(sorted(unknown))}")
        record.hooks = tuple(sorted(c.name for c in callers))
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

    def fail(record: PluginRecord, error: Exception) -> None:
        if strict or record.builtin:  # a broken built-in is a bug: let it raise
            raise error
        if pm.has_plugin(record.name):
            pm.unregister(name=record.name)
        record.status, record.plugin, record.contributions = "failed", None, {}
        record.error = f"{type(error).__name__}: {error}".splitlines()[0]
        warn(f"plugin {record.label} failed to load ({record.error}); "
             f"disable it with --disable-plugin {record.name}")

    if builtins is None:
        from .builtin import PLUGINS

        builtins = PLUGINS
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
            fail(record, e)
    # after every registration, so that wrappers and tryfirst apply whatever the load order
    return Plugins(pm, records, _collect(pm, records, fail))
