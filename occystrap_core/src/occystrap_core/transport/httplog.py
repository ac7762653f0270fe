"""``--debug`` HTTP logging: each attempt's method, URL, status and headers, redacted.

Bodies are never logged (token answers carry secrets); URLs and headers go
through :mod:`occystrap_core.redact` first.
"""

from __future__ import annotations

import logging

import httpx

from ..redact import redact_headers, redact_text, redact_uri

log = logging.getLogger("occystrap.http")


class LoggingTransport(httpx.BaseTransport):
    """Logs every attempt at DEBUG; costs nothing unless DEBUG is enabled."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not log.isEnabledFor(logging.DEBUG):
            return self.inner.handle_request(request)
        url = redact_uri(str(request.url))
        log.debug("> %s %s %s", request.method, url,
                  redact_headers(request.headers.multi_items()))
        try:
            response = self.inner.handle_request(request)
        except httpx.TransportError as e:
            log.debug("! %s %s: %s", request.method, url, redact_text(str(e) or type(e).__name__))
            raise
        log.debug("< %s %s %d %s", request.method, url, response.status_code,
                  redact_headers(response.headers.multi_items()))
        return response

    def close(self) -> None:
        self.inner.close()
