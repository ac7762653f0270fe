"""No secret is ever printed: passwords, Basic headers and bearer tokens, whatever their source.

Two real CNCF registries are started for this module, one with htpasswd (Basic) auth
and one with the real token server, each knowing one user per way of giving
credentials, with a distinctive password (every password starts with ``s3cret``, so
even a truncated one is caught). Every way is exercised against both (the identity
token only against the token registry): ``info``, ``check`` (text and ``-O json``),
``process`` (pull, push, registry to registry), ``process --dry-run``, each plain,
with ``--verbose`` and with ``--debug``; and failing runs: a wrong password, an
unreachable host, a reference without a repository, malformed references holding
the password.

After every run, neither stdout nor stderr may hold any of:

- any password (right or wrong), raw or percent-encoded, or the prefix ``s3cret``;
- ``base64("user:password")`` for every user and password (the Basic header value),
  with or without its padding;
- any token the token server issued, or any part of one (its payload and its
  signature separately), and any refresh token it issued;
- any Authorization header value the client actually sent.

How the tokens are captured, two ways that must agree:

1. issued: the module's ``TokenServer`` records every token and refresh token it
   hands out (``TokenServer.issued()``);
2. received: a transport layer of order 10 (below retries and rate limits, so it sees
   every attempt exactly as it goes on the wire, after the auth flow has set its
   headers) records each request's ``Authorization`` header; every ``Bearer`` value
   sent to the token registry must be one the token server issued.

Each run starts with the process-wide redaction registry emptied (``redact.forget()``),
as a fresh ``occystrap`` process would: a secret registered by an earlier run must
not hide a leak in a later one. Retries never sleep (``quick_clock``).

Messages must stay useful: a failure still names the host (and the user, for refused
credentials), a dry run still shows the host and repository, and ``--debug`` still
shows the registry's auth challenge with its realm.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pluggy
import pytest
from click.testing import Result

from occystrap_core.redact import forget as forget_secrets
from occystrap_core.testing import images
from occystrap_core.testing.faults import Fault
from occystrap_core.testing.registry import (
    RegistryServer,
    User,
    push_sample_image,
    start_registry,
)
from occystrap_core.types import TransportLayer

hookimpl = pluggy.HookimplMarker("occystrap")  # the same marker as occystrap_core.hookimpl

# ---- users: one per way of giving credentials ------------------------------------

WAYS = {
    # way id: (username, password)
    "flags": ("u-flags", "s3cret-FLAGS-4f9a"),
    "side-flags": ("u-side", "s3cret-SIDE-71b3"),
    "env": ("u-env", "s3cret-ENV-81c2"),
    "side-env": ("u-senv", "s3cret-SENV-0a7d"),
    "uri": ("u-uri", "s3cret-URI-93de"),
    "uri-encoded": ("u-enc", "s3cret/P@ss:w%rd?#-5e"),  # needs percent-encoding in a URI
    "query": ("u-query", "s3cret-QUERY-2b7e"),
    "config-auth": ("u-cfg", "s3cret-CFG-5a1c"),
    "config-plain": ("u-cfgp", "s3cret-CFGP-6d2f"),
    "config-helper": ("u-helper", "s3cret-HELPER-c04d"),
    "config-identity": ("u-ident", "s3cret-IDENT-8e3b"),
}
WRONG = "s3cret-WRONG-d00d"
BOGUS_REFRESH = "s3cret-BOGUSREFRESH-0e1f"
USERS = tuple(User(name, password, ("pull", "push", "delete")) for name, password in WAYS.values())
REPO = "secrets/app"
TAG = "v1"
HELPER_NAME = "occytest"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ---- the registries, and what their token server issued --------------------------


@dataclass
class Issued:
    """Every token and refresh token the token server handed out."""

    def __init__(self) -> None:
        self.servers: list[Any] = []

    def all(self) -> list[str]:
        return [token for server in self.servers for token in server.issued()]


@dataclass
class Lab:
    basic: RegistryServer
    token: RegistryServer
    issued: Issued
    archive: Path  # a docker-save archive to push
    refresh_token: str  # issued to u-ident, for the identitytoken way

    def server(self, mode: str) -> RegistryServer:
        return self.basic if mode == "basic" else self.token


def _record_issued(server: RegistryServer, issued: Issued) -> None:
    assert server.token_server is not None
    issued.servers.append(server.token_server)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("secrets")
    issued = Issued()
    basic = start_registry("basic", root / "basic", users=USERS)
    try:
        token = start_registry("token", root / "token", users=USERS)
    except BaseException:
        basic.stop()
        raise
    try:
        _record_issued(token, issued)
        for server in (basic, token):
            push_sample_image(server, REPO, TAG, creds=WAYS["flags"])
        archive = root / "push.tar"
        images.build_docker_archive(str(archive), "example.com/secrets/push", "v1")
        ts = token.token_server
        assert ts is not None
        user, password = WAYS["config-identity"]
        answer = httpx.get(ts.realm, params={"service": ts.service, "offline_token": "true",
                                             "scope": f"repository:{REPO}:pull"},
                           auth=(user, password), verify=token.ssl_context() or False)
        answer.raise_for_status()
        refresh = answer.json()["refresh_token"]
        yield Lab(basic, token, issued, archive, refresh)
    finally:
        token.stop()
        basic.stop()


# ---- what the client sent ----------------------------------------------------------


class HeaderTap:
    """A transport layer below retries: every attempt's Authorization header, as sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []  # (host, header value)
        self._lock = threading.Lock()

    def _wrap(self, inner: httpx.BaseTransport, host: str, ctx: Any) -> httpx.BaseTransport:
        tap = self

        class Tap(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                value = request.headers.get("authorization")
                if value:
                    with tap._lock:
                        tap.sent.append((request.url.netloc.decode(), value))
                return inner.handle_request(request)

            def close(self) -> None:
                inner.close()

        return Tap()

    @hookimpl
    def occystrap_transport_layers(self) -> list[TransportLayer]:
        return [TransportLayer(name="test-secrets-header-tap", order=10, wrap=self._wrap)]

    def values(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self.sent)


@pytest.fixture
def tap(register_plugin: Callable[..., Any]) -> HeaderTap:
    plugin = HeaderTap()
    register_plugin(plugin, name="occystrap-test-secrets-header-tap")
    return plugin


# ---- the runner: every run checked for every secret --------------------------------


def _needles(lab: Lab, tap: HeaderTap, first_token: int) -> dict[str, str]:
    """What must never be printed: {needle: what it is}. Tokens: those issued since the
    test began (a run cannot know older ones) and the module's refresh token."""
    needles: dict[str, str] = {"s3cret": "the prefix of every password"}
    passwords = [p for _, p in WAYS.values()] + [WRONG, BOGUS_REFRESH]
    usernames = [u for u, _ in WAYS.values()]
    for password in passwords:
        needles.setdefault(password, "a password")
        needles.setdefault(quote(password, safe=""), "a percent-encoded password")
        for username in usernames:
            encoded = _b64(f"{username}:{password}")
            needles.setdefault(encoded, f"Basic value of {username}:{password}")
            needles.setdefault(encoded.rstrip("="),
                               f"Basic value of {username}:{password} (unpadded)")
    for token in lab.issued.all()[first_token:] + [lab.refresh_token]:
        needles.setdefault(token, "a token the token server issued")
        for part in token.split(".")[1:]:  # payload and signature of a JWT
            if len(part) >= 16:
                needles.setdefault(part, "part of an issued token")
    for _, value in tap.values():
        scheme, _, credential = value.partition(" ")
        needles.setdefault(credential or value, f"an Authorization value sent ({scheme})")
    return needles


@dataclass
class Runner:
    lab: Lab
    tap: HeaderTap
    run_cli: Callable[..., Result]
    tmp: Path
    config: dict[str, Any] = field(default_factory=dict)
    helper_answers: dict[str, tuple[str, str]] = field(default_factory=dict)
    first_token: int = 0  # tokens issued before this test are not this test's runs'

    def write_config(self) -> None:
        (self.tmp / "docker" / "config.json").write_text(json.dumps(self.config))
        script = self.tmp / "bin" / f"docker-credential-{HELPER_NAME}"
        lines = ["#!/bin/sh", "read -r server || true", 'case "$server" in']
        for server, (user, secret) in self.helper_answers.items():
            answer = json.dumps({"ServerURL": server, "Username": user, "Secret": secret})
            lines.append(f"  {shlex.quote(server)}) printf '%s\\n' {shlex.quote(answer)} ;;")
        lines += ["  *) echo 'credentials not found in native keychain'; exit 1 ;;", "esac", ""]
        script.write_text("\n".join(lines))
        script.chmod(0o755)

    def run(self, *args: str, env: dict[str, str] | None = None, exit_code: int | None = 0,
            names: tuple[str, ...] = ()) -> Result:
        """Run the CLI as a fresh process would; check exit code (None: 0 or 1), secrets,
        usefulness (``names`` in the Error: line of a failure, else anywhere)."""
        self.write_config()
        forget_secrets()
        result = self.run_cli(*args, env=env)
        command = f"occystrap {' '.join(args)}" + (f"  (env {sorted(env)})" if env else "")
        problems = []
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problems.append(f"exception escaped: {result.exception!r}")
        if result.exit_code not in ((0, 1) if exit_code is None else (exit_code,)):
            problems.append(f"exit {result.exit_code}, expected {exit_code}")
        if "Traceback" in result.stderr or "Error: unexpected" in result.stderr:
            problems.append("traceback or unexpected error")
        for needle, what in _needles(self.lab, self.tap, self.first_token).items():
            for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
                if needle in text:
                    line = next(l for l in text.splitlines() if needle in l)
                    problems.append(f"{what} ({needle!r}) printed on {stream}: {line[:400]}")
        if result.exit_code:
            errors = [l for l in result.stderr.splitlines() if l.startswith("Error: ")]
            if len(errors) != 1:
                problems.append(f"expected one Error: line, got {len(errors)}")
            for name in names:
                if not any(name in l for l in errors):
                    problems.append(f"the Error: line does not name {name!r}")
        else:
            for name in names:
                if name not in result.stdout + result.stderr:
                    problems.append(f"the output does not name {name!r}")
        assert not problems, command + "\n" + "\n".join(problems) + \
            f"\n--- stdout:\n{result.stdout[-3000:]}\n--- stderr:\n{result.stderr[-6000:]}"
        return result


@pytest.fixture
def runner(lab: Lab, tap: HeaderTap, run_cli: Callable[..., Result], quick_clock: Any,
           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runner:
    (tmp_path / "docker").mkdir()
    (tmp_path / "bin").mkdir()
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_HOST", "QUAY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith("OCCYSTRAP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OCCYSTRAP_TEMP_DIR", str(tmp_path))
    return Runner(lab, tap, run_cli, tmp_path, first_token=len(lab.issued.all()))


# ---- ways of giving credentials ------------------------------------------------------


@dataclass
class Given:
    """One end's credentials: global args, environment, and the URI to use."""

    args: list[str]
    env: dict[str, str]
    uri: str


def give(runner: Runner, way: str, side: str, server: RegistryServer | str, repo: str = REPO,
         tag: str = TAG, password: str | None = None) -> Given:
    """Credentials of ``way``'s user for ``server`` on ``side`` (src or dest); ``password``
    overrides the user's (a wrong one)."""
    host = server if isinstance(server, str) else server.host
    user, right = WAYS[way]
    pw = right if password is None else password
    args: list[str] = []
    env: dict[str, str] = {}
    userinfo = query = ""
    if way == "flags":
        args = ["--username", user, "--password", pw]
    elif way == "side-flags":
        args = [f"--{side}-username", user, f"--{side}-password", pw]
    elif way == "env":
        env = {"OCCYSTRAP_USERNAME": user, "OCCYSTRAP_PASSWORD": pw}
    elif way == "side-env":
        env = {f"OCCYSTRAP_{side.upper()}_USERNAME": user, f"OCCYSTRAP_{side.upper()}_PASSWORD": pw}
    elif way == "uri":
        userinfo = f"{user}:{pw}@"
    elif way == "uri-encoded":
        userinfo = f"{quote(user, safe='')}:{quote(pw, safe='')}@"
    elif way == "query":
        query = f"?username={quote(user, safe='')}&password={quote(pw, safe='')}"
    elif way == "config-auth":
        runner.config.setdefault("auths", {})[host] = {"auth": _b64(f"{user}:{pw}")}
    elif way == "config-plain":
        runner.config.setdefault("auths", {})[host] = {"username": user, "password": pw}
    elif way == "config-helper":
        runner.config.setdefault("credHelpers", {})[host] = HELPER_NAME
        runner.helper_answers[host] = (user, pw)
    elif way == "config-identity":
        refresh = runner.lab.refresh_token if password is None else BOGUS_REFRESH
        runner.config.setdefault("auths", {})[host] = {"identitytoken": refresh}
    else:
        raise AssertionError(way)
    return Given(args, env, f"registry://{userinfo}{host}/{repo}:{tag}{query}")


def _ca(*servers: RegistryServer) -> list[str]:
    """--ca-cert for the servers (each has its own CA: one bundle holding them all)."""
    cas = sorted({s.ca_cert for s in servers if s.ca_cert})
    if len(cas) == 1:
        return ["--ca-cert", cas[0]]
    bundle = Path(cas[0]).parent.parent / "bundle.pem"
    bundle.write_text("".join(Path(c).read_text() for c in cas))
    return ["--ca-cert", str(bundle)]


MODES = {"plain": [], "verbose": ["--verbose"], "debug": ["--debug"]}
# Against the Basic registry every way ends in the same Basic header: these ways get every
# mode there, the others --debug only (the mode that logs headers).
BASIC_FULL = {"flags", "uri", "query", "config-helper"}


def _modes(way: str, mode: str) -> dict[str, list[str]]:
    return MODES if mode == "token" or way in BASIC_FULL else {"debug": MODES["debug"]}
PAIRS = [(way, mode) for way in WAYS for mode in ("basic", "token")
         if not (way == "config-identity" and mode == "basic")]


def _pair_id(pair: tuple[str, str]) -> str:
    return f"{pair[0]}-{pair[1]}"


# ---- successful runs -------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=[_pair_id(p) for p in PAIRS])
def test_successful_runs_print_no_secret(pair: tuple[str, str], runner: Runner) -> None:
    """Against the token registry every command in every mode; against the Basic one
    (the same header on every request) info, pull and push (see ``BASIC_FULL``)."""
    way, mode = pair
    server = runner.lab.server(mode)
    src = give(runner, way, "src", server)
    pushed = f"secrets/pushed-{uuid.uuid4().hex[:8]}"
    dest = give(runner, way, "dest", server, repo=pushed)
    ca = _ca(server)
    for level, flags in _modes(way, mode).items():
        base = [*ca, "--no-progress", *flags]
        runner.run(*base, *src.args, "info", src.uri, env=src.env)
        if mode == "token":
            runner.run(*base, *src.args, "check", src.uri, env=src.env)
        if mode == "token" and level != "verbose":
            runner.run(*base, *src.args, "info", "-O", "json", src.uri, env=src.env)
            runner.run(*base, *src.args, "check", "-O", "json", src.uri, env=src.env)
            runner.run(*base, *src.args, "process", "--dry-run", src.uri,
                       f"tar://{runner.tmp}/dry.tar", env=src.env,
                       names=(f"{server.host}/{REPO}:{TAG}",))
        if mode == "token" and level == "debug":
            runner.run(*base, *src.args, "search", src.uri, "*", env=src.env)
        runner.run(*base, *src.args, "process", src.uri, f"tar://{runner.tmp}/{level}.tar",
                   env=src.env)
        runner.run(*base, *dest.args, "process", f"tar://{runner.lab.archive}", dest.uri,
                   env=dest.env)
    sent = runner.tap.values()
    assert any(host == server.host for host, _ in sent), "no credentials reached the registry"
    if mode == "token":
        bearers = [v.partition(" ")[2] for host, v in sent
                   if host == server.host and v.startswith("Bearer ")]
        assert bearers, "the token registry received no bearer token"
        issued = set(runner.lab.issued.all())
        assert set(bearers) <= issued, "a bearer token the token server did not issue"


@pytest.mark.parametrize("way", ["side-flags", "side-env", "uri", "config-helper"])
def test_a_copy_between_registries_prints_no_secret(way: str, runner: Runner) -> None:
    """Both ends authenticated at once, each with its own credentials."""
    lab = runner.lab
    src = give(runner, way, "src", lab.basic)
    dest = give(runner, way, "dest", lab.token, repo=f"secrets/copy-{uuid.uuid4().hex[:8]}")
    for flags in MODES.values():
        runner.run(*_ca(lab.basic, lab.token), "--no-progress", *flags, *src.args, *dest.args,
                   "process", src.uri, dest.uri, env={**src.env, **dest.env})
        runner.run(*_ca(lab.basic, lab.token), "--no-progress", *flags, *src.args, *dest.args,
                   "process", "--dry-run", src.uri, dest.uri, env={**src.env, **dest.env},
                   names=(lab.basic.host, lab.token.host))


# ---- failing runs ----------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=[_pair_id(p) for p in PAIRS])
def test_a_wrong_password_prints_no_secret(pair: tuple[str, str], runner: Runner) -> None:
    way, mode = pair
    server = runner.lab.server(mode)
    src = give(runner, way, "src", server, password=WRONG)
    dest = give(runner, way, "dest", server, repo="secrets/never", password=WRONG)
    user = WAYS[way][0] if way != "config-identity" else server.host
    for level, flags in _modes(way, mode).items():
        base = [*_ca(server), "--no-progress", *flags]
        runner.run(*base, *src.args, "info", src.uri, env=src.env, exit_code=1,
                   names=(server.host, user))
        runner.run(*base, *dest.args, "process", f"tar://{runner.lab.archive}", dest.uri,
                   env=dest.env, exit_code=1, names=(server.host, user))
        if mode == "basic" or level != "debug":
            continue
        runner.run(*base, *src.args, "info", "-O", "json", src.uri, env=src.env,
                   exit_code=1, names=(server.host, user))
        runner.run(*base, *src.args, "check", "-O", "json", src.uri, env=src.env,
                   exit_code=1, names=(server.host, user))
        runner.run(*base, *src.args, "process", src.uri, f"tar://{runner.tmp}/out.tar",
                   env=src.env, exit_code=1, names=(server.host, user))
    assert not (runner.tmp / "out.tar").exists()


UNREACHABLE = "127.0.0.1:1"


@pytest.mark.parametrize("way", [w for w in WAYS if w != "config-identity"])
def test_an_unreachable_host_prints_no_secret(way: str, runner: Runner) -> None:
    src = give(runner, way, "src", UNREACHABLE)
    dest = give(runner, way, "dest", UNREACHABLE)
    for level, flags in MODES.items():
        base = ["--retries", "1", "--no-progress", *flags]
        runner.run(*base, *src.args, "info", src.uri, env=src.env, exit_code=1,
                   names=(UNREACHABLE,))
        runner.run(*base, *dest.args, "process", f"tar://{runner.lab.archive}", dest.uri,
                   env=dest.env, exit_code=1, names=(UNREACHABLE,))
        if level == "debug":
            runner.run(*base, *src.args, "check", "-O", "json", src.uri, env=src.env,
                       exit_code=1, names=(UNREACHABLE,))
            runner.run(*base, *src.args, "process", src.uri, f"tar://{runner.tmp}/out.tar",
                       env=src.env, exit_code=1, names=(UNREACHABLE,))


# Malformed URIs that hold a password: {id: (URI, what the Error: line must still name)}.
# The last few are not malformed to occystrap: a run fails only when it connects or
# opens the file, so a dry run may succeed.
PARSEABLE = {"unencoded-hash-in-password", "not-registry-scheme"}
PW = WAYS["uri"][1]
RAW = WAYS["uri-encoded"][1]  # s3cret/P@ss:w%rd?#-5e, given without percent-encoding
MALFORMED = {
    "no-repository": (f"registry://u-uri:{PW}@127.0.0.1:5000", "127.0.0.1:5000"),
    "no-repository-slash": (f"registry://u-uri:{PW}@127.0.0.1:5000/", "127.0.0.1:5000"),
    "uppercase-repository": (f"registry://u-uri:{PW}@127.0.0.1:5000/Upper/App:v1", "lowercase"),
    "bad-tag": (f"registry://u-uri:{PW}@127.0.0.1:5000/app:-bad", "-bad"),
    "bad-digest": (f"registry://u-uri:{PW}@127.0.0.1:5000/app@sha256:abc", "sha256:abc"),
    "port-99999": (f"registry://u-uri:{PW}@127.0.0.1:99999/app:v1", "99999"),
    "bad-host": (f"registry://u-uri:{PW}@bad_host!:5000/app:v1", "bad_host!"),
    "unknown-option": (f"registry://u-uri:{PW}@127.0.0.1:5000/app:v1?colour=red", "colour"),
    "query-password-bad-ref": (f"registry://127.0.0.1:5000/Upper:v1?username=u&password={PW}",
                               "lowercase"),
    "query-password-unknown-option": (
        f"registry://127.0.0.1:5000/app:v1?password={PW}&colour=red", "colour"),
    "unencoded-slash-in-password": ("registry://u-enc:s3cret/PASS-4f9a@127.0.0.1:5000/app:v1",
                                    "127.0.0.1:5000"),
    "unencoded-specials-in-password": (f"registry://u-enc:{RAW}@127.0.0.1:5000/app:v1",
                                       "127.0.0.1:5000"),
    "unencoded-hash-in-password": ("registry://u-enc:s3cret#HASH-1c9d@127.0.0.1:5000/app:v1",
                                   "127.0.0.1:5000"),
    "password-without-user": (f"registry://:{PW}@127.0.0.1:5000/Upper:v1", "lowercase"),
    "not-registry-scheme": (f"tar://u-uri:{PW}@127.0.0.1:5000/app.tar", "127.0.0.1:5000"),
    "unknown-scheme": (f"nosuch://u-uri:{PW}@127.0.0.1:5000/app:v1", "nosuch"),
}
EXTRA_NEEDLES = ("s3cret/PASS-4f9a", "PASS-4f9a", "s3cret#HASH-1c9d", "HASH-1c9d", "P@ss", "w%rd")


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_a_malformed_reference_holding_a_password_prints_no_secret(
        case: str, runner: Runner) -> None:
    uri, name = MALFORMED[case]
    for flags in MODES.values():
        for args in (("info", uri), ("info", "-O", "json", uri), ("check", uri),
                     ("process", uri, f"tar://{runner.tmp}/out.tar"),
                     ("process", "--dry-run", uri, f"tar://{runner.tmp}/out.tar"),
                     ("process", f"tar://{runner.lab.archive}", uri)):
            dry = "--dry-run" in args
            result = runner.run("--retries", "0", "--no-progress", *flags, *args,
                                exit_code=None if dry and case in PARSEABLE else 1,
                                names=(name,))
            for needle in EXTRA_NEEDLES:
                assert needle not in result.output, \
                    f"part of a password ({needle!r}) printed:\n{result.output}"


# Command lines click refuses before occystrap sees them, holding a password:
# {id: (args, what the Error: line must still say)}.
USAGE = {
    "extra-argument": (("info", "tar:///nonexistent.tar",
                        f"registry://u-uri:{PW}@127.0.0.1:5000/app:v1"), "extra argument"),
    "extra-process-argument": (("process", "tar:///nonexistent.tar", "tar:///tmp/x.tar",
                                f"registry://u-uri:{PW}@127.0.0.1:5000/app:v1"),
                               "extra argument"),
    "uri-as-command": ((f"registry://u-uri:{PW}@127.0.0.1:5000/app:v1",), "No such command"),
    "uri-as-command-with-options": (("--debug", "--retries", "0",
                                     f"registry://u-uri:{PW}@127.0.0.1:5000/app:v1",
                                     "tar:///tmp/x.tar"), "No such command"),
}


@pytest.mark.parametrize("case", list(USAGE), ids=list(USAGE))
def test_a_usage_error_holding_a_password_prints_no_secret(case: str, runner: Runner) -> None:
    """click's own usage errors (exit 2) quote the offending argument, which may be a URI
    with a password (``info SRC DEST``, or the command forgotten)."""
    args, name = USAGE[case]
    for flags in MODES.values():
        runner.run(*flags, *args, exit_code=2, names=(name,))


def test_a_broken_docker_config_prints_no_secret(runner: Runner) -> None:
    """A config.json that is not JSON, and an ``auth`` entry holding user:password in
    clear instead of base64 (a common mistake): warnings must not quote them."""
    lab = runner.lab
    user, password = WAYS["config-auth"]
    uri = f"registry://{lab.basic.host}/{REPO}:{TAG}"
    config = runner.tmp / "docker" / "config.json"
    for flags in MODES.values():
        runner.config = {"auths": {lab.basic.host: {"auth": f"{user}:{password}"}}}
        runner.run(*_ca(lab.basic), "--no-progress", *flags, "info", uri, exit_code=1,
                   names=(lab.basic.host,))
        runner.write_config()
        broken = config.read_text().replace('"auths"', "auths")  # no longer JSON
        runner.config = {}
        config.write_text(broken)
        forget_secrets()
        result = runner.run_cli(*_ca(lab.basic), "--no-progress", *flags, "info", uri)
        assert result.exit_code == 1, result.output
        assert password not in result.output and "s3cret" not in result.output, result.output
        assert "config.json" in result.stderr, result.stderr  # the warning names the file


def test_a_failing_credential_helper_prints_no_secret(runner: Runner) -> None:
    """A helper that fails is named in a warning; the run then goes on anonymously and
    is refused, naming the host."""
    lab = runner.lab
    runner.config = {"credHelpers": {lab.basic.host: "broken"}}
    script = runner.tmp / "bin" / "docker-credential-broken"
    script.write_text("#!/bin/sh\ncat >/dev/null\necho 'the keychain is locked' >&2\nexit 3\n")
    script.chmod(0o755)
    for flags in MODES.values():
        result = runner.run(*_ca(lab.basic), "--no-progress", *flags, "info",
                            f"registry://{lab.basic.host}/{REPO}:{TAG}", exit_code=1,
                            names=(lab.basic.host,))
        assert "docker-credential-broken" in result.stderr, result.stderr


# ---- presigned redirects -----------------------------------------------------------------

SIGNATURE = "s3cretSIG-Ab9%2Bq%3D"
# How blob storage signs the URLs registries redirect blob GETs to: {id: query}.
PRESIGNED = {
    "docker-hub": f"verify=1700000000-{SIGNATURE}",
    "s3": f"X-Amz-Credential=AKIA%2F1&X-Amz-Signature={SIGNATURE}",
    "azure": f"se=2026-11-28&sp=r&sig={SIGNATURE}",
    "akamai": f"__token__=exp=1700000000~hmac={SIGNATURE}",
    "backblaze": f"Authorization={SIGNATURE}",
}


@pytest.mark.parametrize("style", list(PRESIGNED), ids=list(PRESIGNED))
def test_a_presigned_redirect_prints_no_signature(
        style: str, fault_front_factory: Callable[..., Any], registry_plain: RegistryServer,
        run_cli: Callable[..., Result], tmp_path: Path) -> None:
    """Blob GETs answered 307 to storage with a signed query, as Docker Hub, S3, Azure,
    Akamai and B2 do: --debug logs the redirects and the requests that follow them,
    never the signature (a pass to the blob until it expires)."""
    repo = f"secrets/presigned-{uuid.uuid4().hex[:8]}"
    push_sample_image(registry_plain, repo, TAG)
    front = fault_front_factory(registry_plain, tls=True)
    storage = fault_front_factory(registry_plain, tls=True, host_name="localhost")
    front.add(Fault("redirect", method="GET", path="/blobs/sha256:",
                    location=f"{storage.url}?{PRESIGNED[style]}", times=-1))
    ca = tmp_path / "both.pem"
    ca.write_text(Path(str(front.ca_cert)).read_text() + Path(str(storage.ca_cert)).read_text())
    result = run_cli("--ca-cert", str(ca), "--no-progress", "--debug", "process",
                     f"registry://{front.host}/{repo}:{TAG}", f"tar://{tmp_path}/out.tar")
    assert result.exit_code == 0, result.output[-3000:]
    assert any(SIGNATURE in h.query for h in storage.log)  # the redirects were followed
    assert "localhost" in result.stderr and "REDACTED" in result.stderr
    leaks = [line for line in result.output.splitlines() if "s3cretSIG" in line]
    assert not leaks, "\n".join(leaks[:3])


def test_a_registry_token_goes_to_the_registry_as_is_and_prints_no_secret(
        runner: Runner) -> None:
    """Docker's ``registrytoken`` (an auth file entry's bearer token for the registry
    itself): sent as it is, the token server never asked; refused, it is not printed."""
    lab = runner.lab
    ts = lab.token.token_server
    assert ts is not None
    answer = httpx.get(ts.realm, params={"service": ts.service,
                                         "scope": f"repository:{REPO}:pull"},
                       auth=WAYS["flags"], verify=lab.token.ssl_context() or False)
    answer.raise_for_status()
    token = answer.json()["token"]
    host = lab.token.host
    uri = f"registry://{host}/{REPO}:{TAG}"
    runner.config = {"auths": {host: {"registrytoken": token}}}
    asked = len(ts.requests)
    for flags in MODES.values():
        base = [*_ca(lab.token), "--no-progress", *flags]
        runner.run(*base, "info", uri)
        runner.run(*base, "process", uri, f"tar://{runner.tmp}/regtoken.tar")
    assert len(ts.requests) == asked, "the token server was asked despite the registry token"
    sent = {v for h, v in runner.tap.values() if h == host}
    assert sent == {f"Bearer {token}"}
    runner.config = {"auths": {host: {"registrytoken": BOGUS_REFRESH}}}
    runner.run(*_ca(lab.token), "--no-progress", "--debug", "info", uri, exit_code=1,
               names=(host, "registry token"))


# ---- messages stay useful ---------------------------------------------------------------


def test_debug_output_keeps_the_auth_challenge_readable(runner: Runner) -> None:
    """Redaction removes credentials, not the realm of a WWW-Authenticate challenge."""
    lab = runner.lab
    assert lab.token.token_server is not None
    for server, realm in ((lab.token, f'realm="{lab.token.token_server.realm}"'),
                          (lab.basic, 'realm="occystrap-test"')):
        src = give(runner, "flags", "src", server)
        result = runner.run(*_ca(server), "--no-progress", "--debug", *src.args, "info", src.uri)
        challenges = [l for l in result.stderr.splitlines() if "www-authenticate" in l.lower()]
        assert challenges, f"--debug logged no auth challenge:\n{result.stderr[-3000:]}"
        assert all(realm in l for l in challenges), \
            f"the challenge lost its realm ({realm}):\n" + "\n".join(challenges)
        assert "REDACTED" in result.stderr  # the Authorization headers were logged, redacted


def test_the_checks_here_would_see_a_leak(runner: Runner) -> None:
    """The needles are real: a run that prints the password is caught."""
    with pytest.raises(AssertionError, match="a password"):
        runner.run("info", f"tar://{runner.tmp}/{WRONG}.tar", exit_code=1)
