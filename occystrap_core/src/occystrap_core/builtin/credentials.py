"""The core's credential sources, consulted after any plugin's (``trylast``).

In order, the first that knows the host wins:

1. the command line or environment: ``--src-username/--src-password`` for a
   source, ``--dest-*`` for a destination, then ``--username/--password``;
2. ``$REGISTRY_AUTH_FILE`` when set (where ``login`` then writes, read first by
   skopeo and podman too), then Docker's ``$DOCKER_CONFIG/config.json`` (default
   ``~/.docker/config.json``):
   ``credHelpers[host]``, then ``credsStore`` (``docker-credential-NAME get``),
   then ``auths`` (``auth`` or ``username``/``password``, ``identitytoken``, or
   ``registrytoken``: a bearer token sent to the registry as it is, as Docker does);
   a key naming a namespace or repository (``HOST/NS``, as ``podman login HOST/NS``
   writes it) applies to the repositories under it, the most specific key first;
3. ``$XDG_RUNTIME_DIR/containers/auth.json`` and ``~/.config/containers/auth.json``
   (same format).

Credentials in the URI itself are used by the registry plugin before any of these.
Answers are cached per (host, role, repository), and a helper's per host, for five
minutes of the run, so a helper runs once per host in a short run, and a long one
(the proxy's, for days) sees a ``docker login`` made since, or a helper's new token
(ECR's expire after 12 hours).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from .. import hookimpl
from ..errors import NOT_JSON
from ..transport.clock import get_clock
from ..types import Credentials

if TYPE_CHECKING:
    from ..context import Context, Settings

log = logging.getLogger("occystrap.credentials")

CACHE_KEY = "occystrap.credentials"
HELPERS_KEY = "occystrap.credentials.helpers"
DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io",
                        "registry.hub.docker.com"})
DOCKER_HUB_URL = "https://index.docker.io/v1/"  # the key Docker stores Hub logins under
HELPER_TIMEOUT = 60
REMEMBERED_FOR = 300.0  # seconds an answer is used before the sources are asked again


def from_settings(settings: Settings, role: str) -> Credentials | None:
    side = "src" if role == "input" else "dest"
    for prefix, source in ((f"{side}_", f"--{side}-username"), ("", "--username")):
        username = getattr(settings, f"{prefix}username")
        if username:
            return Credentials(username=username, password=getattr(settings, f"{prefix}password"),
                               source=source)
    return None


def _server_key(host: str) -> str:
    """The host part of a config key: ``https://host/v1/`` -> ``host``."""
    return host.split("://", 1)[-1].split("/", 1)[0].lower()


def same_host(key: str, host: str) -> bool:
    key, host = _server_key(key), host.lower()
    return key == host or (key in DOCKER_HUB and host in DOCKER_HUB)


def key_scope(key: str) -> str:
    """The namespace or repository an auth file key is limited to, "" for the whole
    host: ``host/ns`` -> ``ns``. A URL key (``https://host/v1/``) names a host only."""
    return "" if "://" in key else key.partition("/")[2].strip("/")


def applying_keys(keys: Iterable[str], host: str, repository: str | None) -> list[str]:
    """The keys of ``host`` that apply to ``repository``, the most specific first (as
    containers-auth.json(5) reads them); for no repository, the host's own first."""
    scoped = [(key, key_scope(key)) for key in keys if same_host(key, host)]
    if repository is None:
        return [key for key, _ in sorted(scoped, key=lambda pair: len(pair[1]))]
    applying = [(key, scope) for key, scope in scoped
                if not scope or repository == scope or repository.startswith(scope + "/")]
    return [key for key, _ in sorted(applying, key=lambda pair: -len(pair[1]))]


def _helper(name: str, server: str, source: str) -> Credentials | None:
    """Ask ``docker-credential-NAME get`` for ``server``'s credentials."""
    import subprocess  # here: most runs ask no helper

    program = f"docker-credential-{name}"
    try:
        done = subprocess.run([program, "get"], input=server, capture_output=True, text=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("credential helper %s failed for %s: %s", program, server, e)
        return None
    if done.returncode != 0:
        if "not found" not in (done.stdout + done.stderr).lower():
            # stderr only, and one line: stdout is where a helper writes secrets
            reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
            log.warning("credential helper %s failed for %s: %s", program, server,
                        reason[:200])
        return None
    try:
        answer = json.loads(done.stdout)
        username, secret = answer.get("Username"), answer["Secret"]
    except (*NOT_JSON, KeyError, AttributeError):
        log.warning("credential helper %s gave an unreadable answer for %s", program, server)
        return None
    label = f"{source} via {program}"
    if username == "<token>":  # Docker's marker for an identity (refresh) token
        return Credentials(token=secret, source=label)
    return Credentials(username=username, password=secret, source=label)


def _from_entry(entry: Any, source: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    username, password = entry.get("username"), entry.get("password")
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, TypeError):
            log.warning("%s: unreadable auth entry, ignored", source)
            return None
    registry_token = entry.get("registrytoken") or None
    if registry_token:  # Docker sends it to the registry as it is, whatever else is there
        return Credentials(username=username or None, registry_token=registry_token,
                           source=source)
    token = entry.get("identitytoken") or None
    if not (username or token):
        return None  # a placeholder left by `docker login` with a credsStore
    return Credentials(username=username or None, password=password, token=token, source=source)


Helper = Callable[[str, str, str], "Credentials | None"]


def from_config_file(path: Path, host: str, repository: str | None = None,
                     helper: Helper = _helper) -> Credentials | None:
    """Credentials for ``host`` (its ``repository``) from one Docker or containers auth
    file; ``helper`` asks a credential helper (``name, server, source``)."""
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, *NOT_JSON) as e:
        log.warning("ignoring %s: %s", path, e)
        return None
    if not isinstance(config, dict):
        return None
    source = str(path)
    server = DOCKER_HUB_URL if host.lower() in DOCKER_HUB else host
    helpers = config.get("credHelpers") or {}
    if not isinstance(helpers, dict):
        log.warning("%s: credHelpers is not a JSON object, ignored", source)
        helpers = {}
    for key, name in helpers.items():
        if same_host(key, host):
            return helper(name, server, source)
    if config.get("credsStore"):
        found = helper(config["credsStore"], server, source)
        if found:
            return found
    auths = config.get("auths")
    if not isinstance(auths, dict):
        return None
    for key in applying_keys(auths, host, repository):
        found = _from_entry(auths[key], source)
        if found:
            return found
    return None


def config_files() -> Iterator[Path]:
    """Every auth file, in the order they are consulted: ``$REGISTRY_AUTH_FILE``, a
    choice made (``login`` writes there), as skopeo and podman do; then Docker's."""
    if os.environ.get("REGISTRY_AUTH_FILE"):
        yield Path(os.environ["REGISTRY_AUTH_FILE"])
    docker = os.environ.get("DOCKER_CONFIG")
    yield Path(docker) / "config.json" if docker else Path.home() / ".docker" / "config.json"
    if os.environ.get("XDG_RUNTIME_DIR"):
        yield Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"
    yield Path.home() / ".config" / "containers" / "auth.json"


def lookup(host: str, role: str, settings: Settings, repository: str | None = None,
           helper: Helper = _helper) -> Credentials | None:
    found = from_settings(settings, role)
    for path in () if found else config_files():
        found = from_config_file(path, host, repository, helper)
        if found:
            break
    return found


@hookimpl(trylast=True)  # repository has no default: pluggy passes only those without one
def occystrap_credentials(host: str, role: str, ctx: Context,
                          repository: str | None) -> Credentials | None:
    cache: dict[tuple[str, str, str | None], tuple[float, Credentials | None]] = \
        ctx.shared(CACHE_KEY, dict)
    key = (host.lower(), role, repository)
    now = get_clock(ctx).monotonic()
    known = cache.get(key)
    if known is not None and now - known[0] < REMEMBERED_FOR:
        return known[1]
    # A helper's answer is for the host: asked once for all its repositories.
    asked: dict[tuple[str, str, str], tuple[float, Credentials | None]] = \
        ctx.shared(HELPERS_KEY, dict)

    def helper(name: str, server: str, source: str) -> Credentials | None:
        known = asked.get((name, server, source))
        if known is not None and now - known[0] < REMEMBERED_FOR:
            return known[1]
        answer = _helper(name, server, source)
        asked[name, server, source] = (now, answer)
        return answer

    # two threads may both look; either answer will do
    found = lookup(host, role, ctx.settings, repository, helper)
    cache[key] = (now, found)
    if found:
        log.debug("credentials for %s (%s) from %s", host, role, found.source)
    return found
