"""Turning HTTP answers and httpx exceptions into occystrap errors that name the host.

The retry layer already turns request-level network failures into
:class:`~occystrap_core.errors.TransportError`; these helpers cover the rest:
error statuses, and failures while reading a streamed body.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Iterable, Iterator

import httpx

from ..errors import NOT_JSON, AuthError, ImageNotFoundError, OccystrapError, TransportError
from .tlshints import HTTPS, http_to_https

MAX_ERROR_BODY = 64 * 1024


def detail_of(content: bytes) -> str:
    """``": what the server said"`` from a JSON error body, or ``""``: a distribution/OCI
    ``errors`` list (``CODE message``), or a ``message``, ``error_message`` (Quay),
    ``detail`` or ``error`` string (Docker Engine API, other APIs)."""
    body = _json_object(content)
    if body is None:
        return ""
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        detail = f"{errors[0].get('code', '')} {errors[0].get('message', '')}".strip()
    else:
        detail = next((body[k].strip() for k in ("message", "error_message", "detail", "error")
                       if isinstance(body.get(k), str) and body[k].strip()), "")
    return f": {detail}" if detail else ""


def error_codes(response: httpx.Response) -> list[str]:
    """The ``code`` of each error in a distribution/OCI error body."""
    body = _json_object(_small_body(response))
    errors = body.get("errors") if body is not None else None
    if not isinstance(errors, list):
        return []
    return [e["code"] for e in errors if isinstance(e, dict) and isinstance(e.get("code"), str)]


def error_detail(response: httpx.Response) -> str:
    """:func:`detail_of` an httpx answer, reading at most a small body."""
    return detail_of(_small_body(response))


def _json_object(content: bytes) -> dict[str, Any] | None:
    """``content`` as a JSON object, or None when it is not one."""
    try:
        body = json.loads(content)
    except NOT_JSON:
        return None
    return body if isinstance(body, dict) else None


def _small_body(response: httpx.Response) -> bytes:
    """The answer's body, read if need be, unless it says it is big (an error body is
    small: never slurp a mislabelled blob); b"" if it cannot be read."""
    try:
        try:
            return response.content
        except httpx.ResponseNotRead:
            if int(response.headers.get("content-length") or 0) > MAX_ERROR_BODY:
                return b""
            return response.read()
    except (httpx.HTTPError, httpx.StreamError, ValueError):
        return b""


def error_for_status(status: int, message: str, *, not_found: str | None = None,
                     auth_hint: str = "check the credentials and access rights"
                     ) -> OccystrapError:
    """The one translation of a failed HTTP status into an occystrap error, whatever
    the client library: AuthError for 401/403 (with ``auth_hint``), ImageNotFoundError
    for 404 (``not_found`` replaces the message), TransportError otherwise."""
    if status in (401, 403):
        return AuthError(f"{message} ({auth_hint})")
    if status == 404:
        return ImageNotFoundError(not_found or message)
    if status == 429:
        return TransportError(f"{message} (rate limited; try a lower --rate-limit)")
    return TransportError(message)


def html_page(response: httpx.Response) -> bool:
    """Is the answer a web page? Registries and APIs answer JSON or octets; an HTML
    page comes from a captive portal, a login form or a misconfigured proxy."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind in ("text/html", "application/xhtml+xml")


def _body(response: httpx.Response) -> bytes:
    """What was read of an answer's body; nothing if it was left unread."""
    try:
        return response.content
    except httpx.ResponseNotRead:
        return b""


def status_error(response: httpx.Response, what: str, expected: Iterable[int] = (), *,
                 auth_hint: str = "check the credentials and access rights") -> OccystrapError:
    """The error for a failed answer, naming the host and ``what`` was being done:
    AuthError for 401/403, ImageNotFoundError for 404, TransportError otherwise.
    ``expected`` lists the statuses that would have been success, to say so when
    the answer was some other success.

    The (read, closed) response stays available as the error's ``response``.
    """
    status = response.status_code
    host = response.request.url.netloc.decode()
    try:
        detail = error_detail(response)
    finally:
        response.close()
    wanted = sorted(expected)
    if wanted and 200 <= status < 300 and status not in wanted:
        detail += f" where HTTP {' or '.join(map(str, wanted))} was expected"
    if http_to_https(status, _body(response)):
        detail += f" ({HTTPS})"
    if html_page(response):
        detail += " (an HTML page, not a registry's answer: a proxy or captive portal?)"
    message = f"{what} on {host}: HTTP {status} {response.reason_phrase}{detail}"
    error = error_for_status(status, message, not_found=f"{what} on {host}: not found{detail}",
                             auth_hint=auth_hint)
    error.response = response
    return error


def raise_for_status(response: httpx.Response, what: str, *, ok: Iterable[int] = ()) -> None:
    """Raise :func:`status_error` unless the status is 2xx or in ``ok``, or the
    answer is an HTML page."""
    if not (200 <= response.status_code < 300 or response.status_code in ok) \
            or html_page(response):
        raise status_error(response, what)


@contextlib.contextmanager
def translate_errors(host: str, what: str) -> Iterator[None]:
    """Re-raise any httpx exception inside the block as a TransportError naming ``host``."""
    try:
        yield
    except httpx.ConnectError as e:
        raise TransportError(f"{what}: cannot connect to {host}: {e}") from e
    except httpx.TimeoutException as e:
        raise TransportError(f"{what}: timed out talking to {host}: "
                             f"{e or type(e).__name__}") from e
    except httpx.HTTPError as e:
        raise TransportError(f"{what}: network error talking to {host}: "
                             f"{e or type(e).__name__}") from e
