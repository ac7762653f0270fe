"""A warm sync through a TLS front on the real registry: two HEADs per unchanged tag,
multiplexed on one HTTP/2 connection per registry, or over pooled HTTP/1.1 connections
with ``OCCYSTRAP_HTTP2=0``; and ``-J`` still bounds the copies while more images are
checked at once."""

from __future__ import annotations

import json
import tempfile
import threading
import uuid
from collections import Counter
from typing import Any, Callable

import pytest

from occystrap_core import library
from occystrap_core.sync import command, config
from occystrap_core.sync import run as sync_run
from occystrap_core.testing.faults import FaultFront
from occystrap_core.testing.images import sample_image, write_oci_layout
from occystrap_core.testing.registry import RegistryServer
from occystrap_core.transport.base import OVERLAP

REPOS = ("svc-a", "svc-b")
TAGS = ("v1", "v2", "v3", "v4", "v5", "v6")


def _seed(server: RegistryServer, prefix: str) -> None:
    images, refs = [], []
    for repo in REPOS:
        for tag in TAGS:
            images.append(sample_image(name=None, tag=None, layers=[
                {"base": "shared\n"}, {f"app/{repo}": f"{repo}:{tag}\n"}]))
            refs.append(f"{repo}:{tag}")
    with tempfile.TemporaryDirectory() as layout:
        write_oci_layout(layout, images, [f"r{i}" for i in range(len(refs))])
        with library.session(insecure=True, verify=False) as session:
            for i, ref in enumerate(refs):
                library.copy(f"oci-layout://{layout}?ref=r{i}",
                             f"registry://{server.host}/{prefix}/{ref}", session=session)


@pytest.fixture
def front_and_corpus(registry_plain: RegistryServer,
                     fault_front_factory: Callable[..., FaultFront]) -> tuple[FaultFront, str]:
    prefix = f"lat{uuid.uuid4().hex[:6]}"
    _seed(registry_plain, prefix)
    return fault_front_factory(registry_plain, tls=True), prefix


def _sync(run_cli: Callable[..., Any], front: FaultFront, prefix: str, *args: str,
          env: dict[str, str] | None = None) -> dict[str, Any]:
    assert front.ca_cert
    result = run_cli("--ca-cert", front.ca_cert, "sync", "-O", "json", *args,
                     f"registry://{front.host}/{prefix}/svc-*:*",
                     f"registry://{front.host}/mirror/{{repo}}:{{tag}}", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("http2", [True, False], ids=["http2", "http1.1"])
def test_a_warm_sync_asks_two_heads_per_tag_multiplexed_over_http2(
        run_cli: Callable[..., Any], front_and_corpus: tuple[FaultFront, str],
        http2: bool) -> None:
    front, prefix = front_and_corpus
    env = None if http2 else {"OCCYSTRAP_HTTP2": "0"}
    cold = _sync(run_cli, front, prefix, env=env)
    assert cold["counts"] == {"copied": len(REPOS) * len(TAGS)}, cold["counts"]
    front.clear()

    warm = _sync(run_cli, front, prefix, env=env)
    assert warm["counts"] == {"skipped": len(REPOS) * len(TAGS)}, warm["counts"]
    hits = front.log
    heads = Counter(h.path.split("/")[2] for h in hits if h.method == "HEAD")
    # one HEAD of the source tag, one of the destination tag: nothing else per tag
    assert heads == {prefix: len(REPOS) * len(TAGS), "mirror": len(REPOS) * len(TAGS)}
    listing = [h for h in hits if h.method != "HEAD"]
    assert all(h.method == "GET" and h.path.endswith(("/_catalog", "/tags/list"))
               for h in listing), listing
    assert len(listing) == 1 + len(REPOS)  # the catalog, then each repository's tags
    if http2:
        # the catalog goes alone, over HTTP/1.1 (as do requests before OVERLAP of them
        # are in flight at once, on fewer connections than that); from then on every
        # request shares one HTTP/2 connection
        on = {v: {h.connection for h in hits if h.http_version == v}
              for v in ("HTTP/1.1", "HTTP/2")}
        assert hits[0].http_version == "HTTP/1.1" and len(on["HTTP/1.1"]) < OVERLAP
        assert len(on["HTTP/2"]) == 1 and hits[-1].http_version == "HTTP/2"
        multiplexed = [h for h in hits if h.method == "HEAD" and h.http_version == "HTTP/2"]
        assert len(multiplexed) > sum(heads.values()) // 2
    else:
        assert {h.http_version for h in hits} == {"HTTP/1.1"}


def test_more_images_are_checked_than_copied_at_once(
        run_cli: Callable[..., Any], front_and_corpus: tuple[FaultFront, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """-J 2: the images are checked 8 at once, and never more than 2 copy at once."""
    front, prefix = front_and_corpus
    copying, most, widths = 0, 0, []
    lock = threading.Lock()
    real_copy, real_parallel = library.copy, sync_run.parallel

    def copy(*args: Any, **kwargs: Any) -> Any:
        nonlocal copying, most
        with lock:
            copying += 1
            most = max(most, copying)
        try:
            return real_copy(*args, **kwargs)
        finally:
            with lock:
                copying -= 1

    def parallel(work: Any, items: Any, workers: int, *args: Any, **kwargs: Any) -> Any:
        widths.append((kwargs.get("name"), workers))
        return real_parallel(work, items, workers, *args, **kwargs)

    monkeypatch.setattr(library, "copy", copy)
    monkeypatch.setattr(sync_run, "parallel", parallel)
    report = _sync(run_cli, front, prefix, "-J", "2")
    assert report["counts"] == {"copied": len(REPOS) * len(TAGS)}, report["counts"]
    assert widths == [("sync", sync_run.LOOKUPS_PER_COPY * 2)]
    assert 1 <= most <= 2


def test_the_pool_holds_a_connection_per_check_at_each_end() -> None:
    """32 images in their checks, each with a source and a destination connection: a pool
    of 20 shared by the hosts would close HTTP/1.1 connections to one to open the other's."""
    cfg = config.SyncConfig((config.SourceSpec(line=0, pattern="registry://a/b:*",
                                               destinations=("registry://c/{repo}:{tag}",)),))
    with library.session() as ctx:
        ctx.settings.image_parallel = 8
        command._prepare(ctx, cfg)
        assert ctx.settings.max_connections == 2 * sync_run.LOOKUPS_PER_COPY * 8
        ctx.settings.image_parallel, ctx.settings.max_connections = 1, 20
        command._prepare(ctx, cfg)
        assert ctx.settings.max_connections == 20  # never fewer than the default
