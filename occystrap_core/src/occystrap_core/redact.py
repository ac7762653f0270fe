"""The one redaction every URI, header and message passes before it is printed or logged.

Two layers, so that neither alone has to be perfect:

- structure: passwords in URI userinfo (``scheme://user:PASS@host``, also without a
  path), secret query parameters (``password=``, ``token=``, presigned-URL
  signatures), secret headers (``Authorization``, cookies) and ``Bearer``/``Basic``
  values in free text;
- known values: every secret the process has seen (a :class:`~occystrap_core.types.
  Credentials` registers its password and token when it is made; the auth flow
  registers Basic header values and tokens) is replaced wherever it appears, so a
  message that quotes a secret in some unforeseen way is still clean.

The CLI applies :func:`redact_text` to every error line and log record; code that
prints a URI itself calls :func:`redact_uri`.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from typing import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "REDACTED"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-registry-auth",
                            "cookie", "set-cookie", "x-auth-token"})
# Known values shorter than this are left to the structural rules: replacing every
# "ab" in a message would make it unreadable and tell an observer the secret anyway.
MIN_KNOWN = 4

# Query parameters holding secrets; the signatures of presigned blob URLs among them:
# S3 and GCS (*signature), Azure and ghcr.io (sig), Docker Hub's CDN (verify=EXPIRY-HMAC),
# Akamai (__token__, hdnts), Backblaze B2 (Authorization).
_SECRET_NAMES = (r"[\w.-]*token|[\w.-]*password|passwd|secret|client_secret|[\w.-]*signature"
                 r"|x-amz-credential|x-amz-security-token|x-goog-credential|sig|code|verify"
                 r"|__token__|hdnts|authorization")
_SECRET_PARAM = re.compile(rf"(?i)^(?:{_SECRET_NAMES})$")


@functools.cache
def _text_patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    """The free-text rules, compiled when first needed: a run that prints no error and
    logs nothing never pays for them."""
    return (
        # param=value in URLs and option strings
        (re.compile(rf"(?i)([?&;,](?:{_SECRET_NAMES})=)[^&\s'\",]*"), rf"\1{REDACTED}"),
        # header tuples as httpcore traces them: (b'authorization', b'...')
        (re.compile(r"(?i)(b?['\"](?:" + "|".join(SECRET_HEADERS)
                    + r")['\"],\s*b?['\"])[^'\"]*"), rf"\1{REDACTED}"),
        # Authorization values; not prose ("invalid bearer token" keeps its last word), nor
        # the parameters of a WWW-Authenticate challenge (Bearer realm="...")
        (re.compile(r"(?i)\b(bearer|basic)\s+(?![\w-]+=\s*\")(?:[A-Za-z0-9._~+/=-]{16,}"
                    r"|[A-Za-z]*[0-9._~+/=-][A-Za-z0-9._~+/=-]*)"), rf"\1 {REDACTED}"),
        # user:password@ in URLs, and in references given without a scheme
        (re.compile(r"(//|\b)([^/@\s:'\"]+):[^/@\s'\"]*@(?!sha\d+:)(?=[\w.\[-])"),
         rf"\1\2:{REDACTED}@"),
    )


class _Known:
    """Secret values seen by this process, replaced wherever they appear."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: object) -> None:
        if not isinstance(value, str) or len(value) < MIN_KNOWN:
            return
        with self._lock:
            if value not in self._values:
                self._values.add(value)
                self._pattern = None

    def scrub(self, text: str) -> str:
        with self._lock:
            if not self._values:
                return text
            if self._pattern is None:  # longest first: a secret containing another
                self._pattern = re.compile("|".join(
                    re.escape(v) for v in sorted(self._values, key=len, reverse=True)))
            pattern = self._pattern
        return pattern.sub(REDACTED, text)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None


_known = _Known()


def remember(*secrets: object) -> None:
    """Register secret values: from now on no redacted text shows them."""
    for secret in secrets:
        _known.add(secret)


def forget() -> None:
    """Forget every registered value (tests: one test's secrets are not the next one's)."""
    _known.clear()


def remember_uri(uri: str) -> None:
    """Register the password of ``uri``'s userinfo and its secret query values."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        remember(userinfo.split(":", 1)[1])
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAM.match(key):
            remember(value)


def redact_uri(uri: str) -> str:
    """``uri`` with any userinfo password and secret query values replaced."""
    try:
        parts = urlsplit(uri)
    except ValueError:  # not parseable as a URL: fall back to the text rules
        return redact_text(uri)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.match(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if _SECRET_PARAM.match(k) else v) for k, v in pairs],
                              safe="/:,*")
    if (netloc, query) != (parts.netloc, parts.query):  # (unsplit drops an empty "//")
        uri = urlunsplit(parts._replace(netloc=netloc, query=query))
    return _known.scrub(uri)


def redact_text(text: str) -> str:
    """Free text (messages, third-party log lines) with every secret replaced."""
    for pattern, replacement in _text_patterns():
        text = pattern.sub(replacement, text)
    return _known.scrub(text)


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Secret headers replaced; redirect targets (presigned URLs) redacted like URLs."""
    out = {}
    for key, value in headers:
        lower = key.lower()
        out[key] = (REDACTED if lower in SECRET_HEADERS
                    else redact_uri(value) if lower in ("location", "content-location")
                    else redact_text(value))
    return out


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with secrets removed (never drops the record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            # a traceback quotes messages too: render it now, redacted
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


THIRD_PARTY_LOGGERS = ("httpx", "httpcore", "httpcore.connection", "httpcore.http11",
                       "httpcore.http2", "httpcore.proxy", "hpack", "h2")


def install(handler: logging.Handler | None = None) -> None:
    """Scrub httpx/httpcore records on their loggers, and everything ``handler``
    emits when given (a handler filter also covers loggers a logger filter misses)."""
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
    if handler is not None and not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
