"""Registry authentication as an ``httpx.Auth`` flow: Bearer tokens and Basic.

Use it from a client factory::

    ClientConfig(auth=RegistryAuth(request.credentials, clock=get_clock(ctx),
                                   host=request.host))

Credentials and tokens are only ever sent to that host: a request the client makes
to another one (an upload ``Location`` pointing at blob storage) goes without.

On a 401 the ``WWW-Authenticate`` challenges are parsed (RFC 7235: quoted strings with
escapes, parameters in any order, several challenges). For Bearer a token is fetched
from the realm with GET (Basic credentials attached), or with the OAuth2 POST form
when the credentials hold an identity token or the GET is refused with 404/405.
Credentials holding a registry token (Docker's ``registrytoken``) send it as the
Bearer token of every request, and no more. Tokens (``token`` or ``access_token``) are
cached per (realm, service, scopes) until ``expires_in`` (default 60 s) runs out, and
then sent up front to the repository they were issued for. The original request is
retried once; a second 401 raises :class:`~occystrap_core.errors.AuthError`. A request
whose streamed body the 401 spent (a blob upload refused a token revoked, or run out
by the registry's clock) cannot be sent again: with the new token at hand, a retryable
:class:`~occystrap_core.errors.TransportError` makes its caller send it afresh.

Token requests are yielded from the flow, so they go through the client's own
transport: retried, rate-limited and logged like any other request. One auth
object is shared by all threads; only one of them fetches a given token.

Extra scopes (a cross-repository mount needs pull access to the source) are
asked for per request: ``extensions={"occystrap.scopes": ["repository:src:pull"]}``.

Fewer round trips: scopes announced with :meth:`RegistryAuth.expect` (a copy's
source and destination repositories, before the first request) ride along with
the next token request, so one token covers both; and once a realm is known, a
request to a repository without a token fetches one up front instead of waiting
for a 401. A token server that refuses the batched request is asked again for the
challenged scopes alone.
"""

from __future__ import annotations

import base64
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Generator, Iterable

import httpx

from ..errors import AuthError, CredentialsError, TransportError
from ..redact import remember
from ..types import Credentials
from .clock import Clock

SCOPES = "occystrap.scopes"
CLIENT_ID = "occystrap"
DEFAULT_EXPIRES_IN = 60
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SPACE = re.compile(r"[\s,]*")
_BARE_VALUE = re.compile(r"[^,\s]*")
_REPOSITORY = re.compile(r"/v2/(.+?)/(?:manifests|blobs|tags|referrers)/")
_READ_METHODS = ("GET", "HEAD")
MAX_BATCHED_SCOPES = 16  # pending scopes added to one token request, to bound its URL

Flow = Generator[httpx.Request, httpx.Response, str]
TokenKey = tuple[str, str | None, tuple[str, ...]]


@dataclass
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header; scheme lower-cased, so are keys."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def _quoted(header: str, pos: int) -> tuple[str, int]:
    """The quoted-string starting at ``header[pos] == '"'``, unescaped, and the end."""
    out, pos = [], pos + 1
    while pos < len(header):
        char = header[pos]
        if char == "\\" and pos + 1 < len(header):
            out.append(header[pos + 1])
            pos += 2
        elif char == '"':
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1
    return "".join(out), pos  # unterminated: be lenient, take the rest


def _end(match: re.Match[str] | None) -> int:
    assert match is not None, "the pattern matches the empty string"
    return match.end()


def _challenges(response: httpx.Response) -> list[Challenge]:
    return parse_challenges(", ".join(response.headers.get_list("www-authenticate")))


def _error(challenges: list[Challenge]) -> str:
    """The ``error`` a refusal's challenges give (``insufficient_scope``...), if any."""
    return next((c.params["error"] for c in challenges if "error" in c.params), "")


def parse_challenges(header: str) -> list[Challenge]:
    """Every challenge in ``header``, e.g. ``Bearer realm="..",scope="..", Basic realm=".."``."""
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        pos = _end(_SPACE.match(header, pos))
        name = _TOKEN.match(header, pos)
        if not name:
            break  # garbage: keep what was understood
        pos = name.end()
        after = pos
        while after < len(header) and header[after] in " \t":
            after += 1
        # "name =" is a parameter of the current challenge; anything else starts a new one.
        if after < len(header) and header[after] == "=" and challenges:
            pos = after + 1
            while pos < len(header) and header[pos] in " \t":
                pos += 1
            if pos < len(header) and header[pos] == '"':
                value, pos = _quoted(header, pos)
            else:
                bare = _BARE_VALUE.match(header, pos)
                value, pos = (bare.group(), bare.end()) if bare else ("", pos)
            challenges[-1].params.setdefault(name.group().lower(), value)
        else:
            challenges.append(Challenge(name.group().lower()))
    return challenges


def merge_scopes(*groups: Iterable[str]) -> tuple[str, ...]:
    """Scopes as a sorted tuple, actions of the same resource merged:
    ``repository:a:pull`` + ``repository:a:push`` -> ``repository:a:pull,push``."""
    actions: dict[str, set[str]] = {}
    for group in groups:
        for scope in group:
            resource, _, acts = scope.rpartition(":")
            if not resource:  # no actions part: keep as it is
                resource, acts = scope, ""
            actions.setdefault(resource, set()).update(a for a in acts.split(",") if a)
    return tuple(sorted(f"{r}:{','.join(sorted(a))}" if a else r for r, a in actions.items()))


def _scope_repository(scope: str) -> str | None:
    """``NAME`` of ``repository:NAME:actions``; None for other resource types."""
    kind, _, rest = scope.partition(":")
    name, _, _ = rest.rpartition(":")
    return name if kind == "repository" and name else None


def _actions_by_repository(scopes: Iterable[str]) -> dict[str, set[str]]:
    return {name: set(scope.rpartition(":")[2].split(","))
            for scope in scopes if (name := _scope_repository(scope)) is not None}


def _basic(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password or ''}".encode()
    encoded = base64.b64encode(pair).decode("ascii")
    remember(encoded)
    return "Basic " + encoded


class RegistryAuth(httpx.Auth):
    """Bearer-token and Basic authentication against a registry (see module doc)."""

    def __init__(self, credentials: Credentials | None = None, *, clock: Clock | None = None,
                 host: str | None = None):
        self.credentials = credentials
        self.clock = clock or Clock()
        # Credentials and tokens go to this host[:port] only (default: the first request's);
        # a request elsewhere, such as an upload Location on a storage host, goes without.
        # Host names are compared as DNS does, whatever their case.
        self.host = host.lower() if host else None
        self._lock = threading.Lock()
        self._tokens: dict[TokenKey, tuple[str, float]] = {}
        self._fetching: dict[TokenKey, threading.Lock] = {}
        self._by_repository: dict[str | None, TokenKey] = {}
        self._basic = False
        self._realm: tuple[str, str | None] | None = None  # (realm, service) last challenged
        self._expected: dict[str, tuple[str, ...]] = {}  # repository -> scopes announced
        self._pending: set[str] = set()  # announced scopes no token has covered yet

    def expect(self, scopes: Iterable[str]) -> None:
        """Announce scopes the run will need (``repository:NAME:pull,push``), so that
        the next token request asks for them too."""
        with self._lock:
            for scope in merge_scopes(scopes):
                repository = _scope_repository(scope)
                if repository is None:
                    continue
                self._expected[repository] = merge_scopes(
                    self._expected.get(repository, ()), [scope])
                if repository not in self._by_repository:
                    self._pending.add(scope)

    # --- the flow ------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        netloc = request.url.netloc.decode().lower()
        if self.host is None:  # set once, then only read
            with self._lock:
                self.host = self.host or netloc
        if netloc != self.host:
            request.headers.pop("Authorization", None)
            yield request
            return
        if self.credentials and self.credentials.registry_token:
            yield from self._as_is(request, self.credentials.registry_token)
            return
        extra = tuple(request.extensions.get(SCOPES, ()))
        repository = self._repository(request)
        sent: tuple[TokenKey, str] | None = None
        if self._basic and self.credentials:
            request.headers["Authorization"] = _basic(self.credentials)
        else:
            with self._lock:
                known = self._by_repository.get(repository)
                realm = self._realm
            if known:
                wanted = (known[0], known[1], merge_scopes(known[2], extra))
                token = yield from self._token(wanted, request)
                request.headers["Authorization"] = f"Bearer {token}"
                sent = (wanted, token)
            elif realm and repository is not None:
                # The realm is known: ask for this repository's token now, not after a 401.
                actions = "pull" if request.method in _READ_METHODS else "pull,push"
                wanted = (*realm, self._with_pending(
                    [f"repository:{repository}:{actions}"], extra, repository))
                try:
                    token = yield from self._token(wanted, request)
                except AuthError:
                    pass  # let the registry's challenge say what it wants
                else:
                    request.headers["Authorization"] = f"Bearer {token}"
                    sent = (wanted, token)
                    self._covered(wanted)
        response = yield request
        if response.status_code != 401:
            return
        challenges = _challenges(response)
        by_scheme = {c.scheme: c for c in reversed(challenges)}
        challenge = by_scheme.get("bearer") or by_scheme.get("basic")
        if challenge is None:
            return  # not a challenge we answer: the caller sees the 401
        host = request.url.netloc.decode()
        if challenge.scheme == "basic":
            yield from self._basic_retry(request, host)
            return
        if "realm" not in challenge.params:
            raise AuthError(f"authentication to {host} failed: Bearer challenge without a realm")
        realm_key = (str(request.url.join(challenge.params["realm"])),
                     challenge.params.get("service"))
        challenged = challenge.params.get("scope", "").split()
        narrow: TokenKey = (*realm_key, merge_scopes(challenged, extra))
        key: TokenKey = (*realm_key, self._with_pending(challenged, extra, repository))
        with self._lock:
            self._realm = realm_key
        if sent:
            self._forget(*sent)  # refused: never offer that token again
        try:
            token = yield from self._token(key, request)
        except AuthError:
            if key == narrow:
                raise
            key = narrow  # the token server refused the batch: ask for what was challenged
            token = yield from self._token(key, request)
        request.headers["Authorization"] = f"Bearer {token}"
        self._covered(key)
        with self._lock:
            self._by_repository[repository] = key
        _replayable(request, host)
        response = yield request
        if response.status_code == 401:
            self._forget(key, token)
            raise AuthError(self._refused(host, key[2], _error(_challenges(response))))

    def _as_is(self, request: httpx.Request,
               token: str) -> Generator[httpx.Request, httpx.Response, None]:
        """Send a registry token (Docker's ``registrytoken``) as it is, as Docker does:
        the token server is never asked, so a refusal is final."""
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            challenges = _challenges(response)
            scopes = tuple(s for c in challenges for s in c.params.get("scope", "").split())
            raise AuthError(self._refused(request.url.netloc.decode(), scopes,
                                          _error(challenges)))

    def _basic_retry(self, request: httpx.Request,
                     host: str) -> Generator[httpx.Request, httpx.Response, None]:
        creds = self.credentials
        if not creds or not creds.username:
            raise CredentialsError(f"authentication to {host} failed: the registry requires "
                                   f"credentials{_HINT}")
        if "Authorization" in request.headers and self._basic:
            raise CredentialsError(self._refused(host, (), ""))
        self._basic = True
        request.headers["Authorization"] = _basic(creds)
        _replayable(request, host)
        response = yield request
        if response.status_code == 401:
            raise CredentialsError(self._refused(host, (), ""))

    def _refused(self, host: str, scopes: tuple[str, ...], error: str) -> str:
        creds = self.credentials
        wanted = f" to {' '.join(scopes)}" if scopes else ""
        reason = f" ({error})" if error else ""
        if not creds:
            return (f"authentication to {host} failed: anonymous access{wanted} was refused"
                    f"{reason}; credentials are needed (or the repository does not exist)"
                    f"{_HINT}")
        return (f"authentication to {host} failed: access{wanted} as {_who(creds)} was "
                f"refused{reason}; check the credentials and their permissions")

    # --- tokens --------------------------------------------------------------------

    def _with_pending(self, scopes: Iterable[str], extra: Iterable[str],
                      repository: str | None) -> tuple[str, ...]:
        """``scopes`` and ``extra``, plus what this repository and others announced."""
        with self._lock:
            own = self._expected.get(repository, ()) if repository else ()
            pending = sorted(self._pending)[:MAX_BATCHED_SCOPES]
        return merge_scopes(scopes, extra, own, pending)

    def _covered(self, key: TokenKey) -> None:
        """Send ``key``'s token up front to every repository it grants at least as
        much as the token that repository had."""
        granted = _actions_by_repository(key[2])
        with self._lock:
            for name, actions in granted.items():
                old = self._by_repository.get(name)
                if old is None or actions >= _actions_by_repository(old[2]).get(name, set()):
                    self._by_repository[name] = key
            self._pending = {s for s in self._pending
                             if _scope_repository(s) not in self._by_repository}

    @staticmethod
    def _repository(request: httpx.Request) -> str | None:
        match = _REPOSITORY.search(request.url.path)
        return match.group(1) if match else None

    def _cached(self, key: TokenKey) -> str | None:
        with self._lock:
            token, expires = self._tokens.get(key, ("", 0.0))
        return token if token and expires > self.clock.monotonic() else None

    def _forget(self, key: TokenKey, token: str) -> None:
        """Drop ``token``, unless another thread has already replaced it."""
        with self._lock:
            if self._tokens.get(key, ("",))[0] == token:
                del self._tokens[key]

    def _token(self, key: TokenKey, request: httpx.Request) -> Flow:
        """A valid token for ``key``: cached, or fetched once however many threads ask."""
        token = self._cached(key)
        if token:
            return token
        with self._lock:
            fetching = self._fetching.setdefault(key, threading.Lock())
        with fetching:  # held across the yields; the flow's close() releases it too
            token = self._cached(key)
            if token:
                return token
            token, expires_in = yield from self._fetch(key, request)
            with self._lock:
                self._tokens[key] = (token, self.clock.monotonic() + expires_in * 0.9)
            return token

    def _fetch(self, key: TokenKey, original: httpx.Request) -> Generator[
            httpx.Request, httpx.Response, tuple[str, float]]:
        realm, service, scopes = key
        creds = self.credentials
        host = original.url.netloc.decode()
        common: dict[str, Any] = {
            "headers": {"User-Agent": original.headers.get("user-agent", CLIENT_ID)},
            "extensions": {k: v for k, v in original.extensions.items() if k == "timeout"}}
        if creds and creds.token:
            response = yield self._oauth(key, {"grant_type": "refresh_token",
                                               "refresh_token": creds.token}, common)
        else:
            params: list[tuple[str, str | int | float | bool | None]] = []
            if service:
                params.append(("service", service))
            params.extend(("scope", s) for s in scopes)
            request = httpx.Request("GET", realm, params=params, **common)
            if creds and creds.username:
                request.headers["Authorization"] = _basic(creds)
            response = yield request
            if response.status_code in (404, 405) and creds and creds.username:
                response.close()
                response = yield self._oauth(key, {"grant_type": "password",
                                                   "username": creds.username,
                                                   "password": creds.password or ""}, common)
        try:
            response.read()
            body = response.json() if response.status_code == 200 else {}
        except (ValueError, httpx.HTTPError) as e:
            raise AuthError(f"authentication to {host} failed: unreadable answer from the "
                            f"token server {realm}: {e}") from None
        finally:
            response.close()
        if response.status_code in (401, 403):
            if not creds:
                raise AuthError(f"authentication to {host} failed: the token server refused "
                                f"anonymous access to {' '.join(scopes) or 'the registry'}; "
                                f"credentials are needed{_HINT}")
            raise CredentialsError(f"authentication to {host} failed: the token server "
                                   f"{realm} refused the credentials of {_who(creds)} "
                                   f"(HTTP {response.status_code})")
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(token, str) or not token:
            raise AuthError(f"authentication to {host} failed: the token server {realm} "
                            f"gave no token (HTTP {response.status_code})")
        remember(token, body.get("refresh_token"))
        try:
            expires_in = float(body.get("expires_in") or DEFAULT_EXPIRES_IN)
        except (TypeError, ValueError):
            expires_in = DEFAULT_EXPIRES_IN
        return token, expires_in

    @staticmethod
    def _oauth(key: TokenKey, grant: dict[str, str], common: dict) -> httpx.Request:
        realm, service, scopes = key
        form = {**grant, "client_id": CLIENT_ID, "scope": " ".join(scopes)}
        if service:
            form["service"] = service
        return httpx.Request("POST", realm, data=form, **common)


def _replayable(request: httpx.Request, host: str) -> None:
    """Raise unless ``request`` can go again after its refusal: a streamed body (a blob
    upload) was spent on the 401, and sending it again would send nothing. The caller
    sends it afresh instead (an upload restarts), with the credentials now at hand."""
    if not isinstance(request.stream, httpx.ByteStream):
        raise TransportError(f"{host} refused the credentials of a {request.method} whose "
                             f"body was sent; new ones are ready for sending it again",
                             retryable=True)


_HINT = (" (give --username/--password, --src-*/--dest-* ones, user:pass@ in the URI, "
         "or occystrap login HOST)")


def _who(creds: Credentials) -> str:
    name = repr(creds.username) if creds.username else \
        "a registry token" if creds.registry_token else "an identity token"
    return f"{name} (from {creds.source})" if creds.source else name
