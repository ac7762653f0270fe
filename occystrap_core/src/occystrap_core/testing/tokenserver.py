"""A Docker registry token server for tests (the auth server of the token spec).

Implements https://distribution.github.io/distribution/spec/auth/token/ and the
OAuth2 form of https://distribution.github.io/distribution/spec/auth/oauth/:

- ``GET /token?service=S&scope=repository:NAME:pull,push&scope=...`` with optional
  Basic credentials; ``offline_token=true`` adds a refresh token. Replies with both
  ``token`` and ``access_token``.
- ``POST /token`` (form): ``grant_type=password`` (``username``, ``password``) or
  ``grant_type=refresh_token`` (``refresh_token``), plus ``service``, ``client_id``
  and a space-separated ``scope``; ``access_type=offline`` adds a refresh token.
  Replies with ``access_token`` only, as real OAuth2 servers do.

Tokens are RS256 JWTs whose header ``kid`` is the libtrust fingerprint of the signing
key; the registry trusts them through ``signing_cert_pem`` in its ``rootcertbundle``.
Each user is granted only the requested actions listed in its ``actions``, on the
repositories its ``repositories`` globs match; anonymous
requests get ``anonymous_actions``. Wrong credentials get 401, a wrong ``service``
or a malformed request 400. Every request is recorded in ``requests``.

Standard library HTTP server: this is a test fixture, not product code.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class User:
    """A test account. ``actions`` are granted on the repositories matching one of the
    ``repositories`` globs (every one by default; "*" grants catalog access)."""

    name: str
    password: str
    actions: tuple[str, ...] = ("pull", "push", "delete")
    repositories: tuple[str, ...] = ("*",)


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server received, whatever its outcome."""

    method: str
    username: str | None  # None when anonymous (or a refresh-token grant before lookup)
    scopes: tuple[str, ...]
    grant_type: str | None  # POST only
    status: int


def libtrust_key_id(public_key: rsa.RSAPublicKey) -> str:
    """The libtrust key ID the registry matches a token's ``kid`` against.

    SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits, base32 without padding,
    in 12 colon-separated groups of 4.
    """
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    b32 = base64.b32encode(digest.finalize()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def _self_signed_cert(key: rsa.RSAPrivateKey, common_name: str) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class _ThreadingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    ssl_context: ssl.SSLContext | None = None

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            # Handshake lazily in the handler thread so a stalled client cannot block accept().
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr


@dataclass
class TokenServer:
    """Issues registry tokens on 127.0.0.1; ``start()`` it, then use ``realm``.

    ``issuer`` and ``service`` must match the registry's ``auth.token`` settings.
    ``ssl_context`` (a server context) makes the realm HTTPS. ``expires_in`` and
    ``anonymous_actions`` may be changed while the server runs.
    """

    users: tuple[User, ...]
    service: str = "occystrap-test-registry"
    issuer: str = "occystrap-test-token-issuer"
    expires_in: int = 300
    anonymous_actions: tuple[str, ...] = ()
    ssl_context: ssl.SSLContext | None = None
    requests: list[TokenRequest] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = libtrust_key_id(self._key.public_key())
        self.signing_cert_pem = _self_signed_cert(self._key, self.issuer)
        self._refresh_tokens: dict[str, str] = {}
        self._issued: list[str] = []
        self._lock = threading.Lock()
        self._httpd: _ThreadingHTTPServer | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        httpd = _ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        httpd.ssl_context = self.ssl_context
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, name="token-server", daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def realm(self) -> str:
        assert self._httpd is not None, "token server not started"
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}/token"

    # -- observation ---------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of requests received since start (or the last ``reset()``)."""
        with self._lock:
            return len(self.requests)

    def scopes_requested(self) -> list[str]:
        """Every scope asked for, in order, across all recorded requests."""
        with self._lock:
            return [s for r in self.requests for s in r.scopes]

    def issued(self) -> list[str]:
        """Every token and refresh token handed out since start, in order (secrets
        tests check that none is ever printed)."""
        with self._lock:
            return list(self._issued)

    def reset(self) -> None:
        """Forget recorded requests (session-scoped servers are shared between tests)."""
        with self._lock:
            self.requests.clear()

    # -- token logic ---------------------------------------------------------

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _authenticate(self, username: str, password: str) -> User | None:
        for user in self.users:
            if user.name == username and secrets.compare_digest(user.password, password):
                return user
        return None

    def _grant(self, user: User | None, scopes: list[str]) -> list[dict[str, Any]]:
        access = []
        for scope in scopes:
            # type:name:actions, where name may itself hold ':' (e.g. a port) but actions never do.
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            allowed = set(self.anonymous_actions) if user is None else set(user.actions) if (
                kind != "repository"
                or any(fnmatch.fnmatchcase(name, g) for g in user.repositories)) else set()
            granted = [a for a in actions.split(",") if a and a in allowed]
            access.append({"type": kind, "name": name, "actions": granted})
        return access

    def _issue(self, user: User | None, scopes: list[str]) -> tuple[str, int, str]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user.name if user else "",
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": self._grant(user, scopes),
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id})
        with self._lock:
            self._issued.append(token)
        issued_at = (
            datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat().replace("+00:00", "Z")
        )
        return token, self.expires_in, issued_at

    def _new_refresh_token(self, user: User) -> str:
        refresh = secrets.token_urlsafe(24)
        with self._lock:
            self._refresh_tokens[refresh] = user.name
            self._issued.append(refresh)
        return refresh

    def _user_for_refresh(self, refresh: str) -> User | None:
        with self._lock:
            name = self._refresh_tokens.get(refresh)
        return next((u for u in self.users if u.name == name), None)


class _Reject(Exception):
    def __init__(self, status: int, error: str, description: str, user: str | None = None):
        super().__init__(description)
        self.status, self.error, self.description, self.user = status, error, description, user


def _make_handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The headers and the body go out in two writes: with Nagle's algorithm the body
        # waited for the client's delayed ACK of the headers, 40 ms per token.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean; requests are recorded instead

        def _reply(
            self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str, params: dict[str, list[str]], scopes: list[str]) -> None:
            grant_type = params.get("grant_type", [None])[0] if method == "POST" else None
            try:
                if urllib.parse.urlsplit(self.path).path != "/token":
                    raise _Reject(404, "not_found", "no such endpoint")
                if params.get("service", [None])[0] != server.service:
                    raise _Reject(
                        400, "invalid_request", f"unknown service, expected {server.service!r}"
                    )
                body, username = (self._get if method == "GET" else self._post)(params, scopes)
            except _Reject as rej:
                server._record(
                    TokenRequest(method, rej.user, tuple(scopes), grant_type, rej.status)
                )
                extra = {"WWW-Authenticate": 'Basic realm="token"'} if rej.status == 401 else None
                self._reply(
                    rej.status, {"error": rej.error, "error_description": rej.description}, extra
                )
                return
            server._record(TokenRequest(method, username, tuple(scopes), grant_type, 200))
            self._reply(200, body)

        def _get(
            self, params: dict[str, list[str]], scopes: list[str]
        ) -> tuple[dict[str, Any], str | None]:
            user = None
            header = self.headers.get("Authorization", "")
            if header:
                scheme, _, value = header.partition(" ")
                if scheme.lower() != "basic":
                    raise _Reject(401, "invalid_client", "only Basic credentials are accepted")
                try:
                    username, _, password = base64.b64decode(value).decode().partition(":")
                except ValueError:
                    raise _Reject(400, "invalid_request", "malformed Basic credentials") from None
                user = server._authenticate(username, password)
                if user is None:
                    raise _Reject(401, "invalid_client", "wrong username or password", username)
            token, expires_in, issued_at = server._issue(user, scopes)
            body = {
                "token": token,
                "access_token": token,
                "expires_in": expires_in,
                "issued_at": issued_at,
            }
            if user and params.get("offline_token", [""])[0] == "true":
                body["refresh_token"] = server._new_refresh_token(user)
            return body, user.name if user else None

        def _post(
            self, params: dict[str, list[str]], scopes: list[str]
        ) -> tuple[dict[str, Any], str | None]:
            first = {key: values[0] for key, values in params.items()}
            if not first.get("client_id"):
                raise _Reject(400, "invalid_request", "client_id is required")
            grant_type = first.get("grant_type")
            if grant_type == "password":
                user = server._authenticate(first.get("username", ""), first.get("password", ""))
                if user is None:
                    raise _Reject(
                        401, "invalid_grant", "wrong username or password", first.get("username")
                    )
            elif grant_type == "refresh_token":
                user = server._user_for_refresh(first.get("refresh_token", ""))
                if user is None:
                    raise _Reject(401, "invalid_grant", "unknown refresh token")
            else:
                raise _Reject(
                    400, "unsupported_grant_type", f"unsupported grant_type {grant_type!r}"
                )
            token, expires_in, issued_at = server._issue(user, scopes)
            body: dict[str, Any] = {
                "access_token": token,
                "scope": " ".join(scopes),
                "expires_in": expires_in,
                "issued_at": issued_at,
            }
            if first.get("access_type") == "offline":
                body["refresh_token"] = server._new_refresh_token(user)
            return body, user.name

        def do_GET(self) -> None:
            params = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            self._handle("GET", params, params.get("scope", []))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            params = urllib.parse.parse_qs(self.rfile.read(length).decode())
            self._handle("POST", params, " ".join(params.get("scope", [])).split())

    return Handler
