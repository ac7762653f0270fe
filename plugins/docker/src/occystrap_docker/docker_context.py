"""The daemon endpoint of the docker CLI's current context (``docker context use``).

As the docker CLI: ``DOCKER_CONTEXT`` names the context, else ``currentContext`` in
``$DOCKER_CONFIG/config.json`` (default ``~/.docker``); ``default`` means the default
socket. A context's endpoint is ``Endpoints.docker.Host`` in
``contexts/meta/<sha256 of its name>/meta.json``. Rootless Docker and Docker Desktop
set a context rather than ``DOCKER_HOST``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from occystrap_core.errors import OccystrapError

DEFAULT_CONTEXT = "default"


def _config_dir() -> Path:
    configured = os.environ.get("DOCKER_CONFIG")
    return Path(configured) if configured else Path.home() / ".docker"


def _read_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def current_context() -> tuple[str, str] | None:
    """(name, endpoint host) of the current context; None for ``default`` or none."""
    config_dir = _config_dir()
    name = os.environ.get("DOCKER_CONTEXT")
    if not name:
        config = _read_json(config_dir / "config.json")
        name = config.get("currentContext") if isinstance(config, dict) else None
    if not isinstance(name, str) or not name or name == DEFAULT_CONTEXT:
        return None
    meta_path = (config_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
                 / "meta.json")
    meta = _read_json(meta_path)
    endpoints = meta.get("Endpoints") if isinstance(meta, dict) else None
    docker = endpoints.get("docker") if isinstance(endpoints, dict) else None
    host = docker.get("Host") if isinstance(docker, dict) else None
    if not isinstance(host, str) or not host:
        raise OccystrapError(f"docker context {name!r} (the current one) has no daemon "
                             f"endpoint in {meta_path}")
    return name, host
