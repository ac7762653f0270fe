"""``--debug`` HTTP logging, with every secret redacted before it reaches a log record.

:class:`LoggingTransport` logs each attempt (method, URL, status, headers) on the
``occystrap.http`` logger; bodies are never logged (token answers carry
secrets). :class:`RedactingFilter` scrubs what httpx and httpcore log themselves
(URLs with signed query strings, header tuples at trace level).
"""

from __future__ import annotations

import logging
import re
from typing import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

log = logging.getLogger("occystrap.http")

REDACTED = "REDACTED"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-registry-auth",
                            "cookie", "set-cookie", "x-auth-token"})
# Query parameters that carry secrets: tokens, passwords and presigned-URL signatures.
_SECRET_PARAM = re.compile(
    r"(?i)^(?:.*token|.*password|secret|.*signature|x-amz-credential|x-amz-security-token"
    r"|x-goog-credential|sig|code|client_secret|refresh_token)$")
# The same in free text (httpx/httpcore messages): param=value in URLs, header tuples,
# credentials inside URLs, and Authorization values.
_TEXT_PATTERNS = (
    (re.compile(r"(?i)([?&](?:[\w.-]*token|[\w.-]*password|secret|[\w.-]*signature"
                r"|x-amz-credential|x-goog-credential|sig|code|client_secret)=)[^&\s'\"]*"),
     rf"\1{REDACTED}"),
    (re.compile(r"(?i)(b?['\"](?:" + "|".join(SECRET_HEADERS) + r")['\"],\s*b?['\"])[^'\"]*"),
     rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {REDACTED}"),
    (re.compile(r"(//[^/@\s:]+:)[^/@\s]*@"), rf"\1{REDACTED}@"),
)


def redact_url(url: str) -> str:
    """``url`` with secret query values and any userinfo password replaced."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:{REDACTED}@{host}" if ":" in userinfo else netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.match(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if _SECRET_PARAM.match(k) else v) for k, v in pairs])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str) -> str:
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Secret headers replaced; redirect targets (presigned URLs) redacted like URLs."""
    out = {}
    for key, value in headers:
        lower = key.lower()
        out[key] = (REDACTED if lower in SECRET_HEADERS
                    else redact_url(value) if lower in ("location", "content-location") else value)
    return out


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with secrets removed (never drops the record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


THIRD_PARTY_LOGGERS = ("httpx", "httpcore", "httpcore.connection", "httpcore.http11",
                       "httpcore.http2", "httpcore.proxy", "hpack", "h2")


def install_redaction(handler: logging.Handler | None = None) -> None:
    """Scrub httpx/httpcore records: on their loggers, and on ``handler`` when given
    (a handler filter also covers child loggers a logger filter would miss)."""
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
    if handler is not None:
        handler.addFilter(RedactingFilter())


class LoggingTransport(httpx.BaseTransport):
    """Logs every attempt at DEBUG; costs nothing unless DEBUG is enabled."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not log.isEnabledFor(logging.DEBUG):
            return self.inner.handle_request(request)
        url = redact_url(str(request.url))
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
