"""Storing and erasing registry credentials where Docker and podman read them.

The writing side of :mod:`.builtin.credentials`, for ``occystrap login`` and
``logout``. The file is ``--authfile``, else ``$REGISTRY_AUTH_FILE`` (podman's), else
``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``. When that file names
a credential helper for the host (``credHelpers[host]``, else ``credsStore``), the
secret goes to ``docker-credential-NAME store`` and never into the file; otherwise
``auths[host].auth`` holds base64 ``user:password``, as ``docker login`` writes it.
A namespace's login (``HOST/NS``, as podman's) is ``auths["host/ns"]``, apart from the
host's; a helper, asked by host alone, cannot hold one.
The file is rewritten atomically, mode 0600, every other key kept as it was.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from .builtin.credentials import DOCKER_HUB, DOCKER_HUB_URL, HELPER_TIMEOUT, key_scope, same_host
from .errors import NOT_JSON, OccystrapError, UsageError
from .tempfiles import destination, write_atomic


def auth_file(authfile: str | None = None) -> Path:
    """The file ``login`` writes and ``logout`` edits (see module doc)."""
    if authfile:
        return Path(authfile)
    if os.environ.get("REGISTRY_AUTH_FILE"):
        return Path(os.environ["REGISTRY_AUTH_FILE"])
    docker = os.environ.get("DOCKER_CONFIG")
    return Path(docker) / "config.json" if docker else Path.home() / ".docker" / "config.json"


def server_key(host: str) -> str:
    """The key a host is stored under: Docker Hub's is its historical v1 URL."""
    return DOCKER_HUB_URL if host.lower() in DOCKER_HUB else host.lower()


def _load(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, *NOT_JSON) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    if not isinstance(config, dict):
        raise UsageError(f"cannot read {path}: not a JSON object")
    return config


def _save(path: Path, config: dict[str, Any]) -> None:
    # write_atomic writes a symlinked file (dotfiles) where it points, as docker's CLI
    # does: that file's directory is the one that must exist
    path = Path(destination(str(path)))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(str(path), (json.dumps(config, indent="\t") + "\n").encode(), mode=0o600)


def _helper(config: dict[str, Any], host: str, path: Path) -> str | None:
    helpers = config.get("credHelpers") or {}
    if not isinstance(helpers, dict):  # which helper holds the secret is unknown: refuse
        raise UsageError(f"cannot update {path}: its credHelpers is not a JSON object")
    for key, name in helpers.items():
        if same_host(key, host):
            return str(name)
    store = config.get("credsStore")
    return str(store) if store else None


def _run_helper(name: str, action: str, stdin: str) -> subprocess.CompletedProcess[str]:
    program = f"docker-credential-{name}"
    try:
        return subprocess.run([program, action], input=stdin, capture_output=True, text=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise OccystrapError(f"credential helper {program} {action} failed: {e}") from None


def _helper_failed(name: str, action: str, done: subprocess.CompletedProcess[str]) -> str:
    # its first line only: a helper has no business echoing a secret, but a long answer
    # is noise on the one error line
    said = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return (f"credential helper docker-credential-{name} {action} failed: "
            f"{said[0][:200] if said else f'exit {done.returncode}'}")


def _plain_entries(config: dict[str, Any], host: str, scope: str = "") -> list[str]:
    """The keys of ``host``'s login for ``scope`` ("" the host's own), whatever their
    spelling; another namespace's (``host/ns``, from ``podman login host/ns``), or the
    host's, is another login, left alone."""
    auths = config.get("auths")
    return [key for key in auths if same_host(key, host) and key_scope(key) == scope] \
        if isinstance(auths, dict) else []


def store(host: str, username: str, password: str, authfile: str | None = None,
          scope: str = "") -> str:
    """Store the credentials for ``host`` (its namespace ``scope``, when given, as
    ``podman login HOST/NS`` does); returns where they went, for the user."""
    path = auth_file(authfile)
    config = _load(path)
    server = f"{host.lower()}/{scope}" if scope else server_key(host)
    helper = _helper(config, host, path)
    if helper and scope:  # as podman: a helper is asked by host, never by namespace
        raise UsageError(f"{path} keeps {host}'s logins in docker-credential-{helper}, "
                         f"one per host: log in to {host}, not {host}/{scope}")
    if helper:
        secret = json.dumps({"ServerURL": server, "Username": username, "Secret": password})
        done = _run_helper(helper, "store", secret)
        if done.returncode != 0:
            raise OccystrapError(_helper_failed(helper, "store", done))
        stale = [key for key in _plain_entries(config, host)
                 if set(config["auths"][key]) & {"auth", "password", "identitytoken",
                                                     "registrytoken"}]
        if stale:  # an older plain-text login of this host: no secret stays in the file
            for key in stale:
                del config["auths"][key]
            _save(path, config)
        return f"docker-credential-{helper}"
    if ":" in username:  # read back, base64(USER:PASSWORD) splits at the first ':'
        raise UsageError(f"cannot store a user name with a ':' ({username!r}) in {path}: "
                         f"it would be read back as {username.split(':', 1)[0]!r}")
    auths = config.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise UsageError(f"cannot update {path}: its auths is not a JSON object")
    for key in _plain_entries(config, host, scope):
        del auths[key]  # one entry per login, whichever spelling an older one used
    auths[server] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    _save(path, config)
    return str(path)


def erase(host: str, authfile: str | None = None, scope: str = "") -> bool:
    """Remove ``host``'s credentials (its namespace ``scope``'s alone, when given) from
    the helper and the file; False if there were none."""
    path = auth_file(authfile)
    config = _load(path)
    found = False
    helper = None if scope else _helper(config, host, path)
    if helper:
        done = _run_helper(helper, "erase", server_key(host))
        if done.returncode == 0:
            found = True
        elif "not found" not in (done.stdout + done.stderr).lower():
            raise OccystrapError(_helper_failed(helper, "erase", done))
    entries = _plain_entries(config, host, scope)
    if entries:
        for key in entries:
            del config["auths"][key]
        _save(path, config)
    return found or bool(entries)
