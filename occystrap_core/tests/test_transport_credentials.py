"""The core's credential sources and their order."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from occystrap_core import hookimpl
from occystrap_core.builtin.credentials import REMEMBERED_FOR
from occystrap_core.testing.http import FakeClock, make_context
from occystrap_core.transport.clock import CLOCK_KEY
from occystrap_core.types import Credentials


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home; no credential environment from the machine running the tests."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def helper(tmp_path, monkeypatch, name, answers):
    """A fake ``docker-credential-NAME`` on PATH answering from ``answers`` by server URL."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / f"docker-credential-{name}"
    script.write_text(f"""#!/usr/bin/env python3
import json, sys
assert sys.argv[1:] == ["get"]
server = sys.stdin.read().strip()
answers = {json.dumps(answers)!s}
if server not in answers:
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps(answers[server]))
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def creds(host, role="input", **settings):
    return make_context(**settings).credentials(host, role)


def test_nothing_configured(home):
    assert creds("reg.example") is None


def test_command_line_by_role(home):
    settings = {"username": "both", "password": "p0", "src_username": "src",
                "src_password": "p1", "dest_username": "dst", "dest_password": "p2"}
    assert creds("reg.example", "input", **settings).username == "src"
    assert creds("reg.example", "output", **settings).username == "dst"
    found = creds("reg.example", "output", username="both", password="p0")
    assert (found.username, found.password, found.source) == ("both", "p0", "--username")


def test_command_line_beats_docker_config(home):
    write(home / ".docker/config.json", {"auths": {"reg.example": {"auth": b64("cfg:x")}}})
    assert creds("reg.example", username="cli", password="y").username == "cli"
    assert creds("reg.example").username == "cfg"


def test_docker_config_auth_forms(home, monkeypatch):
    config = write(home / "elsewhere/config.json", {"auths": {
        "https://reg.example/v1/": {"auth": b64("alice:pa:ss")},
        "plain.example": {"username": "bob", "password": "pw"},
        "token.example": {"auth": b64("carol:"), "identitytoken": "refresh-me"},
        "empty.example": {},
        "bearer.example": {"auth": b64("dave:pw"), "registrytoken": "as-is"},
    }})
    monkeypatch.setenv("DOCKER_CONFIG", str(config.parent))
    found = creds("reg.example")
    assert (found.username, found.password) == ("alice", "pa:ss")
    assert creds("plain.example").password == "pw"
    assert creds("token.example").token == "refresh-me"
    assert creds("empty.example") is None
    bearer = creds("bearer.example")  # Docker sends it and nothing else
    assert (bearer.registry_token, bearer.password, bearer.token) == ("as-is", None, None)
    assert "secret" not in repr(Credentials("u", "secret", "tok"))


def test_keys_scoped_to_a_namespace_apply_to_its_repositories_only(home):
    write(home / ".config/containers/auth.json", {"auths": {
        "reg.example/team": {"auth": b64("team:1")},
        "reg.example/team/app": {"auth": b64("app:2")},
        "https://reg.example/v1/": {"auth": b64("host:3")},
        "docker.io/library": {"auth": b64("lib:4")}}})

    def user(host, repository):
        return make_context().credentials(host, "input", repository).username

    assert user("reg.example", "team/app") == "app"
    assert user("reg.example", "team/app/sub") == "app"
    assert user("reg.example", "team/web") == "team"
    assert user("reg.example", "teamster/web") == "host"  # a prefix of a name is no namespace
    assert user("reg.example", None) == "host"
    assert user("docker.io", "library/nginx") == "lib"
    assert creds("docker.io").username == "lib"  # no repository: a host key, else a scoped one


def test_a_helper_runs_once_for_the_repositories_of_a_host(home, tmp_path, monkeypatch):
    """Answers are per repository (auth files may hold namespace keys), but asking the
    helper per repository would run e.g. ECR's once per image of a sync."""
    calls = tmp_path / "calls"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-count"
    script.write_text(f"""#!/bin/sh
echo x >> {calls}
echo '{{"Username": "u", "Secret": "s"}}'
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    write(home / ".docker/config.json", {"credsStore": "count"})
    ctx = make_context()
    for repository in ("team/a", "team/b", None, "other/c"):
        assert ctx.credentials("reg.example", "input", repository).username == "u"
    assert calls.read_text().count("x") == 1


def test_docker_hub_aliases(home):
    write(home / ".docker/config.json",
          {"auths": {"https://index.docker.io/v1/": {"auth": b64("hub:pw")}}})
    for host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        assert creds(host).username == "hub"


def test_cred_helpers_and_store(home, tmp_path, monkeypatch):
    helper(tmp_path, monkeypatch, "test", {
        "reg.example": {"ServerURL": "reg.example", "Username": "helped", "Secret": "s1"},
        "https://index.docker.io/v1/": {"Username": "<token>", "Secret": "idtoken"},
    })
    helper(tmp_path, monkeypatch, "store", {
        "stored.example": {"Username": "kept", "Secret": "s2"}})
    write(home / ".docker/config.json", {
        "credHelpers": {"reg.example": "test", "docker.io": "test"},
        "credsStore": "store",
        "auths": {"reg.example": {"auth": b64("file:x")}, "fallback.example": {"auth": b64("f:y")}},
    })
    found = creds("reg.example")
    assert (found.username, found.password) == ("helped", "s1")
    assert "docker-credential-test" in found.source
    hub = creds("docker.io")
    assert hub.token == "idtoken" and hub.username is None
    assert creds("stored.example").username == "kept"
    assert creds("fallback.example").username == "f"  # the store has nothing: the file has


def test_a_helper_is_asked_again_after_a_while(home, tmp_path, monkeypatch):
    """Once within REMEMBERED_FOR seconds, so a helper runs once in a short run; a
    long one (the proxy's) gets the helper's new token (ECR's last 12 hours)."""
    helper(tmp_path, monkeypatch, "rotating",
           {"reg.example": {"Username": "u", "Secret": "first"}})
    write(home / ".docker/config.json", {"credHelpers": {"reg.example": "rotating"}})
    ctx = make_context()
    clock = FakeClock()
    ctx.shared(CLOCK_KEY, lambda: clock)
    assert ctx.credentials("reg.example", "output").password == "first"
    helper(tmp_path, monkeypatch, "rotating",
           {"reg.example": {"Username": "u", "Secret": "second"}})
    clock.advance(REMEMBERED_FOR - 1)
    assert ctx.credentials("reg.example", "output").password == "first"
    clock.advance(1)
    assert ctx.credentials("reg.example", "output").password == "second"


def test_missing_helper_is_a_warning_not_a_crash(home, caplog):
    write(home / ".docker/config.json", {"credHelpers": {"reg.example": "absent"}})
    assert creds("reg.example") is None
    assert "docker-credential-absent" in caplog.text


def test_registry_auth_file_then_docker_then_the_containers_files(home, tmp_path,
                                                                  monkeypatch):
    write(home / ".docker/config.json", {"auths": {"docker.example": {"auth": b64("d:1")}}})
    auth_file = write(tmp_path / "auth.json", {"auths": {
        "docker.example": {"auth": b64("podman:1")}, "podman.example": {"auth": b64("p:1")}}})
    write(tmp_path / "run/containers/auth.json", {"auths": {"xdg.example": {"auth": b64("x:1")}}})
    write(home / ".config/containers/auth.json", {"auths": {"home.example": {"auth": b64("h:1")}}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert creds("docker.example").username == "podman"  # the file chosen comes first
    assert creds("podman.example").username == "p"
    assert creds("xdg.example").username == "x"
    assert creds("home.example").username == "h"


def test_broken_config_is_skipped(home, caplog):
    (home / ".docker").mkdir()
    (home / ".docker/config.json").write_text("{not json")
    write(home / ".config/containers/auth.json", {"auths": {"reg.example": {"auth": b64("h:1")}}})
    assert creds("reg.example").username == "h"
    assert "config.json" in caplog.text


@pytest.mark.parametrize("helpers", [["reg.example"], "pass"])
def test_a_cred_helpers_that_is_not_a_mapping_is_skipped(home, caplog, helpers):
    """credHelpers must map hosts to helpers: another shape is warned of and skipped
    (as a broken file is), and the file's auths still count."""
    write(home / ".docker/config.json", {"credHelpers": helpers,
                                         "auths": {"reg.example": {"auth": b64("d:1")}}})
    assert creds("reg.example").username == "d"
    assert "credHelpers" in caplog.text


def test_plugins_come_first(home):
    class Vault:
        @hookimpl
        def occystrap_credentials(self, host):
            return Credentials("vault", "v") if host == "acme.example" else None

    ctx = make_context(Vault(), username="cli", password="x")
    assert ctx.credentials("acme.example", "input").username == "vault"
    assert ctx.credentials("other.example", "input").username == "cli"
