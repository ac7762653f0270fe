"""TLS and scheme mistakes against the real registries: one attempt, and a hint that
works; --tls-verify=false and ?tls_verify=false for a registry whose CA is unknown."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from occystrap_core import hookimpl
from occystrap_core.testing.registry import push_sample_image
from occystrap_core.types import TransportLayer


class AttemptLog:
    """Counts every attempt (a layer below the retries), not just logical requests."""

    def __init__(self) -> None:
        self.attempts = 0

    def _wrap(self, inner, host, ctx):
        log = self

        class Counter(httpx.BaseTransport):
            def handle_request(self, request):
                log.attempts += 1
                return inner.handle_request(request)

            def close(self):
                inner.close()

        return Counter()

    @hookimpl
    def occystrap_transport_layers(self):
        return [TransportLayer(name="test-attempts", order=60, wrap=self._wrap)]


@pytest.fixture
def attempts(register_plugin):
    log = AttemptLog()
    register_plugin(log, name="occystrap-test-attempts")
    return log


@pytest.fixture(scope="module")
def tls_image(registry_tls):
    repo = f"tlshint/{uuid.uuid4().hex[:8]}"
    push_sample_image(registry_tls, repo, "v1")
    return f"{registry_tls.host}/{repo}:v1"


def test_tls_to_a_plain_http_registry_suggests_insecure(registry_plain, attempts, run_cli,
                                                        expect_error, tmp_path):
    result = run_cli("--retries", "3", "info", f"registry://{registry_plain.host}/any:v1")
    expect_error(result, f"cannot connect to {registry_plain.host}",
                 "plain-HTTP registry? then use --insecure")
    assert attempts.attempts == 1  # not retried: it would fail the same way
    assert "after" not in result.stderr


def test_an_unknown_ca_suggests_ca_cert_or_tls_verify(tls_image, attempts, run_cli,
                                                      expect_error):
    result = run_cli("--retries", "3", "info", f"registry://{tls_image}")
    expect_error(result, "CERTIFICATE_VERIFY_FAILED", "--ca-cert FILE", "--tls-verify=false")
    assert attempts.attempts == 1


def test_a_certificate_for_other_names_does_not_suggest_ca_cert(registry_tls, tls_image,
                                                                attempts, run_cli,
                                                                expect_error):
    """127.1 is 127.0.0.1, but not a name the registry's certificate (trusted through
    --ca-cert) was issued for: the CA is not the problem."""
    port = registry_tls.host.rpartition(":")[2]
    image = tls_image.replace(registry_tls.host, f"127.1:{port}")
    result = run_cli("--retries", "3", "--ca-cert", registry_tls.ca_cert, "info",
                     f"registry://{image}")
    expect_error(result, f"cannot connect to 127.1:{port}", "not valid for '127.1'",
                 "issued for other names", "--tls-verify=false")
    assert "--ca-cert" not in result.stderr
    assert attempts.attempts == 1


def test_plain_http_to_an_https_registry_suggests_dropping_insecure(tls_image, attempts,
                                                                    run_cli, expect_error):
    result = run_cli("--insecure", "info", f"registry://{tls_image}")
    expect_error(result, "HTTP 400", "HTTPS registry? then drop --insecure")
    assert attempts.attempts == 1


@pytest.mark.parametrize("how", ["option", "uri"])
def test_tls_verify_false_accepts_the_unknown_ca(how, tls_image, run_cli, tmp_path):
    uri = f"registry://{tls_image}" + ("?tls_verify=false" if how == "uri" else "")
    options = ["--tls-verify=false"] if how == "option" else []
    out = tmp_path / "out.tar"
    result = run_cli(*options, "process", uri, f"tar://{out}")
    assert result.exit_code == 0, result.output
    assert out.is_file()


def test_tls_verify_false_reaches_the_token_realm_too(registry_token, run_cli, tmp_path):
    repo = f"tlshint/{uuid.uuid4().hex[:8]}"
    push_sample_image(registry_token, repo, "v1")
    uri = f"registry://{registry_token.host}/{repo}:v1?tls_verify=false"
    result = run_cli("--username", registry_token.username, "--password",
                     registry_token.password, "info", uri)
    assert result.exit_code == 0, result.output


def test_tls_verify_takes_the_environment_and_rejects_nonsense(tls_image, run_cli):
    result = run_cli("info", f"registry://{tls_image}", env={"OCCYSTRAP_TLS_VERIFY": "false"})
    assert result.exit_code == 0, result.output
    result = run_cli("--tls-verify=maybe", "info", f"registry://{tls_image}")
    assert result.exit_code == 2 and "--tls-verify" in result.stderr


def test_sync_takes_tls_verify_per_registry(registry_tls, registry_plain, run_cli, tmp_path):
    repo = f"tlshint/{uuid.uuid4().hex[:8]}"
    push_sample_image(registry_tls, repo, "v1")
    config = tmp_path / "sync.yaml"
    config.write_text(f"""\
registries:
  {registry_tls.host}: {{tls_verify: false}}
  {registry_plain.host}: {{insecure: true}}
sources:
  - source: registry://{registry_tls.host}/{repo}
    destinations: registry://{registry_plain.host}/{repo}:{{tag}}
""")
    result = run_cli("sync", str(config))  # lists the tags, then copies: both unverified
    assert result.exit_code == 0, result.output
    tags = httpx.get(f"{registry_plain.url}/v2/{repo}/tags/list").json()["tags"]
    assert tags == ["v1"]


def test_a_certs_d_directory_is_trusted_as_podman_and_skopeo_trust_it(tls_image, registry_tls,
                                                                    run_cli, skopeo,
                                                                    expect_error, tmp_path,
                                                                    monkeypatch):
    """containers-certs.d(5): ~/.config/containers/certs.d/HOST:PORT/*.crt is trusted
    for that registry, with no --ca-cert (skopeo reads the same directory)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    certs = tmp_path / ".config/containers/certs.d" / registry_tls.host
    certs.mkdir(parents=True)
    (certs / "ca.crt").write_bytes((Path(registry_tls.cert_dir) / "ca.crt").read_bytes())
    result = run_cli("info", f"registry://{tls_image}")
    assert result.exit_code == 0, result.output
    skopeo("inspect", f"docker://{tls_image}")  # the witness, from the same directory
    (certs / "client.key").write_text("")  # a key without its certificate
    expect_error(run_cli("info", f"registry://{tls_image}"), f"{certs}/client.key",
                 "client.cert is missing")


def test_ca_cert_takes_a_directory_as_skopeo_cert_dir(tls_image, registry_tls, run_cli,
                                                     expect_error, tmp_path):
    result = run_cli("--ca-cert", str(registry_tls.cert_dir), "info", f"registry://{tls_image}")
    assert result.exit_code == 0, result.output
    expect_error(run_cli("--ca-cert", str(tmp_path), "info", f"registry://{tls_image}"),
                 f"cannot load TLS certificates ({tmp_path}): no *.crt in it")
