"""--debug HTTP logging never shows secrets."""

from __future__ import annotations

import logging

import httpx
import pytest

from occystrap_core.cli import _setup_logging
from occystrap_core.context import Settings
from occystrap_core.redact import RedactingFilter, redact_text, redact_uri
from occystrap_core.testing.http import FakeClock, MockHTTP, client_factory_plugin, make_context
from occystrap_core.transport.auth import RegistryAuth
from occystrap_core.types import ClientConfig, Credentials

SECRETS = ("s3cret-pass", "tok-abc123", "refresh-xyz", "sig-value", "YWxpY2U6czNjcmV0LXBhc3M=")


def handler(request: httpx.Request) -> httpx.Response:
    if request.url.host == "auth.example":
        return httpx.Response(200, json={"token": "tok-abc123", "refresh_token": "refresh-xyz"})
    if request.headers.get("authorization") == "Bearer tok-abc123":
        return httpx.Response(307, headers={
            "Location": "https://cdn.example/blob?X-Amz-Signature=sig-value&part=1",
            "Set-Cookie": "session=s3cret-pass"}) if "blobs" in request.url.path \
            else httpx.Response(200)
    if request.url.host == "cdn.example":
        return httpx.Response(200, content=b"data")
    return httpx.Response(401, headers={
        "WWW-Authenticate": 'Bearer realm="https://auth.example/token",service="reg"'})


def test_debug_log_redacts_every_secret(caplog):
    factory = client_factory_plugin("registry", lambda req, ctx: ClientConfig(
        auth=RegistryAuth(req.credentials)))
    ctx = make_context(MockHTTP(handler), factory, clock=FakeClock())
    client = ctx.http_client("registry", "reg.example",
                             credentials=Credentials("alice", "s3cret-pass"))
    with caplog.at_level(logging.DEBUG):
        assert client.get("/v2/app/manifests/1", params={"access_token": "tok-abc123"}).is_success
        assert client.get("/v2/app/blobs/sha256:1").content == b"data"
    text = caplog.text
    assert "GET https://reg.example/v2/app/manifests/1" in text
    assert "https://cdn.example/blob?X-Amz-Signature=REDACTED&part=1" in text
    assert "'authorization': 'REDACTED'" in text
    assert " 200 " in text and " 401 " in text
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize("url, expected", [
    ("https://r/v2/?service=x&scope=repository:a:pull",
     "https://r/v2/?service=x&scope=repository:a:pull"),
    ("https://r/t?access_token=abc&x=1", "https://r/t?access_token=REDACTED&x=1"),
    ("https://r/t?password=abc&refresh_token=def",
     "https://r/t?password=REDACTED&refresh_token=REDACTED"),
    ("https://user:pw@r/t", "https://user:REDACTED@r/t"),
    ("https://s3/b?X-Amz-Credential=AK&X-Amz-Signature=ab",
     "https://s3/b?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED"),
    ("https://production.cloudflare.docker.com/b/data?verify=1700000000-ab%2Bc",
     "https://production.cloudflare.docker.com/b/data?verify=REDACTED"),
    ("https://cdn/b?__token__=exp=1~hmac=ab", "https://cdn/b?__token__=REDACTED"),
    ("https://cdn/b?hdnts=exp=1~hmac=ab", "https://cdn/b?hdnts=REDACTED"),
    ("https://f0.backblazeb2.com/file/b?Authorization=ab", "https://f0.backblazeb2.com/file/b"
     "?Authorization=REDACTED"),
])
def test_redact_uri(url, expected):
    assert redact_uri(url) == expected


def test_redact_text_covers_third_party_formats():
    trace = ("send_request_headers.started request=<Request [b'GET']> headers=[(b'Host', b'r'), "
             "(b'Authorization', b'Bearer tok-abc123'), (b'X-Registry-Auth', b'eyJzZWNyZXQi')]")
    out = redact_text(trace)
    assert "tok-abc123" not in out and "eyJzZWNyZXQi" not in out and "b'Host', b'r'" in out
    assert "tok-abc123" not in redact_text('HTTP Request: GET https://r/t?token=tok-abc123 "200"')
    assert "s3cret" not in redact_text("proxy http://bob:s3cret@proxy:3128")


def test_cli_debug_scrubs_httpx_logs(capsys):
    _setup_logging(Settings(debug=True))  # occystrap_core.testing restores the loggers
    logging.getLogger("httpx").info('HTTP Request: %s %s "%s"', "GET",
                                    "https://r/t?access_token=tok-abc123", "HTTP/2 200 OK")
    logging.getLogger("httpcore.http2").debug("headers=[(b'authorization', b'Basic abcd')]")
    err = capsys.readouterr().err
    assert "access_token=REDACTED" in err and "tok-abc123" not in err
    assert "abcd" not in err


def test_filter_keeps_records():
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "url %s", ("?token=1",), None)
    assert RedactingFilter().filter(record) and record.getMessage() == "url ?token=REDACTED"
