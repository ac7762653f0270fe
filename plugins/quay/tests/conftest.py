"""A fake Quay API on 127.0.0.1, backed by the real registry holding the images.

The fake serves the two endpoints occystrap uses, with Quay's pagination (an opaque
``next_page`` cursor for repositories, ``page``/``has_additional`` for tags), Bearer
token checks and Quay-style error bodies. Images live in a real ``docker-registry``
(plain HTTP, access log on) seeded with ``push_sample_image``.
"""

from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from occystrap_core.testing.registry import (
    PushedImage,
    RegistryServer,
    push_sample_image,
    start_registry,
)

NAMESPACE = "acme"
REPOS = [f"app-{i:02d}" for i in range(10)]
TAGS = ("1.0", "2.0")
GHOST = "app-ghost"  # listed by the API, absent from the registry


def day(n: int) -> int:
    """Unix time of 2024-01-(n+1), midnight UTC."""
    return int(datetime(2024, 1, 1 + n, tzinfo=UTC).timestamp())


OLD = int(datetime(2023, 12, 1, tzinfo=UTC).timestamp())


@dataclass
class FakeQuay:
    """Namespaces -> repositories -> ``{"last_modified": int|None, "tags": [tag dicts]}``."""

    namespaces: dict[str, dict[str, dict[str, Any]]]
    repo_page_size: int = 3
    tag_page_size: int = 1
    token: str | None = None  # when set, every request must carry "Bearer <token>"
    fail_next: int = 0  # answer this many requests with 503 first
    forbidden: set[str] = field(default_factory=set)  # repositories whose tags answer 403
    requests: list[tuple[str, dict[str, list[str]], str | None]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, body = fake.answer(self.path, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def reset(self) -> None:
        self.token, self.fail_next = None, 0
        self.forbidden.clear()
        self.requests.clear()

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.requests]

    def answer(self, raw_path: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        url = urlsplit(raw_path)
        query = parse_qs(url.query)
        with self._lock:
            self.requests.append((url.path, query, authorization))
            if self.fail_next:
                self.fail_next -= 1
                return 503, {"error_message": "try again"}
        if self.token is not None and authorization != f"Bearer {self.token}":
            return 401, {"error": "invalid_token", "error_message": "Invalid bearer token",
                         "title": "invalid_token", "status": 401}
        parts = url.path.rstrip("/").split("/")
        # /api/v1/repository  and  /api/v1/repository/NS/REPO/tag/
        if url.path == "/api/v1/repository":
            return self.repositories(query)
        if len(parts) == 7 and parts[:4] == ["", "api", "v1", "repository"] and \
                parts[6] == "tag":
            if parts[5] in self.forbidden:  # a private repository the token may not read
                return 403, {"error": "unauthorized", "error_message": "Unauthorized",
                             "title": "unauthorized", "status": 403}
            return self.tags(parts[4], parts[5], query)
        return 404, {"error_message": "Not Found"}

    def repositories(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        namespace = query.get("namespace", [""])[0]
        if namespace not in self.namespaces:
            return 404, {"detail": "Not Found", "error_message": "Not Found", "status": 404}
        repos = sorted(self.namespaces[namespace].items())
        start = int(base64.b64decode(query["next_page"][0])) if "next_page" in query else 0
        page = repos[start:start + self.repo_page_size]
        body: dict[str, Any] = {"repositories": [
            {"namespace": namespace, "name": name, "description": None, "is_public": True,
             "kind": "image", "state": "NORMAL", "is_starred": False,
             "last_modified": repo["last_modified"]} for name, repo in page]}
        if start + self.repo_page_size < len(repos):
            body["next_page"] = base64.b64encode(str(start + self.repo_page_size).encode()).decode()
        return 200, body

    def tags(self, namespace: str, repo: str,
             query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        entry = self.namespaces.get(namespace, {}).get(repo)
        if entry is None:
            return 404, {"detail": "Not Found", "error_message": "Not Found", "status": 404}
        tags = entry["tags"]
        if "specificTag" in query:
            tags = [t for t in tags if t["name"] == query["specificTag"][0]]
        page = int(query.get("page", ["1"])[0])
        limit = min(int(query.get("limit", ["50"])[0]), self.tag_page_size)
        chunk = tags[(page - 1) * limit:page * limit]
        return 200, {"tags": chunk, "page": page, "has_additional": page * limit < len(tags)}


@dataclass
class Seeded:
    registry: RegistryServer
    images: dict[tuple[str, str], PushedImage]  # (repo, tag) -> what was pushed

    def requests_since(self, mark: int) -> list[str]:
        return self.registry.requests()[mark:]


def _layers(repo: str, tag: str) -> list[dict[str, bytes]]:
    # A base layer shared by every image, one shared by a repository's tags, one unique.
    return [{"etc/base.txt": b"shared base layer\n"},
            {"app/name": repo.encode() + b"\n"},
            {"app/tag": f"{repo}:{tag}\n".encode()}]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A plain-HTTP registry (access log on) holding acme/app-00..09 at tags 1.0 and 2.0."""
    server = start_registry("plain", Path(tmp_path_factory.mktemp("quay-registry")),
                            access_log=True)
    try:
        wanted = [(repo, tag) for repo in REPOS for tag in TAGS]
        with ThreadPoolExecutor(max_workers=8) as pool:
            pushed = pool.map(lambda rt: push_sample_image(
                server, f"{NAMESPACE}/{rt[0]}", rt[1], layers=_layers(*rt)), wanted)
            images = dict(zip(wanted, pushed, strict=True))
        yield Seeded(server, images)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def quay_api(seeded: Seeded) -> Iterator[FakeQuay]:
    repos: dict[str, dict[str, Any]] = {}
    for i, repo in enumerate(REPOS):
        repos[repo] = {"last_modified": day(i), "tags": [
            {"name": "1.0", "start_ts": OLD, "reversion": False,
             "manifest_digest": seeded.images[(repo, "1.0")].manifest_digest},
            {"name": "2.0", "start_ts": day(i), "reversion": False,
             "manifest_digest": seeded.images[(repo, "2.0")].manifest_digest}]}
    repos[GHOST] = {"last_modified": None,
                    "tags": [{"name": "1.0", "start_ts": OLD, "reversion": False}]}
    fake = FakeQuay({NAMESPACE: repos, "empty": {}})
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def quay(quay_api: FakeQuay) -> Iterator[FakeQuay]:
    """The module's fake Quay, with token, failures and request log reset per test."""
    quay_api.reset()
    yield quay_api
    quay_api.reset()
