"""The run's context: settings, loaded plugins, shared clients, statistics, temp space.

One :class:`Context` is made per CLI invocation and handed to every factory and
hook; nothing is kept in module globals.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from . import redact, tempfiles
from .oci.platform import Platform
from .progress import Progress
from .tempfiles import TempDir
from .types import Credentials
from .workers import CancelToken

if TYPE_CHECKING:
    import httpx

    from .layercache import LayerCache
    from .plugins import Plugins
    from .transport.retry import RetryPolicy

log = logging.getLogger("occystrap.context")
TEMP_PREFIX = "occystrap-"


@dataclass
class Settings:
    """Global options, from the command line or ``OCCYSTRAP_*`` environment variables."""

    verbose: bool = False
    debug: bool = False
    parallel: int = 4
    image_parallel: int = 3  # images at once when a source expands to many
    retries: int = 3
    rate_limit: float | None = None
    insecure: bool = False
    username: str | None = None
    password: str | None = None
    src_username: str | None = None
    src_password: str | None = None
    dest_username: str | None = None
    dest_password: str | None = None
    platform: Platform | None = None  # chosen by the user; None: this host's
    all_platforms: bool = False  # copy every platform of an index, and the index
    temp_dir: str | None = None
    ca_cert: str | None = None
    tls_verify: bool = True  # False: accept any certificate (--tls-verify=false)
    # HOST[:PORT] -> CA file trusted for that host alone, instead of ca_cert and the system
    # roots (sync's per-registry ca_cert); other hosts are unaffected
    host_ca_certs: Mapping[str, str] = field(default_factory=dict)
    client_cert: str | None = None
    client_key: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    min_speed: int = 1024  # bytes/s every answer must keep up over read_timeout; 0: none
    max_connections: int = 20
    http2: bool = True
    disabled_plugins: tuple[str, ...] = ()
    progress_bars: bool = True  # on a terminal; otherwise, or False, plain lines
    progress_interval: float = 10.0  # seconds between plain progress lines; 0: none
    # plugins' own global options (occystrap_global_options): option name -> value
    plugin_options: Mapping[str, Any] = field(default_factory=dict)
    verify: bool = True  # after process, re-read what was written: documents, blob sizes
    verify_full: bool = False  # ... and re-hash every blob too
    layer_cache: str | None = None  # directory of the persistent layer cache (docs/cache.md)

    def __post_init__(self) -> None:
        self.verify = self.verify or self.verify_full  # asking for full asks for verify


class Stats:
    """Thread-safe counters for the run's summary line."""

    FIELDS = ("layers", "bytes", "skipped", "mounted", "retries", "rate_limit_waits",
              "rate_limited", "limit_raised", "cache_hits")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values = dict.fromkeys(self.FIELDS, 0)

    def add(self, name: str, n: int = 1, **detail: Any) -> None:
        """Count ``n`` more ``name``; ``detail`` (the host...) is for subclasses that
        report each occurrence (sync's events)."""
        with self._lock:
            self.values[name] += n

    def __getitem__(self, name: str) -> int:
        return self.values[name]


class Context:
    """Everything a plugin may need during a run. Close it (or use ``with``) at the end."""

    def __init__(self, settings: Settings | None = None, plugins: Plugins | None = None):
        self.settings = settings or Settings()
        s = self.settings
        self._plugins = plugins
        redact.remember(s.password, s.src_password, s.dest_password)
        if s.plugin_options:  # the plugins that declared them say which are secret
            redact.remember(*(s.plugin_options.get(name)
                              for name, e in self.plugins.global_options if e.item.secret))
        self.stats = Stats()
        self.progress: Progress = Progress()  # silent unless a command installs a reporter
        self._lock = threading.RLock()  # shared() factories may call back in
        self._tempdir: TempDir | None = None
        self.cancel = CancelToken()  # set when the run is interrupted: work stops
        self._state: dict[str, Any] = {}
        self._closers: list[Callable[[], None]] = []
        self._unfinished: list[Callable[[], None]] = []  # aborts of outputs being written

    @property
    def plugins(self) -> Plugins:
        if self._plugins is None:
            from .plugins import load_plugins

            self._plugins = load_plugins(self.settings.disabled_plugins)
        return self._plugins

    @property
    def temp_dir(self) -> str:
        """A private temporary directory for this run, removed by :meth:`close`."""
        with self._lock:
            if self._tempdir is None:
                root = self.settings.temp_dir or tempfile.gettempdir()
                tempfiles.sweep(root, TEMP_PREFIX)  # what killed runs left behind
                self._tempdir = TempDir(root, TEMP_PREFIX)
            return self._tempdir.path

    @property
    def made_temp_dir(self) -> str | None:
        """The run's temporary directory if it made one (and has not removed it)."""
        return self._tempdir.path if self._tempdir else None

    def shared(self, key: str, factory: Any) -> Any:
        """A per-run singleton (token buckets, caches) created by ``factory()`` once."""
        with self._lock:
            if key not in self._state:
                self._state[key] = factory()
            return self._state[key]

    @property
    def layer_cache(self) -> LayerCache | None:
        """The persistent layer cache (``--layer-cache``), opened on first use; None
        without the option, or when it cannot be used (a warning says why)."""
        if not self.settings.layer_cache:
            return None
        cache: LayerCache | None = self.shared("layer_cache", self._open_layer_cache)
        return cache

    @property
    def layer_cache_dir(self) -> str | None:
        """The ``--layer-cache`` directory, for the state kept beside the cache (upload
        journals, partial downloads); None without the option, or when the cache cannot
        be used: that state then goes where it goes without the option, and the cache's
        one warning said why."""
        return self.settings.layer_cache if self.layer_cache is not None else None

    def _open_layer_cache(self) -> LayerCache | None:
        from .layercache import open_for_run

        assert self.settings.layer_cache
        cache = open_for_run(self.settings.layer_cache)
        if cache is not None:
            self.call_on_close(cache.close)
        return cache

    @cached_property
    def retry(self) -> RetryPolicy:
        """The run's one retry policy (``--retries``): requests, resumed downloads and
        restarted uploads all retry through it."""
        from .transport.clock import get_clock
        from .transport.retry import RetryPolicy

        s = self.settings
        return RetryPolicy(s.retries, get_clock(self), min_speed=s.min_speed,
                           window=s.read_timeout,
                           on_retry=lambda host: self.stats.add("retries", host=host))

    @cached_property
    def _clients(self) -> Any:
        from .transport.pool import ClientPool

        return ClientPool(self)

    def http_client(self, factory: str, host: str, *, scheme: str = "https",
                    credentials: Credentials | None = None,
                    scope: dict[str, Any] | None = None,
                    tls_verify: bool = True) -> httpx.Client:
        """The run's shared client for ``host`` built by the named client factory.

        One client per (factory, host, credentials) per run, safe to share between
        threads, with the global retry, rate-limit and TLS settings applied.
        ``tls_verify=False`` makes this client accept any TLS certificate, for every
        host it talks to (a token realm included), as ``--tls-verify=false`` does.
        """
        return self._clients.get(factory, host, scheme=scheme, credentials=credentials,
                                 scope=scope or {}, tls_verify=tls_verify)

    def credentials(self, host: str, role: str,
                    repository: str | None = None) -> Credentials | None:
        """Credentials for ``host`` (for its ``repository``, when the credentials are
        for one) from the ``occystrap_credentials`` hook chain."""
        return self.plugins.hook.occystrap_credentials(host=host, role=role, ctx=self,
                                                       repository=repository)

    def call_on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the run ends (after its clients are closed)."""
        with self._lock:
            self._closers.append(callback)

    @contextlib.contextmanager
    def unfinished(self, abort: Callable[[], None]) -> Iterator[None]:
        """An output is being written: should the run be interrupted before the block
        ends, :meth:`close` calls its ``abort`` (after :mod:`~occystrap_core.workers`'
        grace, a copy on a worker thread may still be blocked in a read)."""
        with self._lock:
            self._unfinished.append(abort)
        try:
            yield
        finally:
            with self._lock:
                self._unfinished.remove(abort)

    def close(self) -> None:
        if self.cancel.is_set():  # while the clients can still cancel upload sessions
            with self._lock:
                aborts, self._unfinished = self._unfinished, []
            for abort in aborts:
                try:
                    abort()
                except Exception as e:  # the others still get theirs
                    log.warning("cleanup after the interrupt failed: %s", e)
        if "_clients" in self.__dict__:
            self._clients.close()
        if self._tempdir:
            self._tempdir.remove()
            self._tempdir = None
        with self._lock:
            closers, self._closers = self._closers, []
        for callback in reversed(closers):
            try:
                callback()
            except Exception as e:  # cleanup must not hide how the run ended
                log.warning("cleanup at the end of the run failed: %s", e)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

