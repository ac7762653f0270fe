"""Auth files whose keys name a namespace or repository (``HOST/NS``, as ``podman login
HOST/NS`` writes them): the most specific key for the repository wins, against the
real token registry, with skopeo as the witness reading the same file."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from occystrap_core.testing.registry import User, push_sample_image, start_registry


def _auth(username: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}


@pytest.fixture
def auth_file(tmp_path, monkeypatch):
    """An empty home and DOCKER_CONFIG; REGISTRY_AUTH_FILE is the file the test writes."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    for name in ("XDG_RUNTIME_DIR", "OCCYSTRAP_USERNAME", "OCCYSTRAP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "auth.json"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(path))
    return path


def test_the_most_specific_key_of_an_auth_file_wins(registry_token, auth_file, run_cli,
                                                     skopeo):
    server = registry_token
    run = uuid.uuid4().hex[:8]
    source = f"scoped-{run}/src"
    push_sample_image(server, source, "v1")
    host, alice, reader = server.host, ("alice", "alice-secret"), ("reader", "reader-secret")
    # reader (pull only) for the host and another namespace, alice (push) for ours: in
    # file order, the first key of the host is reader's
    auth_file.write_text(json.dumps({"auths": {
        f"{host}/other-{run}": _auth(*reader),
        f"{host}/mine-{run}": _auth(*alice),
        host: _auth(*reader)}}))
    dest = f"{host}/mine-{run}/app:v1"
    result = run_cli("--ca-cert", server.ca_cert, "process", f"registry://{host}/{source}:v1",
                     f"registry://{dest}")
    assert result.exit_code == 0, result.output
    # skopeo reads the file the same way: the image is there, and reader may not push
    # to the other namespace
    out = skopeo("inspect", "--authfile", str(auth_file), f"--cert-dir={server.cert_dir}",
                 f"docker://{dest}")
    assert json.loads(out)["Name"] == dest.rsplit(":", 1)[0]
    refused = run_cli("--ca-cert", server.ca_cert, "process", f"registry://{host}/{source}:v1",
                      f"registry://{host}/other-{run}/app:v1")
    assert refused.exit_code != 0
    assert "as 'reader'" in refused.stderr


# Two namespaces of one token registry, each with its own user, who may touch only its
# namespace and the namespace's mirror: nothing works with one user for the whole host.
NAMESPACE_USERS = (User("alice", "alice-secret"),
                   User("ua", "ua-secret", repositories=("nsa/*", "mirror/nsa/*")),
                   User("ub", "ub-secret", repositories=("nsb/*", "mirror/nsb/*")))


@pytest.fixture(scope="module")
def namespaced(tmp_path_factory):
    server = start_registry("token", tmp_path_factory.mktemp("namespaced"),
                            users=NAMESPACE_USERS)
    try:
        for ns in ("nsa", "nsb"):
            push_sample_image(server, f"{ns}/app", "v1")
        yield server
    finally:
        server.stop()


def _namespace_keys(host: str) -> dict[str, tuple[str, str]]:
    return {f"{host}/nsa": ("ua", "ua-secret"), f"{host}/mirror/nsa": ("ua", "ua-secret"),
            f"{host}/nsb": ("ub", "ub-secret"), f"{host}/mirror/nsb": ("ub", "ub-secret")}


@pytest.mark.parametrize("where", ["auth-file", "sync-config"])
def test_sync_lists_and_copies_each_namespace_with_its_credentials(
        namespaced, auth_file, run_cli, tmp_path, where):
    """The tags of each repository are listed, and its images copied, with the
    credentials of the most specific key: of the auth file, or of sync's own
    ``registries`` (which take HOST/NS keys for their credentials too)."""
    host = namespaced.host
    keys = _namespace_keys(host)
    registries = ""
    if where == "auth-file":
        auth_file.write_text(json.dumps({"auths": {k: _auth(*v) for k, v in keys.items()}}))
    else:
        registries = "registries:\n" + "".join(
            f"  {key}: {{username: {user}, password: {password}}}\n"
            for key, (user, password) in keys.items())
    config = tmp_path / "sync.yaml"
    config.write_text(registries + f"""\
sources:
  - source: registry://{host}/nsa/app
    destinations: registry://{host}/mirror/{{repo}}:{{tag}}
  - source: registry://{host}/nsb/app
    destinations: registry://{host}/mirror/{{repo}}:{{tag}}
""")
    result = run_cli("--ca-cert", namespaced.ca_cert, "sync", str(config))
    assert result.exit_code == 0, result.output
    for ns in ("nsa", "nsb"):
        seen = run_cli("--ca-cert", namespaced.ca_cert, "--username", "alice", "--password",
                       "alice-secret", "info", f"registry://{host}/mirror/{ns}/app:v1")
        assert seen.exit_code == 0, seen.output
