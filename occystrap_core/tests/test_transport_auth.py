"""Registry authentication: challenge parsing, Bearer token flows, Basic, errors."""

from __future__ import annotations

import base64
import itertools
import threading
from urllib.parse import parse_qs

import httpx
import pytest

from occystrap_core.errors import AuthError
from occystrap_core.testing.http import FakeClock, MockHTTP, client_factory_plugin, make_context
from occystrap_core.transport.auth import RegistryAuth, merge_scopes, parse_challenges
from occystrap_core.transport.clock import get_clock
from occystrap_core.types import ClientConfig, Credentials

REALM = "https://auth.example/token"


class FakeRegistry:
    """reg.example, guarded by a token server on auth.example (or by Basic)."""

    def __init__(self, *, field="token", expires_in=None, users=None, anonymous=True,
                 get_status=None, basic=False):
        self.field = field
        self.expires_in = expires_in
        self.users = {"alice": "secret"} if users is None else users
        self.anonymous = anonymous
        self.get_status = get_status
        self.basic = basic
        self.granted: dict[str, set[tuple[str, str]]] = {}
        self.token_requests: list[httpx.Request] = []
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return self.token(request)
        return self.registry(request)

    def _user_ok(self, username, password):
        return self.users.get(username) == password

    def token(self, request):
        with self.lock:
            self.token_requests.append(request)
        if request.method == "GET":
            if self.get_status:
                return httpx.Response(self.get_status)
            form = parse_qs(request.url.query.decode())
            header = request.headers.get("authorization")
            if header:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if not self._user_ok(user, password):
                    return httpx.Response(401)
            elif not self.anonymous:
                return httpx.Response(401)
        else:
            form = parse_qs(request.content.decode())
            ok = (form["grant_type"] == ["refresh_token"] and form["refresh_token"] == ["rt"]) \
                or (form["grant_type"] == ["password"]
                    and self._user_ok(form["username"][0], form["password"][0]))
            if not ok or form["client_id"] != ["occystrap"]:
                return httpx.Response(401)
            form["scope"] = form["scope"][0].split()
        grants = set()
        for scope in form.get("scope", []):
            _, repo, actions = scope.split(":")
            grants |= {(repo, a) for a in actions.split(",")}
        token = f"tok-{next(self.counter)}"
        self.granted[token] = grants
        body = {self.field: token}
        if self.expires_in:
            body["expires_in"] = self.expires_in
        return httpx.Response(200, json=body)

    def registry(self, request):
        repo = request.url.path.split("/")[2]
        needed = {(repo, "pull")}
        if request.method in ("POST", "PUT"):
            needed.add((repo, "push"))
        if request.url.params.get("from"):
            needed.add((request.url.params["from"], "pull"))
        header = request.headers.get("authorization", "")
        if self.basic:
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if self._user_ok(user, password):
                    return httpx.Response(200)
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="registry"'})
        token = header.removeprefix("Bearer ")
        if needed <= self.granted.get(token, set()):
            return httpx.Response(200, json={"ok": True})
        actions = ",".join(sorted(a for r, a in needed if r == repo))
        return httpx.Response(401, headers={"WWW-Authenticate":
                                            f'Bearer realm="{REALM}",service="reg.example",'
                                            f'scope="repository:{repo}:{actions}"'})


def make(registry, credentials=None, clock=None, **settings):
    clock = clock or FakeClock()
    mock = MockHTTP(registry.handle)
    factory = client_factory_plugin("registry", lambda req, ctx: ClientConfig(
        auth=RegistryAuth(req.credentials, clock=get_clock(ctx))))
    ctx = make_context(mock, factory, clock=clock, **settings)
    return ctx, mock, ctx.http_client("registry", "reg.example", credentials=credentials)


ALICE = Credentials(username="alice", password="secret", source="test")


# --- parsing -------------------------------------------------------------------------

@pytest.mark.parametrize("header, expected", [
    ('Bearer realm="https://a/t",service="s",scope="repository:x:pull"',
     [("bearer", {"realm": "https://a/t", "service": "s", "scope": "repository:x:pull"})]),
    ('Bearer scope="repository:x:pull,push" , service=s,  realm="r"',
     [("bearer", {"scope": "repository:x:pull,push", "service": "s", "realm": "r"})]),
    ('BEARER Realm="r"', [("bearer", {"realm": "r"})]),
    (r'Bearer realm="a\"b\\c",error="invalid_token"',
     [("bearer", {"realm": 'a"b\\c', "error": "invalid_token"})]),
    ('Basic realm="x, y=z", Bearer realm="r",scope="a b"',
     [("basic", {"realm": "x, y=z"}), ("bearer", {"realm": "r", "scope": "a b"})]),
    ('Bearer realm="unterminated', [("bearer", {"realm": "unterminated"})]),
    ("Negotiate, Basic realm=r", [("negotiate", {}), ("basic", {"realm": "r"})]),
    ("", []),
])
def test_parse_challenges(header, expected):
    assert [(c.scheme, c.params) for c in parse_challenges(header)] == expected


def test_merge_scopes():
    assert merge_scopes(["repository:a:pull", "repository:b:pull"], ["repository:a:push"]) == (
        "repository:a:pull,push", "repository:b:pull")
    assert merge_scopes(["registry:catalog:*"]) == ("registry:catalog:*",)


# --- bearer --------------------------------------------------------------------------

def test_anonymous_bearer_flow_and_token_caching():
    registry = FakeRegistry()
    ctx, mock, client = make(registry)
    assert client.get("/v2/app/manifests/1").status_code == 200
    assert len(registry.token_requests) == 1
    params = registry.token_requests[0].url.params
    assert params["service"] == "reg.example"
    assert params.get_list("scope") == ["repository:app:pull"]
    assert "authorization" not in registry.token_requests[0].headers
    calls = len(mock.requests)
    assert client.get("/v2/app/blobs/sha256:1").status_code == 200
    assert len(mock.requests) == calls + 1  # token sent up front, no 401 round trip
    assert len(registry.token_requests) == 1


@pytest.mark.parametrize("field", ["token", "access_token"])
def test_token_field_variants_and_basic_credentials_on_get(field):
    registry = FakeRegistry(field=field)
    ctx, mock, client = make(registry, ALICE)
    assert client.get("/v2/app/manifests/1").status_code == 200
    assert registry.token_requests[0].headers["authorization"].startswith("Basic ")


def test_token_expiry_is_honoured():
    clock = FakeClock()
    registry = FakeRegistry(expires_in=100)
    ctx, mock, client = make(registry, clock=clock)
    client.get("/v2/app/manifests/1")
    clock.advance(80)
    client.get("/v2/app/manifests/1")
    assert len(registry.token_requests) == 1
    clock.advance(15)  # past 90% of the lifetime
    client.get("/v2/app/manifests/1")
    assert len(registry.token_requests) == 2


def test_default_expiry_is_sixty_seconds():
    clock = FakeClock()
    registry = FakeRegistry()
    ctx, mock, client = make(registry, clock=clock)
    client.get("/v2/app/manifests/1")
    clock.advance(50)
    client.get("/v2/app/manifests/1")
    clock.advance(10)
    client.get("/v2/app/manifests/1")
    assert len(registry.token_requests) == 2


def test_push_scope_upgrade_and_extra_scopes_for_mount():
    registry = FakeRegistry()
    ctx, mock, client = make(registry, ALICE)
    assert client.head("/v2/app/blobs/sha256:1").status_code == 200
    response = client.post("/v2/app/blobs/uploads/", params={"mount": "sha256:1", "from": "base"},
                           extensions={"occystrap.scopes": ["repository:base:pull"]})
    assert response.status_code == 200
    scopes = [r.url.params.get_list("scope") for r in registry.token_requests]
    assert scopes[0] == ["repository:app:pull"]
    assert scopes[-1] == ["repository:app:pull,push", "repository:base:pull"]


def test_post_fallback_when_get_is_refused():
    registry = FakeRegistry(get_status=405)
    ctx, mock, client = make(registry, ALICE)
    assert client.get("/v2/app/manifests/1").status_code == 200
    assert [r.method for r in registry.token_requests] == ["GET", "POST"]
    form = parse_qs(registry.token_requests[1].content.decode())
    assert form["grant_type"] == ["password"] and form["service"] == ["reg.example"]


def test_identity_token_uses_the_oauth2_refresh_grant():
    registry = FakeRegistry()
    ctx, mock, client = make(registry, Credentials(token="rt", source="docker config"))
    assert client.get("/v2/app/manifests/1").status_code == 200
    assert [r.method for r in registry.token_requests] == ["POST"]


def test_a_registry_token_is_sent_as_is_and_its_refusal_is_final():
    registry = FakeRegistry()
    registry.granted["as-is"] = {("app", "pull")}
    ctx, mock, client = make(registry, Credentials(registry_token="as-is", source="cfg"))
    assert client.get("/v2/app/manifests/1").status_code == 200
    assert client.get("/v2/app/manifests/2").status_code == 200
    assert registry.token_requests == []
    assert [r.headers["authorization"] for r in mock.requests] == ["Bearer as-is"] * 2
    with pytest.raises(AuthError, match=r"access to repository:other:pull as a registry "
                                        r"token \(from cfg\) was refused"):
        client.get("/v2/other/manifests/1")
    assert registry.token_requests == []


def test_token_requests_are_retried_and_rate_limited():
    registry = FakeRegistry()
    failures = [httpx.Response(503)]

    def flaky(request):
        if request.url.host == "auth.example" and failures:
            return failures.pop()
        return registry.handle(request)

    clock = FakeClock()
    mock = MockHTTP(flaky)
    factory = client_factory_plugin("registry", lambda req, ctx: ClientConfig(
        auth=RegistryAuth(req.credentials, clock=get_clock(ctx))))
    ctx = make_context(mock, factory, clock=clock, rate_limit=1)
    assert ctx.http_client("registry", "reg.example").get("/v2/app/manifests/1").status_code == 200
    assert ctx.stats["retries"] == 1
    assert [r.url.host for r in mock.requests] == ["reg.example", "auth.example", "auth.example",
                                                   "reg.example"]


def test_wrong_credentials_name_the_registry():
    ctx, mock, client = make(FakeRegistry(), Credentials("alice", "wrong", source="--username"))
    with pytest.raises(AuthError, match=r"authentication to reg.example failed: .*'alice' "
                                        r"\(from --username\)"):
        client.get("/v2/app/manifests/1")


def test_anonymous_refused_says_credentials_are_needed():
    ctx, mock, client = make(FakeRegistry(anonymous=False))
    with pytest.raises(AuthError, match="reg.example failed: .*credentials are needed"):
        client.get("/v2/app/manifests/1")


def test_token_without_access_is_an_auth_error():
    registry = FakeRegistry()
    registry.token = lambda request: httpx.Response(200, json={"token": "useless"})
    ctx, mock, client = make(registry, ALICE)
    with pytest.raises(AuthError, match="access to repository:app:pull as 'alice'"):
        client.get("/v2/app/manifests/1")


def test_one_token_fetch_for_many_threads():
    registry = FakeRegistry()
    ctx, mock, client = make(registry, ALICE)
    client.get("/v2/app/manifests/1")
    registry.granted.clear()  # the server forgets: every thread is challenged again
    errors = []

    def worker():
        try:
            assert client.get("/v2/app/blobs/sha256:1").status_code == 200
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(registry.token_requests) == 2


# --- basic ---------------------------------------------------------------------------

def test_basic_challenge():
    registry = FakeRegistry(basic=True)
    ctx, mock, client = make(registry, ALICE)
    assert client.get("/v2/app/manifests/1").status_code == 200
    calls = len(mock.requests)
    assert client.get("/v2/app/manifests/2").status_code == 200
    assert len(mock.requests) == calls + 1  # Basic is then sent up front


def test_basic_wrong_and_missing_credentials():
    ctx, mock, client = make(FakeRegistry(basic=True), Credentials("alice", "nope"))
    with pytest.raises(AuthError, match="authentication to reg.example failed: .*refused"):
        client.get("/v2/app/manifests/1")
    ctx, mock, client = make(FakeRegistry(basic=True))
    with pytest.raises(AuthError, match="reg.example failed: the registry requires credentials"):
        client.get("/v2/app/manifests/1")


def test_401_without_a_challenge_is_returned():
    ctx = make_context(MockHTTP(lambda r: httpx.Response(401)), client_factory_plugin(
        "registry", lambda req, ctx: ClientConfig(auth=RegistryAuth())), clock=FakeClock())
    assert ctx.http_client("registry", "reg.example").get("/v2/").status_code == 401
