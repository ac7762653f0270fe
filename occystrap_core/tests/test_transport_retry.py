"""The retry layer, driven through the real client pool with a mock network."""

from __future__ import annotations

import email.utils
import io

import httpx
import pytest

from occystrap_core import hookimpl
from occystrap_core.errors import TransportError
from occystrap_core.testing.http import FakeClock, MockHTTP, client_factory_plugin, make_context
from occystrap_core.transport.retry import BACKOFF_MAX, backoff
from occystrap_core.types import ClientConfig, TransportLayer


def scripted(*answers):
    """A handler giving ``answers`` in turn (the last one repeats); exceptions are raised."""
    answers = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer() if callable(answer) else httpx.Response(answer)

    return handler


def client_for(handler, clock=None, **settings):
    mock = MockHTTP(handler)
    ctx = make_context(mock, client_factory_plugin(), clock=clock or FakeClock(), **settings)
    return ctx, mock, ctx.http_client("test", "reg.example")


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_retryable_statuses_are_retried_with_backoff(status):
    clock = FakeClock()
    ctx, mock, client = client_for(scripted(status, status, 200), clock, retries=3)
    assert client.get("/v2/").status_code == 200
    assert len(mock.requests) == 3
    assert len(clock.sleeps) == 2 and clock.sleeps[0] < clock.sleeps[1] * 2
    assert 0.25 <= clock.sleeps[0] < 0.5 and 0.5 <= clock.sleeps[1] < 1.0
    assert ctx.stats["retries"] == 2


def test_429_without_retry_after_pauses_the_host_for_a_second():
    clock = FakeClock()
    ctx, mock, client = client_for(scripted(429, 200), clock)
    assert client.get("/v2/").status_code == 200
    # backoff in the retry layer, then the rest of the host pause in the limiter
    assert sum(clock.sleeps) == pytest.approx(1.0)
    assert ctx.stats["retries"] == 1 and ctx.stats["rate_limit_waits"] == 1


def test_retries_run_out_and_the_last_answer_is_returned():
    ctx, mock, client = client_for(scripted(503), retries=2)
    assert client.get("/v2/").status_code == 503
    assert len(mock.requests) == 3


def test_backoff_is_capped_and_jittered():
    assert backoff(0, lambda: 0.0) == 0.25 and backoff(0, lambda: 0.999) < 0.5
    assert backoff(30, lambda: 0.999) < BACKOFF_MAX
    assert backoff(30, lambda: 0.0) == BACKOFF_MAX / 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409])
def test_client_errors_are_not_retried(status):
    ctx, mock, client = client_for(scripted(status), retries=5)
    assert client.get("/v2/").status_code == status
    assert len(mock.requests) == 1 and ctx.stats["retries"] == 0


def test_retry_after_seconds():
    clock = FakeClock()
    answer = lambda: httpx.Response(429, headers={"Retry-After": "7"})  # noqa: E731
    ctx, mock, client = client_for(scripted(answer, 200), clock)
    assert client.get("/v2/").status_code == 200
    assert clock.sleeps == [7.0]


def test_retry_after_http_date():
    clock = FakeClock()
    date = email.utils.formatdate(clock.time() + 12, usegmt=True)
    answer = lambda: httpx.Response(503, headers={"Retry-After": date})  # noqa: E731
    ctx, mock, client = client_for(scripted(answer, 200), clock)
    assert client.get("/v2/").status_code == 200
    assert 11.0 <= clock.sleeps[0] <= 12.0


def test_retry_after_garbage_falls_back_to_backoff():
    clock = FakeClock()
    answer = lambda: httpx.Response(429, headers={"Retry-After": "soon"})  # noqa: E731
    ctx, mock, client = client_for(scripted(answer, 200), clock)
    assert client.get("/v2/").status_code == 200
    assert 0.25 <= clock.sleeps[0] < 0.5


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                                   httpx.RemoteProtocolError("bad"), httpx.ReadError("reset"),
                                   httpx.PoolTimeout("busy"), httpx.WriteTimeout("slow")])
def test_connection_errors_are_retried(error):
    ctx, mock, client = client_for(scripted(error, 200), retries=1)
    assert client.get("/v2/").status_code == 200
    assert len(mock.requests) == 2


def test_exhausted_connection_errors_become_a_clear_error():
    ctx, mock, client = client_for(scripted(httpx.ConnectError("Connection refused")), retries=2)
    with pytest.raises(TransportError, match=r"cannot connect to reg.example: Connection "
                                             r"refused \(after 3 attempts\)"):
        client.get("/v2/")
    assert isinstance(ctx.stats["retries"], int) and ctx.stats["retries"] == 2


def test_errors_that_a_retry_cannot_cure_are_not_retried():
    ctx, mock, client = client_for(scripted(httpx.UnsupportedProtocol("ftp")))
    with pytest.raises(TransportError, match="network error talking to reg.example: ftp$"):
        client.get("/v2/")
    assert len(mock.requests) == 1


def test_retries_zero_sends_once():
    ctx, mock, client = client_for(scripted(httpx.ReadTimeout("slow")), retries=0)
    with pytest.raises(TransportError, match="timed out talking to reg.example"):
        client.get("/v2/")
    assert len(mock.requests) == 1


def test_a_request_can_opt_out():
    ctx, mock, client = client_for(scripted(503, 200))
    assert client.get("/v2/", extensions={"occystrap.retry": False}).status_code == 503


def test_generator_body_is_not_replayed():
    ctx, mock, client = client_for(scripted(503, 200))
    assert client.put("/up", content=(b"x" for _ in range(3))).status_code == 503
    ctx, mock, client = client_for(scripted(httpx.ReadError("cut"), 200))
    with pytest.raises(TransportError, match="network error talking to reg.example"):
        client.put("/up", content=iter([b"a", b"b"]))
    assert len(mock.requests) == 1


def test_generator_body_is_retried_when_nothing_was_sent():
    ctx, mock, client = client_for(scripted(httpx.ConnectError("refused"), 200))
    assert client.put("/up", content=(b"x" for _ in range(3))).status_code == 200


class StreamingMock(httpx.BaseTransport):
    """Reads the request body from its stream on every attempt, as a socket would."""

    def __init__(self, answers):
        self.answers = answers
        self.bodies: list[bytes] = []

    def handle_request(self, request):
        self.bodies.append(b"".join(request.stream))
        return httpx.Response(self.answers.pop(0))

    @hookimpl(tryfirst=True)
    def occystrap_base_transport(self):
        return self


def test_bytes_bodies_are_replayed_and_streamed_ones_sent_once():
    network = StreamingMock([503, 500, 201])
    ctx = make_context(network, client_factory_plugin(), clock=FakeClock())
    client = ctx.http_client("test", "reg.example")
    assert client.put("/up", content=b"payload").status_code == 201
    assert network.bodies == [b"payload"] * 3
    # a streamed body cannot be sent again: its caller retries the whole operation
    network = StreamingMock([503, 201])
    ctx = make_context(network, client_factory_plugin(), clock=FakeClock())
    response = ctx.http_client("test", "reg.example").put("/up", content=io.BytesIO(b"payload"))
    assert response.status_code == 503 and network.bodies == [b"payload"]


def test_third_party_client_factories_cannot_bypass_retries():
    mock = MockHTTP(scripted(502, 200))
    acme = client_factory_plugin("acme", lambda req, ctx: ClientConfig(
        base_url=f"https://{req.host}/api/", headers={"X-Acme": "1"}))
    ctx = make_context(mock, acme, clock=FakeClock())
    response = ctx.http_client("acme", "api.acme.example").get("things")
    assert response.status_code == 200
    assert [str(r.url) for r in mock.requests] == ["https://api.acme.example/api/things"] * 2
    assert mock.requests[0].headers["x-acme"] == "1"
    assert mock.requests[0].headers["user-agent"].startswith("occystrap/")


def test_plugin_layers_see_logical_requests_or_attempts_by_order():
    seen: dict[str, int] = {"outer": 0, "inner": 0}

    class Audit(httpx.BaseTransport):
        def __init__(self, inner, name):
            self.inner, self.name = inner, name

        def handle_request(self, request):
            seen[self.name] += 1
            return self.inner.handle_request(request)

    class AuditPlugin:
        @hookimpl
        def occystrap_transport_layers(self):
            yield TransportLayer("audit", 300, lambda inner, host, ctx: Audit(inner, "outer"))
            yield TransportLayer("wire", 10, lambda inner, host, ctx: Audit(inner, "inner"))

    mock = MockHTTP(scripted(503, 503, 200))
    ctx = make_context(mock, AuditPlugin(), client_factory_plugin(), clock=FakeClock())
    assert ctx.http_client("test", "reg.example").get("/").status_code == 200
    assert seen == {"outer": 1, "inner": 3}
    assert [layer.name for layer in ctx.plugins.transport_layers()] == [
        "wire", "http-log", "rate-limit", "retry", "audit"]


class BreakingBody(httpx.SyncByteStream):
    """Half a body, then a reset: what a connection cut mid-answer looks like."""

    def __iter__(self):
        yield b'{"schemaVersion": '
        raise httpx.ReadError("connection reset by peer")


def test_an_answer_broken_mid_body_is_retried():
    """The body is read inside the retry loop: a manifest or token answer cut in the
    middle is asked for again, like one that failed before its headers."""
    answers = [lambda: httpx.Response(200, stream=BreakingBody()),
               lambda: httpx.Response(200, content=b'{"schemaVersion": 2}')]
    ctx, mock, client = client_for(scripted(*answers), retries=1)
    assert client.get("/v2/app/manifests/1").json() == {"schemaVersion": 2}
    assert len(mock.requests) == 2 and ctx.stats["retries"] == 1


def test_an_answer_still_broken_after_the_retries_is_a_clear_error():
    ctx, mock, client = client_for(lambda r: httpx.Response(200, stream=BreakingBody()),
                                   retries=2)
    with pytest.raises(TransportError, match=r"network error talking to reg.example: "
                                             r"connection reset by peer \(after 3 attempts\)"):
        client.get("/v2/app/manifests/1")


def test_a_trickling_answer_times_out_and_is_retried():
    clock = FakeClock()

    class Trickle(httpx.SyncByteStream):
        def __iter__(self):
            for _ in range(100):
                clock.advance(1.0)  # each piece comes in time; the whole never does
                yield b"x" * 10

    answers = [lambda: httpx.Response(200, stream=Trickle()), lambda: httpx.Response(200)]
    ctx, mock, client = client_for(scripted(*answers), clock, read_timeout=5.0, min_speed=100)
    assert client.get("/v2/").status_code == 200
    assert len(mock.requests) == 2 and ctx.stats["retries"] == 1


def test_an_endless_answer_is_refused():
    class Endless(httpx.SyncByteStream):
        def __iter__(self):
            while True:
                yield b"x" * (1024 * 1024)

    ctx, mock, client = client_for(lambda r: httpx.Response(200, stream=Endless()), retries=0)
    with pytest.raises(TransportError, match="more than 67108864 bytes"):
        client.get("/v2/app/manifests/1")


def test_bulk_downloads_are_left_to_the_caller():
    ctx, mock, client = client_for(lambda r: httpx.Response(200, stream=BreakingBody()))
    request = client.build_request("GET", "/v2/app/blobs/x", extensions={"occystrap.bulk": True})
    response = client.send(request, stream=True)
    with pytest.raises(httpx.ReadError):
        response.read()
    assert len(mock.requests) == 1
