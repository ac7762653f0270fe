"""registry://HOST/REPO_GLOB:TAG_GLOB: listing the catalog and tags of the real registry."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from occystrap_core.testing.registry import (
    RegistryServer,
    push_sample_image,
    serve_registry,
)


@pytest.fixture(scope="module")
def logged_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A plain registry logging every request, to see the pages asked for."""
    yield from serve_registry("plain", tmp_path_factory, access_log=True)


def _seed(server: RegistryServer, prefix: str) -> None:
    for repo, tags in (("app", ("v1", "v2", "v3", "dev")), ("lib", ("v1",)),
                       ("other", ("v1",))):
        for tag in tags:
            push_sample_image(server, f"{prefix}/{repo}", tag)


def _sources(result: Any) -> list[str]:
    return [e["source"] for e in json.loads(result.stdout)]


def test_globs_list_catalog_and_tags_page_by_page(logged_plain: RegistryServer,
                                                   occy: Callable[..., Any]) -> None:
    server = logged_plain
    prefix = f"list-{uuid.uuid4().hex[:8]}"
    _seed(server, prefix)
    before = len(server.requests())
    result = occy(server, "info", "-O", "json",
                  f"registry://{server.host}/{prefix}/[al]*:v*?page_size=2")
    host = server.host
    assert _sources(result) == [f"registry://{host}/{prefix}/app:{t}?insecure=true"
                                for t in ("v1", "v2", "v3")] \
        + [f"registry://{host}/{prefix}/lib:v1?insecure=true"]
    served = server.requests()[before:]
    catalog = [r for r in served if r.startswith("GET /v2/_catalog")]
    app_tags = [r for r in served if r.startswith(f"GET /v2/{prefix}/app/tags/list")]
    assert catalog[0] == "GET /v2/_catalog?n=2" and len(catalog) >= 2  # followed Link
    # distribution 2.8 answers every tag at once (no Link); n= is still asked for
    assert app_tags[0] == f"GET /v2/{prefix}/app/tags/list?n=2", app_tags
    assert not any(f"/v2/{prefix}/other/tags" in r for r in served)  # not matched: not listed


def test_process_dry_run_fills_the_template(registry_plain: RegistryServer,
                                           occy: Callable[..., Any]) -> None:
    server = registry_plain
    prefix = f"tmpl-{uuid.uuid4().hex[:8]}"
    push_sample_image(server, f"{prefix}/app", "v1")
    push_sample_image(server, f"{prefix}/app", "v2")
    result = occy(server, "process", "--dry-run", f"registry://{server.host}/{prefix}/app:*",
                  f"registry://{server.host}/mirror/{{repo}}:{{tag}}")
    assert result.stdout.splitlines() == [
        f"registry://{server.host}/{prefix}/app:{t}?insecure=true -> "
        f"registry://{server.host}/mirror/{prefix}/app:{t}" for t in ("v1", "v2")]


def test_token_mode_lists_and_copies(registry_token: RegistryServer,
                                     occy: Callable[..., Any], tmp_path: Path) -> None:
    server = registry_token
    prefix = f"tok-{uuid.uuid4().hex[:8]}"
    push_sample_image(server, f"{prefix}/app", "v1")
    push_sample_image(server, f"{prefix}/app", "v2")
    occy(server, "process", f"registry://{server.host}/{prefix}/*:*",
         f"registry://{server.host}/copy-{prefix}/{{name}}:{{tag}}")
    result = occy(server, "info", "-O", "json",
                  f"registry://{server.host}/copy-{prefix}/app:*")
    assert [e["source"] for e in json.loads(result.stdout)] == [
        f"registry://{server.host}/copy-{prefix}/app:{t}" for t in ("v1", "v2")]


def test_catalog_refused_is_one_error_line(registry_token: RegistryServer,
                                           occy: Callable[..., Any],
                                           expect_error: Callable[..., None]) -> None:
    server = registry_token
    result = occy(server, "info", f"registry://{server.host}/*:*", ok=False,
                  creds=("reader", "reader-secret"))
    expect_error(result, "registry:catalog:*", "refused")


def test_tag_pages_follow_link_headers(mock_http: Callable[..., Any],
                                       run_cli: Callable[..., Any]) -> None:
    """distribution 2.8 sends every tag at once; newer registries page them with Link,
    which is followed (relative or absolute) until a page has none."""
    pages = {
        "/v2/team/app/tags/list?n=2": (["v1", "v2"], '</v2/team/app/tags/list?n=2&last=v2>; '
                                                     'rel="next"'),
        "/v2/team/app/tags/list?n=2&last=v2": (
            ["v3", "v4"], '<https://reg.example/v2/team/app/tags/list?n=2&last=v4>; rel="next"'),
        "/v2/team/app/tags/list?n=2&last=v4": (["v5"], None),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        tags, link = pages[request.url.raw_path.decode()]
        return httpx.Response(200, json={"name": "team/app", "tags": tags},
                              headers={"Link": link} if link else {})

    mock = mock_http(handler)
    result = run_cli("process", "--dry-run", "registry://reg.example/team/app:v*?page_size=2",
                     "registry://reg.example/copy/{repo}:{tag}")
    assert result.exit_code == 0, result.output
    assert [line.rsplit(":", 1)[1] for line in result.stdout.splitlines()] == \
        ["v1", "v2", "v3", "v4", "v5"]
    assert len(mock.requests) == 3


def test_a_link_back_to_a_page_read_is_an_error(mock_http: Callable[..., Any],
                                                run_cli: Callable[..., Any]) -> None:
    """A registry that ignores ``last`` links to its first page again: the list is
    incomplete, and saying so keeps ``sync --prune`` from deleting what it lacks (v3,
    which the mirror has and the source's second page would have listed)."""
    digest = "sha256:" + "ab" * 32

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v2/team/app/tags/list":
            return httpx.Response(200, json={"name": "team/app", "tags": ["v1", "v2"]},
                                  headers={"Link": '</v2/team/app/tags/list?n=2&last=v2>; '
                                                   'rel="next"'})
        if path == "/v2/copy/team/app/tags/list":
            return httpx.Response(200, json={"name": "copy/team/app",
                                             "tags": ["v1", "v2", "v3"]})
        assert request.method == "HEAD" and "/manifests/" in path, request
        return httpx.Response(200, headers={"Docker-Content-Digest": digest})

    mock_http(handler)
    result = run_cli("sync", "--dry-run", "--prune",
                     "registry://reg.example/team/app:v*?page_size=2",
                     "registry://reg.example/copy/{repo}:{tag}")
    assert "delete " not in result.stdout, result.stdout
    assert result.exit_code == 1, result.output
    assert "points back to a page already read" in result.stderr, result.stderr


def test_an_answer_without_a_tag_list_is_no_list(mock_http: Callable[..., Any],
                                                 run_cli: Callable[..., Any]) -> None:
    """``{"name": ...}`` without ``tags`` (a proxy's or a broken registry's answer) is
    an error, not an empty list: ``sync --prune`` would delete the mirror's tags."""
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/team/app/tags/list":
            return httpx.Response(200, json={"name": "team/app"})
        assert request.url.path == "/v2/copy/team/app/tags/list", request
        return httpx.Response(200, json={"name": "copy/team/app", "tags": ["v1"]})

    mock_http(handler)
    result = run_cli("sync", "--dry-run", "--prune", "registry://reg.example/team/app",
                     "registry://reg.example/copy/{repo}:{tag}")
    assert "delete " not in result.stdout, result.stdout
    assert result.exit_code == 1 and "no 'tags' list" in result.stderr, result.output


def test_docker_hub_official_images_are_listed_under_library(
        mock_http: Callable[..., Any], run_cli: Callable[..., Any]) -> None:
    """``docker.io/busybox`` is ``library/busybox`` in Docker Hub's API, for a tag list
    as for a pull; the {repo} of a template stays what the user wrote."""
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/library/busybox/tags/list":
            return httpx.Response(200, json={"name": "library/busybox",
                                             "tags": ["1.36", "1.37", "latest"]})
        return httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN"}]})

    mock = mock_http(handler)
    result = run_cli("tags", "registry://docker.io/busybox")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["1.36", "1.37", "latest"]
    result = run_cli("process", "--dry-run", "registry://docker.io/busybox:1.*",
                     "registry://mirror.example/hub/{repo}:{tag}")
    assert result.exit_code == 0, result.output
    assert [line.split(" -> ")[1] for line in result.stdout.splitlines()] == \
        ["registry://mirror.example/hub/busybox:1.36", "registry://mirror.example/hub/busybox:1.37"]
    assert {r.url.host for r in mock.requests} == {"registry-1.docker.io"}
