"""The registry fixtures themselves: the real distribution registry in each mode, and the
token server."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from occystrap_core.testing import registry as registry_module
from occystrap_core.testing.registry import (
    RegistryServer,
    push_sample_image,
    skopeo_args,
    start_registry,
)
from occystrap_core.testing.tokenserver import libtrust_key_id


def _client(server: RegistryServer, http2: bool = False) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, verify=server.ssl_context() or False, trust_env=False, http2=http2
    )


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60)


def _bearer_challenge(response: httpx.Response) -> dict[str, str]:
    scheme, _, params = response.headers["WWW-Authenticate"].partition(" ")
    assert scheme == "Bearer"
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


def _token(
    server: RegistryServer, scope: str, auth: tuple[str, str] | None = None
) -> httpx.Response:
    assert server.token_server is not None
    with httpx.Client(verify=server.ssl_context() or False, trust_env=False) as client:
        return client.get(
            server.token_server.realm,
            params={"service": server.token_server.service, "scope": scope},
            auth=auth,
        )


def test_mode_starts_on_loopback(registry: RegistryServer) -> None:
    assert registry.host.startswith("127.0.0.1:")
    assert registry.scheme == ("http" if registry.mode == "plain" else "https")
    assert (registry.ca_cert is None) == (registry.mode == "plain")
    config = json.loads((registry.root / "config.yml").read_text())
    assert config["http"]["addr"] == registry.host
    assert "debug" not in config["http"]
    with _client(registry) as client:
        assert client.get("/v2/").status_code == (200 if registry.mode in ("plain", "tls") else 401)


def test_skopeo_push_and_inspect(registry: RegistryServer) -> None:
    repo = f"fixtures/push-{registry.mode}"
    image = push_sample_image(registry, repo, "v1")
    raw = _skopeo("inspect", "--raw", *skopeo_args(registry), f"docker://{registry.host}/{repo}:v1")
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.encode() == image.manifest
    info = _skopeo("inspect", *skopeo_args(registry), f"docker://{registry.host}/{repo}:v1")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["Digest"] == image.manifest_digest


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_wrong_credentials_fail(mode: str, request: pytest.FixtureRequest) -> None:
    server: RegistryServer = request.getfixturevalue(f"registry_{mode}")
    with pytest.raises(RuntimeError, match="skopeo copy"):
        push_sample_image(server, "fixtures/wrong-creds", creds=("alice", "wrong"))
    anonymous = _skopeo(
        "inspect",
        "--raw",
        *skopeo_args(server, creds=False),
        f"docker://{server.host}/fixtures/x:v1",
    )
    assert anonymous.returncode != 0


def test_basic_challenge_and_credentials(registry_basic: RegistryServer) -> None:
    with _client(registry_basic) as client:
        denied = client.get("/v2/")
        assert denied.headers["WWW-Authenticate"] == 'Basic realm="occystrap-test"'
        assert client.get("/v2/", auth=("reader", "reader-secret")).status_code == 200
        assert client.get("/v2/", auth=("reader", "nope")).status_code == 401
    assert (registry_basic.root / "htpasswd").read_text().startswith("alice:$2y$")


def test_token_challenge(registry_token: RegistryServer) -> None:
    assert registry_token.token_server is not None
    with _client(registry_token) as client:
        response = client.get("/v2/fixtures/anything/tags/list")
    assert response.status_code == 401
    assert _bearer_challenge(response) == {
        "realm": registry_token.token_server.realm,
        "service": registry_token.token_server.service,
        "scope": "repository:fixtures/anything:pull",
    }


def test_registry_accepts_issued_token(registry_token: RegistryServer) -> None:
    token_server = registry_token.token_server
    assert token_server is not None
    push_sample_image(registry_token, "fixtures/tokens", "v2")
    token_server.reset()

    response = _token(
        registry_token, "repository:fixtures/tokens:pull", auth=("alice", "alice-secret")
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == token_server.expires_in
    assert jwt.get_unverified_header(body["token"])["kid"] == token_server.key_id
    signing_key = x509.load_pem_x509_certificate(token_server.signing_cert_pem).public_key()
    assert isinstance(signing_key, rsa.RSAPublicKey)
    claims = jwt.decode(
        body["token"], signing_key, algorithms=["RS256"], audience=token_server.service
    )
    assert claims["iss"] == token_server.issuer and claims["sub"] == "alice"
    assert claims["access"] == [
        {"type": "repository", "name": "fixtures/tokens", "actions": ["pull"]}
    ]

    with _client(registry_token) as client:
        tags = client.get(
            "/v2/fixtures/tokens/tags/list", headers={"Authorization": f"Bearer {body['token']}"}
        )
    assert tags.status_code == 200 and tags.json()["tags"] == ["v2"]
    assert token_server.count == 1
    assert token_server.scopes_requested() == ["repository:fixtures/tokens:pull"]


def test_oauth_password_and_refresh_grants(registry_token: RegistryServer) -> None:
    token_server = registry_token.token_server
    assert token_server is not None
    push_sample_image(registry_token, "fixtures/oauth")
    form = {
        "service": token_server.service,
        "client_id": "occystrap-tests",
        "scope": "repository:fixtures/oauth:pull",
    }
    with httpx.Client(verify=registry_token.ssl_context() or False, trust_env=False) as client:
        first = client.post(
            token_server.realm,
            data={
                **form,
                "grant_type": "password",
                "username": "reader",
                "password": "reader-secret",
                "access_type": "offline",
            },
        )
        assert first.status_code == 200
        assert "token" not in first.json()  # OAuth2 replies carry access_token only
        refreshed = client.post(
            token_server.realm,
            data={
                **form,
                "grant_type": "refresh_token",
                "refresh_token": first.json()["refresh_token"],
            },
        )
        assert refreshed.status_code == 200
        bad = client.post(
            token_server.realm,
            data={**form, "grant_type": "password", "username": "reader", "password": "x"},
        )
        assert bad.status_code == 401
    with _client(registry_token) as client:
        auth = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
        assert client.get("/v2/fixtures/oauth/tags/list", headers=auth).status_code == 200


def test_token_server_rejects_and_limits(registry_token: RegistryServer) -> None:
    token_server = registry_token.token_server
    assert token_server is not None
    token_server.reset()
    assert (
        _token(registry_token, "repository:fixtures/x:pull", auth=("alice", "wrong")).status_code
        == 401
    )
    assert [(r.username, r.status) for r in token_server.requests] == [("alice", 401)]

    anonymous = _token(registry_token, "repository:fixtures/x:pull")
    assert (
        jwt.decode(anonymous.json()["token"], options={"verify_signature": False})["access"][0][
            "actions"
        ]
        == []
    )
    with _client(registry_token) as client:
        headers = {"Authorization": f"Bearer {anonymous.json()['token']}"}
        assert client.get("/v2/fixtures/x/tags/list", headers=headers).status_code == 401

    reader = _token(
        registry_token, "repository:fixtures/x:pull,push", auth=("reader", "reader-secret")
    )
    assert jwt.decode(reader.json()["token"], options={"verify_signature": False})["access"][0][
        "actions"
    ] == ["pull"]


def test_reader_can_pull_but_not_push(registry_token: RegistryServer) -> None:
    push_sample_image(registry_token, "fixtures/readonly")
    reader = ("reader", "reader-secret")
    pulled = _skopeo(
        "inspect",
        "--raw",
        *skopeo_args(registry_token, creds=reader),
        f"docker://{registry_token.host}/fixtures/readonly:latest",
    )
    assert pulled.returncode == 0, pulled.stderr
    with pytest.raises(RuntimeError):
        push_sample_image(registry_token, "fixtures/readonly", "by-reader", creds=reader)


def test_http2_offered_over_tls(registry_tls: RegistryServer) -> None:
    with _client(registry_tls, http2=True) as client:
        assert client.get("/v2/").http_version == "HTTP/2"


def test_libtrust_key_id_format(registry_token: RegistryServer) -> None:
    assert registry_token.token_server is not None
    key_id = registry_token.token_server.key_id
    assert re.fullmatch(r"([A-Z2-7]{4}:){11}[A-Z2-7]{4}", key_id)
    cert = x509.load_pem_x509_certificate(registry_token.token_server.signing_cert_pem)
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert libtrust_key_id(public_key) == key_id


def test_start_failure_reports_registry_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /bin/sh fails on the "serve" argument and says so on stderr, like a broken registry would.
    monkeypatch.setattr(registry_module, "REGISTRY_BINARY", "/bin/sh")
    with pytest.raises(RuntimeError, match=r"(?s)exited with 2:.*cannot open serve"):
        start_registry("plain", tmp_path)
