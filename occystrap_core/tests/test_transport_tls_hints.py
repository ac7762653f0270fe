"""TLS failures no retry can cure: sent once, and the error says what to try."""

from __future__ import annotations

import ssl

import httpx
import pytest

from occystrap_core.errors import TransportError
from occystrap_core.testing.http import FakeClock, MockHTTP, client_factory_plugin, make_context
from occystrap_core.transport import tlshints
from occystrap_core.transport.errors import status_error
from occystrap_core.transport.retry import retryable


def connect_error(cause: BaseException) -> httpx.ConnectError:
    """An httpx.ConnectError chained to ``cause``, as httpx and httpcore raise them."""
    try:
        raise httpx.ConnectError(str(cause)) from cause
    except httpx.ConnectError as e:
        return e


def verify_failed() -> ssl.SSLCertVerificationError:
    return ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                                           "verify failed: self-signed certificate")


def not_tls() -> ssl.SSLError:
    error = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    error.reason = "WRONG_VERSION_NUMBER"
    return error


def sent(error: Exception, retries: int = 3) -> tuple[TransportError, int, FakeClock]:
    """The error and the number of requests sent for one GET failing with ``error``."""
    clock = FakeClock()
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise error

    ctx = make_context(MockHTTP(handler), client_factory_plugin(), clock=clock, retries=retries)
    with pytest.raises(TransportError) as caught:
        ctx.http_client("test", "reg.example").get("/v2/")
    return caught.value, len(calls), clock


@pytest.mark.parametrize("cause, hint", [
    (verify_failed(), "--ca-cert FILE, or skip verification with --tls-verify=false"),
    (not_tls(), "plain-HTTP registry? then use --insecure"),
    (ssl.SSLError(1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version"),
     tlshints.OTHER_TLS),
])
def test_tls_failures_are_sent_once_with_a_hint(cause, hint):
    started = FakeClock().monotonic()
    error, calls, clock = sent(connect_error(cause))
    assert calls == 1 and not error.retryable
    assert clock.monotonic() == started  # no backoff was waited
    message = str(error)
    assert message.startswith("cannot connect to reg.example: ") and hint in message


def test_the_hint_is_found_in_the_text_when_the_chain_is_gone():
    assert tlshints.tls_failure(httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] x")) \
        == tlshints.CERTIFICATE
    assert tlshints.tls_failure(httpx.ConnectError("record layer failure")) == \
        tlshints.PLAIN_HTTP


@pytest.mark.parametrize("cause", [ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
                                   ConnectionRefusedError(111, "Connection refused")])
def test_a_dropped_handshake_and_a_refused_connection_are_still_retried(cause):
    error, calls, _ = sent(connect_error(cause), retries=2)
    message = str(error)
    assert calls == 3 and error.retryable and "after 3 attempts" in message
    assert "--ca-cert" not in message and "--insecure" not in message


def test_plain_http_to_an_https_server_says_to_drop_insecure():
    request = httpx.Request("GET", "http://reg.example/v2/")
    response = httpx.Response(400, request=request,
                              content=b"Client sent an HTTP request to an HTTPS server.\n")
    error = status_error(response, "manifest x:y")
    assert "HTTP 400" in str(error) and tlshints.HTTPS in str(error)
    other = httpx.Response(400, request=request, content=b'{"errors": []}')
    assert tlshints.HTTPS not in str(status_error(other, "manifest x:y"))


def test_resumed_downloads_see_the_same_verdict():
    # open_blob and the uploader ask retryable() of errors raised outside the retry layer
    assert not retryable(connect_error(verify_failed()))
    assert not retryable(connect_error(not_tls()))
    assert retryable(connect_error(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")))
