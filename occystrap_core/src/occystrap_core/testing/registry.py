"""Run the real CNCF distribution registry (``docker-registry``) on 127.0.0.1 for tests.

Needs the ``docker-registry`` binary (Debian package ``docker-registry``) and, for
``skopeo_args``/``push_sample_image``, ``skopeo``. Opt in from a ``conftest.py`` with
``pytest_plugins = ["occystrap_core.testing.registry"]``.

Modes (``MODES``):

============ ======= =============================================================
mode         scheme  auth
============ ======= =============================================================
``plain``    http    none
``tls``      https   none
``basic``    https   htpasswd Basic (bcrypt); every user may pull, push and delete
``token``    https   Bearer tokens from a ``TokenServer`` (HTTPS, same CA); each
                     user gets only its own ``User.actions``; anonymous gets none
============ ======= =============================================================

HTTPS servers (and the token realm) use a certificate for ``127.0.0.1`` and
``localhost`` from a throwaway CA: pass ``server.ca_cert`` (PEM file) to clients, or
``server.cert_dir`` (a directory holding ``ca.crt``) to containers tools. HTTP/2 is
offered over TLS. Default users (``DEFAULT_USERS``): ``alice`` / ``alice-secret``
(pull, push, delete, ``*`` for the catalog) and ``reader`` / ``reader-secret`` (pull
only); ``server.username``/``server.password`` are the first user's.

Standalone use (scripts, benchmarks)::

    server = start_registry("token", Path(tmpdir))
    try:
        ...  # server.host == "127.0.0.1:PORT", server.url == "https://127.0.0.1:PORT"
    finally:
        server.stop()

pytest fixtures (all session-scoped, so registries are shared: use unique repository
names per test, and ``token_server.reset()`` before counting token requests):

- ``registry_plain``, ``registry_tls``, ``registry_basic``, ``registry_token``:
  a ``RegistryServer`` per mode.
- ``registry``: parametrized over all four modes (ids ``plain``/``tls``/``basic``/``token``).

Helpers:

- ``skopeo_args(server, side=None, creds=True)``: the TLS and credential flags of a
  skopeo subcommand (``side="src"``/``"dest"`` for ``copy``, ``None`` for ``inspect``,
  ``list-tags``, ``delete``). ``creds``: True = the server's default user, False =
  anonymous, or a ``(username, password)`` pair.
- ``push_sample_image(server, repo, tag="latest", layers=..., creds=True)``: write a
  tiny OCI image and ``skopeo copy`` it to ``HOST/REPO:TAG``; returns its digests.
- ``remove_image(server, repo, tag)``: delete the tag's manifest and every blob it
  names from the repository of a registry without authentication (``plain``, ``tls``),
  as a clean-up and a garbage collection leave it; returns the blobs' digests.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import bcrypt
import httpx
import pytest
import trustme

from . import images
from .tokenserver import TokenServer, User

__all__ = [
    "DEFAULT_USERS",
    "MODES",
    "Mode",
    "RegistryServer",
    "PushedImage",
    "TokenServer",
    "User",
    "push_sample_image",
    "serve_registry",
    "skopeo_args",
    "start_registry",
]

Mode = Literal["plain", "tls", "basic", "token"]
MODES: tuple[Mode, ...] = ("plain", "tls", "basic", "token")
DEFAULT_USERS: tuple[User, ...] = (
    User("alice", "alice-secret", ("pull", "push", "delete", "*")),
    User("reader", "reader-secret", ("pull",)),
)
REGISTRY_BINARY = "docker-registry"
BASIC_REALM = "occystrap-test"


@dataclass
class RegistryServer:
    """A running registry. ``host`` is ``127.0.0.1:PORT``, as used in image references."""

    mode: Mode
    host: str
    scheme: Literal["http", "https"]
    ca_cert: str | None  # PEM file of the CA that signed the server (and token realm) certificate
    cert_dir: str | None  # directory holding that CA as ca.crt, for skopeo --cert-dir
    username: str | None  # default credentials; None when the mode has no auth
    password: str | None
    users: tuple[User, ...]
    token_server: TokenServer | None
    root: Path  # config, certificates, log and storage live here
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def log(self) -> str:
        """What the registry wrote to stdout and stderr so far."""
        return (self.root / "registry.log").read_text(errors="replace")

    def requests(self) -> list[str]:
        """``METHOD /path`` of every request so far (needs ``access_log=True``)."""
        return re.findall(r'"([A-Z]+ /[^ "]*) HTTP/[0-9.]+"', self.log)

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting ``ca_cert`` (None for plain HTTP)."""
        return ssl.create_default_context(cafile=self.ca_cert) if self.ca_cert else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.token_server is not None:
            self.token_server.stop()


class _PortTaken(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_htpasswd(path: Path, users: Sequence[User]) -> None:
    # distribution accepts only bcrypt; "$2y$" is the Apache spelling of the same algorithm.
    lines = []
    for user in users:
        hashed = bcrypt.hashpw(user.password.encode(), bcrypt.gensalt(rounds=5)).decode()
        lines.append(f"{user.name}:$2y${hashed.removeprefix('$2b$')}\n")
    path.write_text("".join(lines))


def _wait_ready(
    process: subprocess.Popen[bytes],
    url: str,
    ctx: ssl.SSLContext | None,
    log: Path,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(verify=ctx or False, timeout=2, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = log.read_text(errors="replace")
                if "address already in use" in output:
                    raise _PortTaken
                raise RuntimeError(f"docker-registry exited with {process.returncode}:\n{output}")
            try:
                if client.get(f"{url}/v2/").status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(
        f"docker-registry not ready at {url} after {timeout}s:\n{log.read_text(errors='replace')}"
    )


def start_registry(
    mode: Mode,
    workdir: Path,
    *,
    users: Sequence[User] = DEFAULT_USERS,
    tls: bool | None = None,
    access_log: bool = False,
    deletes: bool = True,
    startup_timeout: float = 15.0,
) -> RegistryServer:
    """Start ``docker-registry`` in ``mode`` with everything under ``workdir``; call
    ``stop()`` after.

    ``tls`` overrides the mode's default (HTTP for ``plain``, HTTPS for the others).
    ``access_log`` writes one line per request to the log (see ``RegistryServer.requests``).
    ``deletes=False`` leaves out ``storage.delete.enabled``: every DELETE answers 405.
    """
    if mode not in MODES:
        raise ValueError(f"unknown registry mode {mode!r}, expected one of {MODES}")
    use_tls = mode != "plain" if tls is None else tls
    workdir.mkdir(parents=True, exist_ok=True)
    users = tuple(users)

    http: dict[str, object] = {"secret": secrets.token_hex(16)}  # no "debug" key: no debug server
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": not access_log}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "delete": {"enabled": deletes},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http,
        "health": {"storagedriver": {"enabled": False}},
    }
    ca_cert = cert_dir = None
    server_ctx = None
    if use_tls:
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        ca_path = workdir / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        (workdir / "certs").mkdir(exist_ok=True)
        ca.cert_pem.write_to_path(str(workdir / "certs" / "ca.crt"))
        leaf.private_key_pem.write_to_path(str(workdir / "server.key"))
        (workdir / "server.crt").write_bytes(
            b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        )
        http["tls"] = {
            "certificate": str(workdir / "server.crt"),
            "key": str(workdir / "server.key"),
        }
        ca_cert, cert_dir = str(ca_path), str(workdir / "certs")
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(server_ctx)

    token_server = None
    if mode == "basic":
        _write_htpasswd(workdir / "htpasswd", users)
        config["auth"] = {"htpasswd": {"realm": BASIC_REALM, "path": str(workdir / "htpasswd")}}
    elif mode == "token":
        token_server = TokenServer(users=users, ssl_context=server_ctx)
        token_server.start()
        (workdir / "token-root.pem").write_bytes(token_server.signing_cert_pem)
        config["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": token_server.service,
                "issuer": token_server.issuer,
                "rootcertbundle": str(workdir / "token-root.pem"),
            }
        }

    # The registry reads REGISTRY_* variables as config overrides; keep the caller's out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    client_ctx = ssl.create_default_context(cafile=ca_cert) if ca_cert else None
    log = workdir / "registry.log"
    try:
        for _attempt in range(3):  # another process may grab the port between probe and bind
            port = _free_port()
            http["addr"] = f"127.0.0.1:{port}"
            config_path = workdir / "config.yml"
            config_path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
            with log.open("wb") as log_file:
                process = subprocess.Popen(
                    [REGISTRY_BINARY, "serve", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            scheme: Literal["http", "https"] = "https" if use_tls else "http"
            try:
                _wait_ready(
                    process, f"{scheme}://127.0.0.1:{port}", client_ctx, log, startup_timeout
                )
            except _PortTaken:
                continue
            break
        else:
            raise RuntimeError(
                f"docker-registry could not bind a free port:\n{log.read_text(errors='replace')}"
            )
    except BaseException:
        if token_server is not None:
            token_server.stop()
        raise

    default = users[0] if mode in ("basic", "token") and users else None
    return RegistryServer(
        mode=mode,
        host=f"127.0.0.1:{port}",
        scheme=scheme,
        ca_cert=ca_cert,
        cert_dir=cert_dir,
        username=default.name if default else None,
        password=default.password if default else None,
        users=users,
        token_server=token_server,
        root=workdir,
        process=process,
    )


def skopeo_args(
    server: RegistryServer,
    side: Literal["src", "dest"] | None = None,
    creds: bool | tuple[str, str] = True,
) -> list[str]:
    """TLS and credential flags for a skopeo subcommand talking to ``server``.

    ``side`` prefixes the flags for ``skopeo copy`` (``--src-*``/``--dest-*``); leave it
    None for single-image subcommands. ``creds``: True = the server's default user (none
    if the mode has no auth), False = anonymous, or an explicit ``(username, password)``.
    """
    prefix = f"--{side}-" if side else "--"
    if server.cert_dir:
        args = [f"{prefix}cert-dir={server.cert_dir}"]
    else:
        args = [f"{prefix}tls-verify=false"]  # lets skopeo fall back to plain HTTP
    if creds is True and server.username is not None:
        creds = (server.username, server.password or "")
    if isinstance(creds, tuple):
        args.append(f"{prefix}creds={creds[0]}:{creds[1]}")
    else:
        args.append(f"{prefix}no-creds")
    return args


DEFAULT_LAYERS: tuple[Mapping[str, bytes], ...] = (
    {"etc/hello.txt": b"hello from occystrap tests\n"},
    {"usr/share/doc/readme": b"second layer\n"},
)


@dataclass(frozen=True)
class PushedImage:
    """Digests of an image ``push_sample_image`` pushed (all ``sha256:...``)."""

    manifest_digest: str
    config_digest: str
    layer_digests: tuple[str, ...]  # compressed blobs, as in the manifest
    diff_ids: tuple[str, ...]  # uncompressed layer tars, as in the config
    manifest: bytes


def push_sample_image(
    server: RegistryServer,
    repo: str,
    tag: str = "latest",
    *,
    layers: Sequence[Mapping[str, bytes]] = DEFAULT_LAYERS,
    creds: bool | tuple[str, str] = True,
) -> PushedImage:
    """Push a tiny OCI image (built in Python, not by occystrap) with ``skopeo copy``.

    The manifest is pushed byte for byte, so the returned digests are the registry's.
    Raises ``RuntimeError`` with skopeo's stderr if the copy fails.
    """
    image = images.sample_image(tag=tag, layers=layers)
    files, index = images.oci_blobs([image], [tag])
    manifest_digest = json.loads(index)["manifests"][0]["digest"]
    manifest = files["blobs/sha256/" + manifest_digest.split(":", 1)[1]]
    with tempfile.TemporaryDirectory(prefix="occystrap-sample-") as tmp:
        images.write_oci_layout(tmp, [image], [tag])
        for _ in range(3):
            result = subprocess.run(
                ["skopeo", "--insecure-policy", "copy", "--preserve-digests"]
                + skopeo_args(server, "dest", creds)
                + [f"oci:{tmp}:{tag}", f"docker://{server.host}/{repo}:{tag}"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            # distribution's filesystem driver can answer 500 to pushes of shared blobs
            # racing on a loaded machine: seeding tries again, tests never do
            if result.returncode == 0 or "(Internal Server Error)" not in result.stderr:
                break
    if result.returncode != 0:
        raise RuntimeError(f"skopeo copy to {server.host}/{repo}:{tag} failed:\n{result.stderr}")
    return PushedImage(
        manifest_digest=manifest_digest,
        config_digest=image.config_digest,
        layer_digests=tuple(l["digest"] for l in json.loads(manifest)["layers"]),
        diff_ids=tuple(image.diff_ids),
        manifest=manifest,
    )


def remove_image(server: RegistryServer, repo: str, tag: str) -> list[str]:
    """Delete ``tag``'s manifest and every blob it names from ``repo`` (see the module's
    help); each step is checked, and the blobs are gone afterwards."""
    base = f"{server.url}/v2/{repo}"
    with httpx.Client(verify=server.ssl_context() or True) as http:
        got = http.get(f"{base}/manifests/{tag}", headers={"Accept": ",".join((
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json"))})
        assert got.status_code == 200, got.text
        manifest = got.json()
        blobs = [d["digest"] for d in (manifest["config"], *manifest["layers"])]
        deleted = http.delete(f"{base}/manifests/{got.headers['Docker-Content-Digest']}")
        assert deleted.status_code == 202, deleted.text
        for digest in blobs:
            assert http.delete(f"{base}/blobs/{digest}").status_code == 202
            assert http.head(f"{base}/blobs/{digest}").status_code == 404
    return blobs


def serve_registry(mode: Mode, tmp_path_factory: pytest.TempPathFactory, *,
                   access_log: bool = False, deletes: bool = True
                   ) -> Iterator[RegistryServer]:
    """For a fixture of its own (``yield from serve_registry(...)``): a registry in
    ``mode`` for the fixture's scope, stopped after it."""
    server = start_registry(mode, tmp_path_factory.mktemp(f"registry-{mode}"),
                            access_log=access_log, deletes=deletes)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    yield from serve_registry("plain", tmp_path_factory)


@pytest.fixture(scope="session")
def registry_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    yield from serve_registry("tls", tmp_path_factory)


@pytest.fixture(scope="session")
def registry_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    yield from serve_registry("basic", tmp_path_factory)


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    yield from serve_registry("token", tmp_path_factory)


@pytest.fixture(scope="session", params=MODES)
def registry(request: pytest.FixtureRequest) -> RegistryServer:
    """Each of the four session registries in turn."""
    return request.getfixturevalue(f"registry_{request.param}")
