"""HTTP test helpers: a mock network under the real retry, rate-limit and auth layers.

Opt in with ``pytest_plugins = ["occystrap_core.testing", "occystrap_core.testing.http"]``.

The network is replaced through the ``occystrap_base_transport`` hook, never by
patching module globals, so every layer above it stays under test::

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ok": True})

    def test_unit():
        ctx = make_context(MockHTTP(handler), client_factory_plugin(), retries=2,
                           clock=FakeClock())
        client = ctx.http_client("test", "registry.example")

    def test_cli(mock_http, run_cli):
        mock_http(handler)              # seen by every plugin load, CLI runs included
        run_cli("info", "registry://registry.example/app:1")
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import httpx
import pytest

from .. import hookimpl
from ..context import Context, Settings
from ..plugins import load_plugins
from ..transport.clock import CLOCK_KEY, Clock
from ..types import ClientConfig, ClientFactory, ClientRequest, TransportLayer
from . import FakeEntryPoint

Handler = Callable[[httpx.Request], httpx.Response]


class FakeClock(Clock):
    """Time that only moves when something sleeps; every sleep is recorded."""

    def __init__(self, start: float = 1_000_000.0):
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class QuickClock(Clock):
    """Real time, except that every sleep (backoff, Retry-After, rate-limit waits) is
    recorded and skipped: runs against real servers retry without waiting, while
    timeouts and --min-speed still see the clock move."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)


class ClockPlugin:
    """Makes ``clock`` the clock of every run that loads this plugin: installed when
    the run resolves its first URI (before anything built from it reads the clock),
    or builds its first client."""

    def __init__(self, clock: Clock):
        self.clock = clock

    @hookimpl(tryfirst=True)
    def occystrap_resolve_uri(self, ctx: Context) -> None:
        ctx.shared(CLOCK_KEY, lambda: self.clock)

    @hookimpl(tryfirst=True)
    def occystrap_base_transport(self, host: str, ctx: Context) -> None:
        ctx.shared(CLOCK_KEY, lambda: self.clock)


class MockHTTP:
    """A plugin whose base transport is ``httpx.MockTransport(handler)`` for every host.

    ``requests`` lists every request that reached the network, retries included.
    With ``clock`` the run uses it (so CLI runs through retries never sleep).
    """

    def __init__(self, handler: Handler, clock: Clock | None = None):
        self.handler = handler
        self.clock = clock
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    @hookimpl(tryfirst=True)
    def occystrap_base_transport(self, host: str, ctx: Context) -> httpx.BaseTransport:
        if self.clock is not None:  # the pool asks for this before anything uses the clock
            ctx.shared(CLOCK_KEY, lambda: self.clock)
        return self.transport


class RequestLog:
    """A plugin whose transport layer, above retries, records each logical request once
    as ``(METHOD, host, path)``; register it (``request_log`` fixture, or pass it to
    :func:`make_context`) to count what a run asked for. ``answers`` holds
    ``(METHOD, path, HTTP version)`` of each response."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        self.answers: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def _wrap(self, inner: httpx.BaseTransport, host: str, ctx: Context) -> httpx.BaseTransport:
        log = self

        class Recorder(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                with log._lock:
                    log.requests.append((request.method, request.url.netloc.decode(),
                                         request.url.path))
                response = inner.handle_request(request)
                with log._lock:
                    log.answers.append((request.method, request.url.path,
                                        response.http_version))
                return response

            def close(self) -> None:
                inner.close()

        return Recorder()

    @hookimpl
    def occystrap_transport_layers(self) -> list[TransportLayer]:
        return [TransportLayer(name="test-request-log", order=300, wrap=self._wrap)]

    def paths(self) -> list[tuple[str, str]]:
        """``(METHOD, path)`` of every request so far."""
        with self._lock:
            return [(method, path) for method, _, path in self.requests]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.answers.clear()


def client_factory_plugin(name: str = "test",
                          configure: Callable[[ClientRequest, Context], ClientConfig] | None = None
                          ) -> Any:
    """A plugin registering one :class:`ClientFactory` (by default: no auth, no headers)."""

    class Plugin:
        @hookimpl
        def occystrap_transport(self) -> list[ClientFactory]:
            return [ClientFactory(name=name, summary=f"{name} test client",
                                  configure=configure or (lambda request, ctx: ClientConfig()))]

    return Plugin()


def make_context(*plugins: Any, settings: Settings | None = None, clock: Clock | None = None,
                 **overrides: Any) -> Context:
    """A Context with the core's built-ins plus ``plugins`` (and no installed plugin).

    ``overrides`` replace :class:`Settings` fields; ``clock`` becomes the run's clock.
    """
    settings = settings or Settings()
    for key, value in overrides.items():
        setattr(settings, key, value)
    eps = [FakeEntryPoint(f"occystrap-test-{i}", plugin) for i, plugin in enumerate(plugins)]
    ctx = Context(settings, load_plugins(entry_points=eps, strict=True))
    if clock is not None:
        ctx.shared(CLOCK_KEY, lambda: clock)
    return ctx


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def quick_clock(register_plugin: Callable[..., Any]) -> QuickClock:
    """A :class:`QuickClock` for every plugin load of the test, CLI runs included."""
    clock = QuickClock()
    register_plugin(ClockPlugin(clock), name="occystrap-test-quick-clock")
    return clock


@pytest.fixture
def request_log(register_plugin: Callable[..., Any]) -> RequestLog:
    """A :class:`RequestLog` seen by every plugin load of the test, CLI runs included."""
    log = RequestLog()
    register_plugin(log, name="occystrap-test-request-log")
    return log


@pytest.fixture
def mock_http(register_plugin: Callable[..., Any]) -> Callable[..., MockHTTP]:
    """``mock_http(handler, clock=None)``: every plugin load of the test (CLI runs
    included) gets a mock network. Returns the :class:`MockHTTP`, whose ``requests``
    can be inspected."""
    count = 0

    def install(handler: Handler, clock: Clock | None = None) -> MockHTTP:
        nonlocal count
        count += 1
        plugin = MockHTTP(handler, clock)
        register_plugin(plugin, name=f"occystrap-mock-http-{count}")
        return plugin

    return install
