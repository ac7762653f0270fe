"""Turning HTTP answers and httpx exceptions into occystrap errors that name the host.

The retry layer already turns request-level network failures into
:class:`~occystrap_core.errors.TransportError`; these helpers cover the rest:
error statuses, and failures while reading a streamed body.
"""

from __future__ import annotations

import contextlib
import json
from typing import Iterable, Iterator

import httpx

from ..errors import AuthError, ImageNotFoundError, OccystrapError, TransportError

MAX_ERROR_BODY = 64 * 1024


def error_detail(response: httpx.Response) -> str:
    """``": CODE message"`` from a distribution/OCI error body, or ``""``."""
    try:
        try:
            content = response.content
        except httpx.ResponseNotRead:
            # Error bodies are small, but never slurp a mislabelled blob.
            if int(response.headers.get("content-length") or 0) > MAX_ERROR_BODY:
                return ""
            content = response.read()
        first = (json.loads(content).get("errors") or [{}])[0]
        detail = f"{first.get('code', '')} {first.get('message', '')}".strip()
    except (httpx.HTTPError, httpx.StreamError, ValueError, AttributeError, TypeError, IndexError):
        return ""
    return f": {detail}" if detail else ""


def html_page(response: httpx.Response) -> bool:
    """Is the answer a web page? Registries and APIs answer JSON or octets; an HTML
    page comes from a captive portal, a login form or a misconfigured proxy."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind in ("text/html", "application/xhtml+xml")


def status_error(response: httpx.Response, what: str,
                 expected: Iterable[int] = ()) -> OccystrapError:
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
    if html_page(response):
        detail += " (an HTML page, not a registry's answer: a proxy or captive portal?)"
    message = f"{what} on {host}: HTTP {status} {response.reason_phrase}{detail}"
    error: OccystrapError
    if status in (401, 403):
        error = AuthError(f"{message} (check the credentials and access rights)")
    elif status == 404:
        error = ImageNotFoundError(f"{what} on {host}: not found{detail}")
    elif status == 429:
        error = TransportError(f"{message} (rate limited; try a lower --rate-limit)")
    else:
        error = TransportError(message)
    error.response = response  # type: ignore[attr-defined]
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
