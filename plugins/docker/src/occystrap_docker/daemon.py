"""A client of the Docker Engine API (Docker, or Podman's compatible API) on a unix socket.

Only the daemon is spoken to with requests-unixsocket; registries go through the
core's shared transport. Every failure becomes an ``OccystrapError`` naming the
socket, with the daemon's own message when it sent one.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx
import requests
import requests_unixsocket
from urllib3.exceptions import ReadTimeoutError

from occystrap_core import streams
from occystrap_core.context import Settings
from occystrap_core.errors import (
    OccystrapError,
    TransportError,
    UnsupportedError,
)
from occystrap_core.oci.platform import Platform
from occystrap_core.transport.errors import MAX_ERROR_BODY, detail_of, error_for_status
from occystrap_core.transport.retry import RetryPolicy

from .docker_context import current_context

DEFAULT_SOCKET = "/var/run/docker.sock"
# Anonymous credentials: Docker rejects a push without the header.
ANONYMOUS_AUTH = base64.urlsafe_b64encode(b"{}").decode()
_HINTS = {
    errno.ENOENT: "no such socket (is the daemon running? pass ?socket=PATH or set DOCKER_HOST)",
    errno.EACCES: "permission denied (is your user allowed to use this socket, "
                  "e.g. in the docker group?)",
    errno.ECONNREFUSED: "connection refused (is the daemon running?)",
}


class DaemonError(OccystrapError):
    """The daemon answered with an error."""


def socket_path(option: str | None) -> str:
    """``?socket=`` first, then ``DOCKER_HOST=unix://...``, then the docker CLI's current
    context (``DOCKER_CONTEXT``, ``docker context use``), then the default socket."""
    if option:
        return option
    host = os.environ.get("DOCKER_HOST")
    where = f"DOCKER_HOST={host}"
    if not host:
        context = current_context()
        if context is None:
            return DEFAULT_SOCKET
        host = context[1]
        where = f"the docker context {context[0]!r} ({host})"
    if host.startswith("unix://") and len(host) > len("unix://"):
        return host[len("unix://"):]
    raise UnsupportedError(f"{where} is not supported: occystrap talks to the daemon over "
                           f"a unix socket (DOCKER_HOST=unix:///PATH or ?socket=PATH)")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception requests/urllib3 wrapped in it."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        e = pending.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        pending += [x for x in (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args)
                    if isinstance(x, BaseException)]


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError with an errno somewhere in the chain requests/urllib3 wrapped it in."""
    return next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno is not None), None)


def _timed_out(exc: BaseException) -> bool:
    """Whether a read timed out (requests raises a body's timeout as a ConnectionError)."""
    return any(isinstance(e, (requests.Timeout, ReadTimeoutError, TimeoutError))
               for e in _chain(exc))


class _Watchdog:
    """Ends a read of an answer that waits more than ``seconds``: its request went out
    with no read timeout, to wait for the daemon to do the work before it answers, so a
    daemon that goes silent midway would hold the read for ever.

    Armed by :meth:`reading`, disarmed by :meth:`idle` (writing what was read is not the
    daemon's time). When a read overruns, the socket is shut down, through a duplicate
    of the answer's file descriptor (urllib3 gives it whether the connection is kept
    alive or closes with the answer), so the blocked read returns; ``fired`` says why.
    """

    def __init__(self, fileno: int, seconds: float):
        self.seconds = seconds
        self.fired = False
        self._sock = socket.socket(fileno=os.dup(fileno))  # stays this socket's number
        self._changed = threading.Condition()
        self._deadline: float | None = None
        self._done = False
        self._thread = threading.Thread(target=self._watch, name="occystrap-daemon-watchdog",
                                        daemon=True)
        self._thread.start()

    def reading(self) -> None:
        with self._changed:
            self._deadline = time.monotonic() + self.seconds
            self._changed.notify()

    def idle(self) -> None:
        with self._changed:
            self._deadline = None

    def _watch(self) -> None:
        with self._changed:
            while not self._done:
                left = None if self._deadline is None else self._deadline - time.monotonic()
                if left is None or left > 0:
                    self._changed.wait(left)
                    continue
                self.fired = True
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
                return

    def close(self) -> None:
        with self._changed:
            self._done = True
            self._changed.notify()
        self._thread.join()
        self._sock.close()


# sun_path holds 108 bytes, the last one a NUL
MAX_SOCKET_PATH = 107


def _not_a_socket(path: str) -> str | None:
    """What makes ``path`` unusable as a socket, seen without connecting; None if nothing."""
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        return (f"the socket path is {size} bytes long, longer than a unix socket "
                f"allows ({MAX_SOCKET_PATH})")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # the connection's own errno says why
    if stat.S_ISDIR(mode):
        return "that is a directory, not a socket"
    return None if stat.S_ISSOCK(mode) else "that is not a socket"


def _other_sockets() -> list[str]:
    """Where rootless Docker and Podman put their sockets, to name in a hint."""
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return [os.path.join(runtime, "podman", "podman.sock"), os.path.join(runtime, "docker.sock"),
            "/run/podman/podman.sock"]


def _broken_off(e: requests.RequestException) -> str:
    """Why an answer stopped midway: the daemon was reached, so not 'cannot connect'."""
    if _timed_out(e):
        return "it stopped sending"
    os_error = _os_error(e)
    return os_error.strerror if os_error and os_error.strerror else "the connection closed early"


def _message(resp: requests.Response) -> str:
    """The daemon's JSON ``message``, or the start of whatever it sent."""
    detail = detail_of(resp.content[:MAX_ERROR_BODY])
    return detail[2:] if detail else resp.text[:200].strip() or f"HTTP {resp.status_code}"


def image_path(ref: str) -> str:
    """``/images/{ref}``: the daemon routes on the raw name, slashes and colons included."""
    return "/images/" + quote(ref, safe="/:@")


class Daemon:
    """One daemon socket. Thread-safe for sequential calls from the input or output."""

    def __init__(self, path: str, settings: Settings, policy: RetryPolicy | None = None):
        """``policy`` (the run's, ``ctx.retry``) holds to ``--min-speed`` what the
        daemon streams."""
        self.path = path
        self._policy = policy
        self.where = f"unix://{path}"
        self._base = "http+unix://" + quote(path, safe="")
        self._session = requests_unixsocket.Session()
        self._connect_timeout = settings.connect_timeout
        self._read_timeout = settings.read_timeout

    def close(self) -> None:
        self._session.close()

    def _connection_error(self, e: requests.RequestException) -> OccystrapError:
        if isinstance(e, requests.Timeout):
            return TransportError(f"the Docker daemon at {self.where} did not answer in time")
        os_error = _os_error(e)
        reason = _not_a_socket(self.path) or (
            _HINTS.get(os_error.errno, os_error.strerror or str(os_error))
            if os_error and os_error.errno else str(e))
        if os_error and os_error.errno == errno.ENOENT and self.path == DEFAULT_SOCKET:
            found = [p for p in _other_sockets() if os.path.exists(p)]
            if found:
                reason += f"; there is one at {found[0]} (?socket={found[0]})"
        return TransportError(f"cannot connect to the Docker daemon at {self.where}: {reason}")

    def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                headers: dict[str, str] | None = None, data: BinaryIO | None = None,
                stream: bool = False, read_timeout: float | None | bool = True,
                not_found: str | None = None) -> requests.Response:
        """Send one request; an HTTP error raises (``not_found`` is the 404 message).

        ``read_timeout=True`` means the run's ``--timeout``; None waits for ever,
        for calls whose first byte only comes once the daemon has done the work.
        """
        timeout = self._read_timeout if read_timeout is True else read_timeout
        try:
            resp = self._session.request(method, self._base + path, params=params,
                                         headers=headers, data=data, stream=stream,
                                         timeout=(self._connect_timeout, timeout))
        except requests.RequestException as e:
            raise self._connection_error(e) from None
        if resp.status_code < 400:
            return resp
        with resp:
            raise error_for_status(resp.status_code, f"the Docker daemon at {self.where} "
                                   f"refused {method} {path}: {_message(resp)}",
                                   not_found=not_found)

    def events(self, resp: requests.Response, what: str,
               deadline: float | None = None) -> Iterator[dict[str, Any]]:
        """The JSON progress objects of a streamed answer; an error event raises."""
        try:
            with resp:
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        raise DaemonError(f"{what}: the daemon sent a malformed progress "
                                          f"line: {line[:200]!r}") from None
                    if not isinstance(event, dict):
                        continue
                    if event.get("error") or event.get("errorDetail"):
                        detail = event.get("errorDetail") or {}
                        message = event.get("error") or (detail.get("message")
                                                         if isinstance(detail, dict) else detail)
                        raise DaemonError(f"{what}: {message}")
                    yield event
                    if deadline is not None and time.monotonic() > deadline:
                        raise TransportError(f"{what}: timed out")
        except requests.RequestException as e:
            raise TransportError(f"{what}: the daemon broke off its answer: "
                                 f"{_broken_off(e)}") from None

    def ping(self) -> None:
        self.request("GET", "/_ping").close()

    def _json(self, path: str, not_found: str | None = None) -> Any:
        """The JSON answer to ``GET path``, or None when it is not JSON."""
        with self.request("GET", path, not_found=not_found) as resp:
            try:
                return resp.json()
            except ValueError:
                return None

    def inspect(self, ref: str) -> dict[str, Any]:
        value = self._json(image_path(ref) + "/json",
                           not_found=f"image {ref} not found in the daemon at {self.where}")
        if not isinstance(value, dict):
            raise DaemonError(f"the daemon at {self.where} sent a malformed inspect of {ref}")
        return value

    def export(self, ref: str, out: BinaryIO, platform: Platform | None = None) -> int:
        """Stream ``docker save`` of ``ref`` (for ``platform``, which daemons without a
        multi-platform store ignore) into ``out`` in chunks; returns its size."""
        params = {"platform": json.dumps(platform.as_dict())} if platform else None
        resp = self.request("GET", image_path(ref) + "/get", params=params, stream=True,
                            read_timeout=None,
                            not_found=f"image {ref} not found in the daemon at {self.where}")
        total = 0
        speed = self._policy.speed_check() if self._policy else None
        with resp:
            # the archive has begun: a daemon silent for --timeout now is stuck
            watchdog = _Watchdog(resp.raw.fileno(), self._read_timeout)
            try:
                chunks = resp.iter_content(streams.CHUNK)
                while True:
                    watchdog.reading()
                    chunk = next(chunks, None)
                    watchdog.idle()
                    if chunk is None:
                        break
                    out.write(chunk)
                    total += len(chunk)
                    if speed:
                        speed.update(len(chunk))
            except requests.RequestException as e:
                if watchdog.fired or _timed_out(e):
                    raise self._stalled(ref, total) from None
                raise TransportError(f"the Docker daemon at {self.where} broke off the save "
                                     f"of {ref}: {_broken_off(e)}") from None
            except httpx.ReadTimeout as e:  # below --min-speed
                raise TransportError(f"the Docker daemon at {self.where} sent the save of "
                                     f"{ref} too slowly, after {total} bytes: {e}") from None
            finally:
                watchdog.close()
        if watchdog.fired:  # the shut-down socket may read as the end of the answer
            raise self._stalled(ref, total)
        return total

    def _stalled(self, ref: str, total: int) -> TransportError:
        return TransportError(f"the Docker daemon at {self.where} sent nothing for "
                              f"{self._read_timeout:g} seconds (--timeout) in the middle of "
                              f"the save of {ref}, after {total} bytes")

    def load(self, archive: BinaryIO) -> list[str]:
        """``docker load`` a file object (sent in chunks); the references and IDs loaded."""
        resp = self.request("POST", "/images/load", data=archive, stream=True, read_timeout=None,
                            headers={"Content-Type": "application/x-tar"})
        loaded = []
        for event in self.events(resp, f"loading into the daemon at {self.where}"):
            text = event.get("stream")
            for line in text.splitlines() if isinstance(text, str) else ():
                for prefix in ("Loaded image ID: ", "Loaded image: "):
                    if line.startswith(prefix):
                        loaded.append(line[len(prefix):].strip())
                        break
        return loaded

    def images(self) -> list[dict[str, Any]]:
        """``GET /images/json``: the daemon's images, each with its ``RepoTags``."""
        value = self._json("/images/json")
        if not isinstance(value, list):
            raise DaemonError(f"the daemon at {self.where} sent a malformed image list")
        return [i for i in value if isinstance(i, dict)]

    def tag(self, ref: str, repo: str, tag: str) -> None:
        self.request("POST", image_path(ref) + "/tag", params={"repo": repo, "tag": tag},
                     not_found=f"image {ref} not found in the daemon at {self.where}").close()

    def untag(self, ref: str) -> None:
        """Remove the name ``ref``; the image stays while it has other names."""
        self.request("DELETE", image_path(ref), params={"noprune": "true"}).close()

    def push(self, repo: str, tag: str, deadline: float) -> None:
        """Push ``repo:tag``; ``tlsVerify=false`` lets Podman accept a self-signed registry."""
        resp = self.request("POST", image_path(repo) + "/push", stream=True,
                            params={"tag": tag, "tlsVerify": "false"},
                            headers={"X-Registry-Auth": ANONYMOUS_AUTH},
                            read_timeout=max(deadline - time.monotonic(), 1.0))
        for _ in self.events(resp, f"push by the daemon at {self.where}", deadline):
            pass
