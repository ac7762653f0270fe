"""Images of one run sharing blobs and manifests in one repository.

CNCF distribution's filesystem storage rewrites a link file in place each time a blob
is linked into a repository or a manifest is pushed: a push of one image's tags at
once used to fail, now and then, with DIGEST_INVALID (each tag uploaded the shared
config again while another tag's manifest push was reading its link)."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs

import httpx

from occystrap_core import mediatypes as mt
from occystrap_core.testing.faults import Fault, FaultFront, Hit
from occystrap_core.testing.registry import RegistryServer, push_sample_image


def _places(hit: Hit, repo: str, digest: str) -> bool:
    """Does ``hit`` upload or mount ``digest`` into ``repo``?"""
    query = parse_qs(hit.query)
    return (hit.path.startswith(f"/v2/{repo}/blobs/uploads/") and hit.status == 201
            and digest in query.get("digest", []) + query.get("mount", []))


def test_tags_of_one_image_copied_at_once(registry_plain: RegistryServer,
                                          run_cli: Callable[..., Any],
                                          repo_name: Callable[[str], str]) -> None:
    server = registry_plain
    src, dst = repo_name("shared/src"), repo_name("shared/dst")
    tags = ["v1", "v2", "v3", "v4"]
    image = [push_sample_image(server, src, tag) for tag in tags][0]
    with FaultFront(server.url) as front:
        # uploads and manifest pushes are held up, so that the four images overlap
        front.add(Fault("stall", method="PUT", path="/blobs/uploads/", seconds=0.5, times=-1),
                  Fault("stall", method="PUT", path="/manifests/", seconds=0.3, times=-1))
        result = run_cli("--insecure", "process", "-J", "4", f"registry://{front.host}/{src}:*",
                         f"registry://{front.host}/{dst}:{{tag}}")
        assert result.exit_code == 0, result.output
        log = front.log
    # the config all four share is placed in the repository once
    assert sum(_places(hit, dst, image.config_digest) for hit in log) == 1, log
    # pushes of the one manifest, and its reads by digest (--verify), one at a time
    touching = sorted(
        (hit for hit in log if hit.path.startswith(f"/v2/{dst}/manifests/") and (
            hit.method == "PUT" or hit.path.endswith(image.manifest_digest))
         and hit.method != "HEAD"), key=lambda hit: hit.arrived)
    assert [hit.method for hit in touching].count("PUT") == 4, touching
    for before, after in itertools.pairwise(touching):
        assert before.answered is not None and before.answered <= after.arrived, touching
    for tag in tags:
        response = httpx.head(f"{server.url}/v2/{dst}/manifests/{tag}",
                              headers={"Accept": mt.OCI_MANIFEST})
        assert response.headers["Docker-Content-Digest"] == image.manifest_digest


def test_tags_of_one_image_adopted_from_the_layer_cache_at_once(
        registry_plain: RegistryServer, run_cli: Callable[..., Any],
        repo_name: Callable[[str], str], tmp_path: Path) -> None:
    """A warm filtered copy pushes what the cache remembers once its blobs are here:
    four tags of one image mount each blob into the new repository once."""
    server = registry_plain
    src, warm = repo_name("shared/src"), repo_name("shared/warm")
    for tag in ("v1", "v2", "v3", "v4"):
        push_sample_image(server, src, tag)
    with FaultFront(server.url) as front:
        def copy(dst: str) -> str:
            result = run_cli("--insecure", "--layer-cache", str(tmp_path / "cache"), "process",
                             "-J", "4", "-f", "normalize-timestamps",
                             f"registry://{front.host}/{src}:*",
                             f"registry://{front.host}/{dst}:{{tag}}")
            assert result.exit_code == 0, result.output
            return str(result.stderr)

        copy(repo_name("shared/cold"))
        # mounts are held up, so that the four images' probes of each blob overlap
        front.add(Fault("stall", method="POST", path="/blobs/uploads/", seconds=0.3, times=-1))
        assert "8 cache hits" in copy(warm)
        mounts = Counter(parse_qs(hit.query)["mount"][0] for hit in front.log
                         if hit.path == f"/v2/{warm}/blobs/uploads/" and "mount=" in hit.query)
    assert len(mounts) == 3 and set(mounts.values()) == {1}, mounts  # config, two layers


def test_layers_the_destination_mounts_take_no_transfer_slot(
        occy: Callable[..., Any], registry_plain: RegistryServer,
        fault_front_factory: Callable[..., FaultFront], repo_name: Callable[[str], str],
        summary: Callable[[str], dict[str, int]]) -> None:
    """A copy between two repositories of one registry mounts every layer: those
    requests go out together, not -j at a time (over a slow link, one round trip
    instead of one per -j layers)."""
    src = repo_name("mounts-src")
    push_sample_image(registry_plain, src, "1",
                      layers=[{f"f{i}": bytes([i]) * 1000} for i in range(6)])
    front = fault_front_factory(registry_plain)
    # each mount is held a moment, so that mounts sent together are seen together
    front.add(Fault("stall", method="POST", path="/blobs/uploads/$", seconds=0.3, times=-1))
    result = occy(registry_plain, "-j", "2", "process", f"registry://{front.host}/{src}:1",
                  f"registry://{front.host}/{src}-b:1")
    assert summary(result.stderr)["mounted"] == 6, result.stderr
    mounts = [h for h in front.log if h.method == "POST" and "mount=" in h.query]
    # how many were in flight at once: as each came, those come before it and not
    # yet answered (with -j 2, two layers' beside the config's at most)
    together = max(sum(1 for o in mounts if o.arrived <= h.arrived and (
        o.answered is None or o.answered > h.arrived)) for h in mounts)
    assert together >= 6, [(h.path, h.query, h.arrived, h.answered) for h in mounts]
