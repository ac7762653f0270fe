"""occystrap login/logout against the real basic and token registries, with a
temporary DOCKER_CONFIG: what login stores, a run and skopeo use."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import uuid

import pytest

from occystrap_core import library
from occystrap_core.builtin.credentials import REMEMBERED_FOR
from occystrap_core.errors import AuthError, UsageError
from occystrap_core.login import parse_host, parse_scope
from occystrap_core.testing.http import FakeClock
from occystrap_core.testing.registry import push_sample_image
from occystrap_core.transport.clock import CLOCK_KEY

HELPER = f"""#!{sys.executable}
# docker-credential-testhelper: the credential helper protocol, kept in a JSON file
import json, os, sys
path = os.environ["TESTHELPER_STORE"]
store = json.load(open(path)) if os.path.exists(path) else {{}}
action, given = sys.argv[1], sys.stdin.read()
if action == "store":
    entry = json.loads(given)
    store[entry["ServerURL"]] = [entry["Username"], entry["Secret"]]
elif action in ("get", "erase"):
    if given.strip() not in store:
        print("credentials not found in native keychain")
        sys.exit(1)
    if action == "get":
        user, secret = store[given.strip()]
        print(json.dumps({{"ServerURL": given.strip(), "Username": user, "Secret": secret}}))
        sys.exit(0)
    del store[given.strip()]
json.dump(store, open(path, "w"))
"""


@pytest.fixture
def docker_config(tmp_path, monkeypatch):
    """An empty DOCKER_CONFIG and home: no credentials but what the test stores."""
    config = tmp_path / "docker"
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "OCCYSTRAP_USERNAME",
                 "OCCYSTRAP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return config


@pytest.fixture
def helper_store(tmp_path, monkeypatch):
    """``docker-credential-testhelper`` on PATH; returns the JSON file it keeps secrets in."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-testhelper"
    script.write_text(HELPER)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    store = tmp_path / "helper-store.json"
    monkeypatch.setenv("TESTHELPER_STORE", str(store))
    return store


def login(run_cli, server, password=None, *extra):
    return run_cli("--ca-cert", server.ca_cert, "login", *extra, "-u", server.username,
                   "--password-stdin", f"registry://{server.host}",
                   input=(password or server.password) + "\n")


def pulls(run_cli, server, tmp_path):
    """Does a pull with no credentials on the command line work?"""
    repo = f"login/{uuid.uuid4().hex[:8]}"
    push_sample_image(server, repo, "v1")
    out = tmp_path / f"{uuid.uuid4().hex[:8]}.tar"
    result = run_cli("--ca-cert", server.ca_cert, "process", f"registry://{server.host}/{repo}:v1",
                     f"tar://{out}")
    return result.exit_code == 0 and out.is_file(), repo, result


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_login_stores_what_a_pull_and_skopeo_then_use(mode, request, docker_config, run_cli,
                                                      skopeo, tmp_path):
    server = request.getfixturevalue(f"registry_{mode}")
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps({
        "auths": {"other.example": {"auth": "b3RoZXI6eA=="}}, "HttpHeaders": {"X-A": "b"}}))
    result = login(run_cli, server)
    assert result.exit_code == 0, result.output
    assert "Login Succeeded" in result.stdout and server.password not in result.output
    path = docker_config / "config.json"
    config = json.loads(path.read_text())
    pair = base64.b64decode(config["auths"][server.host]["auth"]).decode()
    assert pair == f"{server.username}:{server.password}"
    assert config["auths"]["other.example"] == {"auth": "b3RoZXI6eA=="}  # kept as it was
    assert config["HttpHeaders"] == {"X-A": "b"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ok, repo, pulled = pulls(run_cli, server, tmp_path)
    assert ok, pulled.output
    # the witness: skopeo reads the same file
    out = skopeo("inspect", "--authfile", str(path), f"--cert-dir={server.cert_dir}",
                 f"docker://{server.host}/{repo}:v1")
    assert json.loads(out)["Name"] == f"{server.host}/{repo}"


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_a_wrong_password_stores_nothing(mode, request, docker_config, run_cli, expect_error):
    server = request.getfixturevalue(f"registry_{mode}")
    result = login(run_cli, server, "wrong-password")
    expect_error(result, f"authentication to {server.host} failed")
    assert "wrong-password" not in result.output
    assert not (docker_config / "config.json").exists()


@pytest.mark.parametrize("old", [{"auth": base64.b64encode(b"old:stale").decode()},
                                 {"registrytoken": "old-stale-token"}], ids=["auth", "token"])
def test_a_credential_helper_keeps_the_secret_out_of_the_file(registry_token, docker_config,
                                                              helper_store, run_cli,
                                                              expect_error, tmp_path, old):
    server = registry_token
    docker_config.mkdir()
    path = docker_config / "config.json"
    path.write_text(json.dumps({"credsStore": "testhelper", "auths": {server.host: old}}))
    result = login(run_cli, server)
    assert result.exit_code == 0, result.output
    assert "docker-credential-testhelper" in result.stdout
    text = path.read_text()
    assert server.password not in text and "stale" not in text
    assert base64.b64encode(server.password.encode()).decode() not in text
    assert "auth" not in json.loads(text).get("auths", {}).get(server.host, {})
    assert json.loads(text)["credsStore"] == "testhelper"
    assert json.loads(helper_store.read_text()) == {
        server.host: [server.username, server.password]}
    ok, _, pulled = pulls(run_cli, server, tmp_path)  # read back through the helper
    assert ok, pulled.output
    result = run_cli("logout", server.host)
    assert result.exit_code == 0 and "Removed" in result.stdout, result.output
    assert json.loads(helper_store.read_text()) == {}
    expect_error(run_cli("logout", server.host), f"not logged in to {server.host}")


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_a_long_session_uses_a_login_made_since(mode, request, docker_config, run_cli,
                                                tmp_path):
    """A session that lasts (the proxy's) asks the credential sources again after a
    while: a login made meanwhile is used without a restart."""
    server = request.getfixturevalue(f"registry_{mode}")
    repo = f"login/{uuid.uuid4().hex[:8]}"
    push_sample_image(server, repo, "v1")
    source = f"registry://{server.host}/{repo}:v1"
    clock = FakeClock()
    with library.session(ca_cert=server.ca_cert) as session:
        session.shared(CLOCK_KEY, lambda: clock)
        with pytest.raises(AuthError):
            library.copy(source, f"tar://{tmp_path / 'before.tar'}", session=session)
        assert login(run_cli, server).exit_code == 0
        clock.advance(REMEMBERED_FOR / 2)
        with pytest.raises(AuthError):  # within the while, the first answer stands
            library.copy(source, f"tar://{tmp_path / 'soon.tar'}", session=session)
        clock.advance(REMEMBERED_FOR / 2)
        library.copy(source, f"tar://{tmp_path / 'after.tar'}", session=session)
    assert (tmp_path / "after.tar").is_file()


def test_login_and_logout_of_a_host_leave_its_namespaces_logins(registry_basic, docker_config,
                                                                run_cli):
    """A HOST/NS key (podman login HOST/NS) is another login: login and logout of HOST
    replace and remove the HOST key alone, as podman's do."""
    docker_config.mkdir()
    path = docker_config / "config.json"
    team = {"auth": base64.b64encode(b"robot:team-secret").decode()}
    path.write_text(json.dumps({"auths": {f"{registry_basic.host}/team": team,
                                          f"https://{registry_basic.host}": {"auth": "eDp5"}}}))
    assert login(run_cli, registry_basic).exit_code == 0
    auths = json.loads(path.read_text())["auths"]
    assert set(auths) == {f"{registry_basic.host}/team", registry_basic.host}
    assert auths[f"{registry_basic.host}/team"] == team
    assert run_cli("logout", registry_basic.host).exit_code == 0
    assert json.loads(path.read_text())["auths"] == {f"{registry_basic.host}/team": team}


def test_login_and_logout_of_a_namespace_leave_the_hosts_login(registry_basic, docker_config,
                                                                run_cli, expect_error):
    """login and logout of HOST/NS (as podman's) write and remove the HOST/NS key alone:
    neither replaces nor removes the host's own login, another account."""
    docker_config.mkdir()
    path = docker_config / "config.json"
    host_login = {"auth": base64.b64encode(b"admin:host-secret").decode()}
    path.write_text(json.dumps({"auths": {registry_basic.host: host_login}}))
    result = run_cli("--ca-cert", registry_basic.ca_cert, "login", "-u", registry_basic.username,
                     "--password-stdin", f"{registry_basic.host}/Team/",
                     input=registry_basic.password + "\n")
    assert result.exit_code == 0, result.output
    auths = json.loads(path.read_text())["auths"]
    assert auths[registry_basic.host] == host_login
    team = base64.b64decode(auths[f"{registry_basic.host}/team"]["auth"]).decode()
    assert team == f"{registry_basic.username}:{registry_basic.password}"
    result = run_cli("logout", f"registry://{registry_basic.host}/team")
    assert result.exit_code == 0, result.output
    assert f"{registry_basic.host}/team" in result.output
    assert json.loads(path.read_text())["auths"] == {registry_basic.host: host_login}
    expect_error(run_cli("logout", f"{registry_basic.host}/team"), "not logged in",
                 f"{registry_basic.host}/team")
    assert json.loads(path.read_text())["auths"] == {registry_basic.host: host_login}


def test_logout_removes_the_entry_and_keeps_the_rest(registry_basic, docker_config, run_cli,
                                                     expect_error, tmp_path):
    assert login(run_cli, registry_basic).exit_code == 0
    path = docker_config / "config.json"
    config = json.loads(path.read_text())
    config["auths"]["other.example"] = {"auth": "b3RoZXI6eA=="}
    path.write_text(json.dumps(config))
    result = run_cli("logout", f"https://{registry_basic.host}")
    assert result.exit_code == 0, result.output
    assert json.loads(path.read_text())["auths"] == {"other.example": {"auth": "b3RoZXI6eA=="}}
    ok, _, pulled = pulls(run_cli, registry_basic, tmp_path)
    assert not ok and "occystrap login HOST" in pulled.stderr
    expect_error(run_cli("logout", registry_basic.host), "not logged in")


def test_a_symlinked_config_stays_a_symlink(registry_basic, docker_config, run_cli, tmp_path):
    """config.json linked from a dotfiles directory: login and logout write the file
    it points to (as docker's CLI does), never replace the link with a file."""
    dotfiles = tmp_path / "dotfiles" / "docker.json"
    dotfiles.parent.mkdir()
    dotfiles.write_text(json.dumps({"auths": {"other.example": {"auth": "b3RoZXI6eA=="}}}))
    docker_config.mkdir()
    link = docker_config / "config.json"
    link.symlink_to(dotfiles)
    assert login(run_cli, registry_basic).exit_code == 0
    assert link.is_symlink() and os.readlink(link) == str(dotfiles)
    assert set(json.loads(dotfiles.read_text())["auths"]) == {"other.example",
                                                             registry_basic.host}
    assert run_cli("logout", registry_basic.host).exit_code == 0
    assert link.is_symlink()
    assert set(json.loads(dotfiles.read_text())["auths"]) == {"other.example"}


def test_registry_auth_file_and_authfile_are_honoured(registry_basic, docker_config, run_cli,
                                                      tmp_path, monkeypatch):
    podman = tmp_path / "containers" / "auth.json"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(podman))
    assert login(run_cli, registry_basic).exit_code == 0
    assert registry_basic.host in json.loads(podman.read_text())["auths"]
    assert not (docker_config / "config.json").exists()
    chosen = tmp_path / "chosen.json"
    assert login(run_cli, registry_basic, None, "--authfile", str(chosen)).exit_code == 0
    assert registry_basic.host in json.loads(chosen.read_text())["auths"]


def test_a_run_reads_the_registry_auth_file_login_wrote_first(registry_basic, docker_config,
                                                              run_cli, skopeo, tmp_path,
                                                              monkeypatch):
    """With $REGISTRY_AUTH_FILE set, login stores there: a run must then use that
    login, not an older one of the same host in Docker's config.json (skopeo reads
    $REGISTRY_AUTH_FILE first too)."""
    docker_config.mkdir()
    stale = base64.b64encode(f"{registry_basic.username}:old-password".encode()).decode()
    (docker_config / "config.json").write_text(json.dumps(
        {"auths": {registry_basic.host: {"auth": stale}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "containers" / "auth.json"))
    assert login(run_cli, registry_basic).exit_code == 0
    ok, repo, pulled = pulls(run_cli, registry_basic, tmp_path)
    assert ok, pulled.output
    out = skopeo("inspect", f"--cert-dir={registry_basic.cert_dir}",
                 f"docker://{registry_basic.host}/{repo}:v1")  # the witness, same env
    assert json.loads(out)["Name"] == f"{registry_basic.host}/{repo}"


def test_login_needs_a_username_and_a_password_without_a_terminal(registry_basic,
                                                                  docker_config, run_cli,
                                                                  expect_error):
    expect_error(run_cli("--ca-cert", registry_basic.ca_cert, "login", registry_basic.host),
                 "give --username")
    expect_error(run_cli("--ca-cert", registry_basic.ca_cert, "login", "-u", "alice",
                         registry_basic.host), "--password-stdin")
    assert not (docker_config / "config.json").exists()


def test_login_reports_tls_mistakes_with_the_hint(registry_basic, docker_config, run_cli,
                                                  expect_error):
    result = run_cli("login", "-u", "alice", "--password-stdin", registry_basic.host,
                     input="alice-secret\n")
    expect_error(result, "--ca-cert FILE")
    result = run_cli("--tls-verify=false", "login", "-u", "alice", "--password-stdin",
                     registry_basic.host, input="alice-secret\n")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("text, expected", [
    ("reg.example:5000", ("reg.example:5000", False)),
    ("registry://Reg.Example/some/repo", ("reg.example", False)),
    ("https://reg.example", ("reg.example", False)),
    ("http://127.0.0.1:5000", ("127.0.0.1:5000", True)),
])
def test_host_forms(text, expected):
    assert parse_host(text) == expected


@pytest.mark.parametrize("text, scope", [
    ("reg.example:5000", ""), ("Reg.Example/Team/", "team"),
    ("registry://reg.example/a/b", "a/b"), ("https://index.docker.io/v1/", ""),
])
def test_login_scopes(text, scope):
    assert parse_scope(text) == scope


@pytest.mark.parametrize("text", ["reg.example/app:v1", "reg.example/a//b",
                                  "registry://reg.example/app@sha256:00"])
def test_bad_scopes(text):
    with pytest.raises(UsageError, match="no tag or digest"):
        parse_scope(text)


@pytest.mark.parametrize("text", ["ftp://reg.example", "", "user@reg.example", "a b"])
def test_bad_hosts(text):
    with pytest.raises(UsageError, match="expected HOST"):
        parse_host(text)


def test_login_without_the_registry_plugin_says_so(docker_config, run_cli, expect_error):
    result = run_cli("--disable-plugin", "occystrap-registry", "login", "-u", "a",
                     "--password-stdin", "reg.example", input="x\n")
    expect_error(result, "needs the occystrap-registry plugin")


def test_an_unreadable_auth_file_is_left_alone(registry_basic, docker_config, run_cli,
                                               expect_error):
    docker_config.mkdir()
    (docker_config / "config.json").write_text("{not json")
    expect_error(login(run_cli, registry_basic), "cannot read", "config.json")
    assert (docker_config / "config.json").read_text() == "{not json"
    (docker_config / "config.json").write_text('{"auths": []}')
    expect_error(login(run_cli, registry_basic), "auths is not a JSON object")
    expect_error(run_cli("logout", registry_basic.host), "not logged in")


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_login_debug_output_shows_no_secret(mode, request, docker_config, run_cli):
    server = request.getfixturevalue(f"registry_{mode}")
    result = run_cli("--debug", "--ca-cert", server.ca_cert, "login", "-u", server.username,
                     "--password-stdin", server.host, input=server.password + "\n")
    assert result.exit_code == 0, result.output
    assert "GET" in result.stderr  # the traffic was logged
    basic = base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
    assert server.password not in result.output and basic not in result.output


def test_a_namespace_login_is_refused_where_a_helper_keeps_the_hosts(tmp_path):
    """A credential helper is asked by host: a namespace's login there would be the
    host's, or a secret in the file the helper keeps them out of."""
    from occystrap_core import credstore

    path = tmp_path / "config.json"
    path.write_text('{"credsStore": "nosuchhelper"}')
    with pytest.raises(UsageError, match="one per host"):
        credstore.store("reg.example", "robot", "team-secret", str(path), "team")
    assert path.read_text() == '{"credsStore": "nosuchhelper"}'


def test_a_cred_helpers_that_is_not_a_mapping_is_one_error(docker_config, run_cli,
                                                           expect_error):
    """logout edits a file whose credHelpers is not a mapping: one Error line, the
    file left as it was."""
    docker_config.mkdir()
    path = docker_config / "config.json"
    path.write_text('{"credHelpers": ["reg.example"], "auths": {"reg.example": {}}}')
    expect_error(run_cli("logout", "reg.example"), "credHelpers", str(path))
    assert path.read_text() == '{"credHelpers": ["reg.example"], "auths": {"reg.example": {}}}'
