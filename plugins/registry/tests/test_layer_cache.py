"""--layer-cache against the real registry: warm copies to new repositories cost the
source nothing but its manifest and write what a copy without the cache writes; a
cached blob gone from the destination is re-transferred; four processes with
different chains share one cache directory and every output verifies.

The source is read through a FaultFront (no faults) that logs every request; the
destination is the registry itself, so that the cache's locations allow mounts.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

import occystrap
from occystrap_core import hookimpl
from occystrap_core.testing import plugin_module
from occystrap_core.testing.faults import FaultFront
from occystrap_core.testing.registry import (
    RegistryServer,
    push_sample_image,
    skopeo_args,
    start_registry,
)
from occystrap_core.types import FilterSpec

WROTE = re.compile(r"^Wrote \S+ \((sha256:[0-9a-f]{64})\)", re.M)


def _layers(n: int, seed: int = 0) -> list[dict[str, bytes]]:
    """Layers with text and random data, so exclude (``*.bin``) and zstd have work."""
    rng = random.Random(seed)
    return [{f"etc/conf{i}.txt": f"layer {i}\n".encode() * 50,
             f"data/blob{i}.bin": rng.randbytes(150_000)} for i in range(n)]


@pytest.fixture
def source(fault_front_factory: Callable[..., FaultFront],
           registry_plain: RegistryServer) -> FaultFront:
    """The registry, seen through a front that logs what the source side asks for."""
    return fault_front_factory(registry_plain)


@pytest.fixture
def copy(occy: Callable[..., Any], registry_plain: RegistryServer,
         tmp_path: Path) -> Callable[..., tuple[str, Any]]:
    """``copy(SRC, DEST, *filters, cache=True)``: process through the test's one cache;
    returns the digest written and the CLI result."""

    def run(src: str, dest: str, *filters: str, cache: bool = True) -> tuple[str, Any]:
        options = ["--layer-cache", str(tmp_path / "cache")] if cache else []
        result = occy(registry_plain, *options, "process", src, dest,
                      *[a for f in filters for a in ("-f", f)])
        match = WROTE.search(result.stderr)
        assert match, result.stderr
        assert "verified" in result.stderr
        return match.group(1), result

    return run


def _transferred(stderr: str) -> int:
    """Layers the summary line counts as transferred (read and written)."""
    match = re.search(r"^Summary: (\d+) layers", stderr, re.M)
    assert match, stderr
    return int(match.group(1))


def _blob_gets(front: FaultFront) -> list[str]:
    return [h.path for h in front.log if h.method == "GET" and "/blobs/" in h.path]


def _sound(occy: Callable[..., Any], skopeo: Callable[..., str], server: RegistryServer,
           ref: str, tmp_path: Path) -> None:
    """A full check (every layer read, diff_ids against the config) and skopeo's copy."""
    report = occy(server, "check", "-O", "json", f"registry://{server.host}/{ref}")
    assert json.loads(report.stdout)["errors"] == 0, report.stdout
    out = tmp_path / f"skopeo-{ref.replace('/', '-').replace(':', '-')}"
    skopeo("copy", *skopeo_args(server, "src"), f"docker://{server.host}/{ref}", f"oci:{out}:x")


def _manifests(server: RegistryServer, refs: list[str]) -> str:
    """The manifests ``refs`` (``REPO@DIGEST``) name, for an assertion's message."""
    accept = "application/vnd.oci.image.manifest.v1+json"
    return "\n".join(
        f"{r}: " + httpx.get(f"http://{server.host}/v2/{r.replace('@', '/manifests/')}",
                             headers={"Accept": accept}).text for r in refs)


CHAINS = {
    "normalize": ("", ("normalize-timestamps",)),
    "zstd": ("?compression=zstd", ()),
    "two-filters": ("", ("normalize-timestamps:ts=86400", "exclude:pattern=*.bin")),
}


@pytest.mark.parametrize("chain", CHAINS, ids=list(CHAINS))
def test_warm_copy_to_a_new_repository_reads_no_source_blob(
        chain: str, copy: Callable[..., tuple[str, Any]], source: FaultFront,
        registry_plain: RegistryServer, repo_name: Callable[[str], str],
        occy: Callable[..., Any], skopeo: Callable[..., str], tmp_path: Path) -> None:
    query, filters = CHAINS[chain]
    src = repo_name("cache-src")
    sample = push_sample_image(registry_plain, src, "1", layers=_layers(3))
    dst = registry_plain.host
    ref = repo_name("ref")
    reference, _ = copy(f"registry://{source.host}/{src}:1",
                        f"registry://{dst}/{ref}:1{query}", *filters, cache=False)
    assert reference != sample.manifest_digest  # the chain does change the image

    cold, _ = copy(f"registry://{source.host}/{src}:1", f"registry://{dst}/{src}-b:1{query}",
                   *filters)
    source.clear()
    warm, result = copy(f"registry://{source.host}/{src}:1", f"registry://{dst}/{src}-c:1{query}",
                        *filters)

    assert _blob_gets(source) == []  # not a layer, not even the config
    assert [(h.method, h.path) for h in source.log] == [("GET", f"/v2/{src}/manifests/1")]
    assert "3 cache hits" in result.stderr
    assert _transferred(result.stderr) == 0
    # each sound first: should the digests differ, this says which image is wrong
    for repo in (f"{ref}:1", f"{src}-b:1", f"{src}-c:1"):
        _sound(occy, skopeo, registry_plain, repo, tmp_path)
    assert cold == warm == reference, _manifests(registry_plain, [  # the cache changes
        f"{ref}@{reference}", f"{src}-b@{cold}", f"{src}-c@{warm}"])  # nothing written


def test_partial_hit_reads_only_the_new_layer(
        copy: Callable[..., tuple[str, Any]], source: FaultFront,
        registry_plain: RegistryServer, repo_name: Callable[[str], str],
        occy: Callable[..., Any], skopeo: Callable[..., str], tmp_path: Path) -> None:
    src = repo_name("cache-partial")
    layers = _layers(3, seed=7)
    push_sample_image(registry_plain, src, "1", layers=layers)
    changed = push_sample_image(registry_plain, src, "2",
                                layers=[*layers[:2], {"etc/new.txt": b"a new top layer\n"}])
    dst = registry_plain.host
    filters = ("normalize-timestamps", "exclude:pattern=*.bin")
    reference, _ = copy(f"registry://{source.host}/{src}:2", f"registry://{dst}/{src}-ref:2",
                        *filters, cache=False)
    copy(f"registry://{source.host}/{src}:1", f"registry://{dst}/{src}-a:1", *filters)

    source.clear()
    digest, result = copy(f"registry://{source.host}/{src}:2", f"registry://{dst}/{src}-b:2",
                          *filters)
    assert digest == reference
    # the config, and the one layer the cache has never seen
    new_layer = changed.layer_digests[2]
    assert sorted(_blob_gets(source)) == sorted(
        [f"/v2/{src}/blobs/{changed.config_digest}", f"/v2/{src}/blobs/{new_layer}"])
    assert "2 cache hits" in result.stderr
    assert _transferred(result.stderr) == 1
    _sound(occy, skopeo, registry_plain, f"{src}-b:2", tmp_path)


def test_options_of_a_filter_are_part_of_the_key(
        copy: Callable[..., tuple[str, Any]], source: FaultFront,
        registry_plain: RegistryServer, repo_name: Callable[[str], str]) -> None:
    src = repo_name("cache-options")
    push_sample_image(registry_plain, src, "1", layers=_layers(2, seed=3))
    dst, uri = registry_plain.host, f"registry://{source.host}/{src}:1"
    reference, _ = copy(uri, f"registry://{dst}/{src}-ref:1", "normalize-timestamps:ts=5",
                        cache=False)
    first, _ = copy(uri, f"registry://{dst}/{src}-a:1", "normalize-timestamps:ts=0")
    source.clear()
    second, result = copy(uri, f"registry://{dst}/{src}-b:1", "normalize-timestamps:ts=5")
    assert second == reference != first
    assert "cache hits" not in result.stderr
    assert len(_blob_gets(source)) == 3  # config and both layers: nothing was reused


def test_a_rewrite_filter_can_opt_out(
        register_plugin: Callable[..., Any], copy: Callable[..., tuple[str, Any]],
        source: FaultFront, registry_plain: RegistryServer,
        repo_name: Callable[[str], str], tmp_path: Path) -> None:
    from occystrap_core.filters.normalize import NormalizeTimestamps

    class Stamped(NormalizeTimestamps):  # say its bytes depend on more than its input
        cacheable = False

    @hookimpl
    def occystrap_filters() -> Any:
        yield FilterSpec(name="stamp", summary="not deterministic",
                         factory=lambda inner, opts, ctx: Stamped(inner, ctx, 0, True))

    register_plugin(plugin_module(occystrap_filters), name="occystrap-stamp")
    src = repo_name("cache-optout")
    push_sample_image(registry_plain, src, "1", layers=_layers(2, seed=5))
    uri, dst = f"registry://{source.host}/{src}:1", registry_plain.host
    copy(uri, f"registry://{dst}/{src}-a:1", "stamp")
    source.clear()
    copy(uri, f"registry://{dst}/{src}-b:1", "stamp")
    assert len(_blob_gets(source)) == 3  # read and rewritten again, config too: no memo
    with sqlite3.connect(tmp_path / "cache" / "cache.sqlite3") as db:
        steps = {r[0] for r in db.execute("SELECT step FROM transforms")}
        assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
    # only the output's compression, keyed by the rewritten tar, was remembered
    assert steps and all(s.startswith("compress gzip") for s in steps)


def _delete_blobs(server: RegistryServer, repo: str, digests: list[str]) -> None:
    with httpx.Client(base_url=server.url) as http:
        for digest in digests:
            assert http.delete(f"/v2/{repo}/blobs/{digest}").status_code == 202
            assert http.head(f"/v2/{repo}/blobs/{digest}").status_code == 404


def test_entry_whose_blob_is_gone_is_not_trusted(
        copy: Callable[..., tuple[str, Any]], source: FaultFront, occy: Callable[..., Any],
        registry_plain: RegistryServer, repo_name: Callable[[str], str],
        skopeo: Callable[..., str], tmp_path: Path) -> None:
    src = repo_name("cache-gone")
    sample = push_sample_image(registry_plain, src, "1", layers=_layers(3, seed=11))
    uri, dst = f"registry://{source.host}/{src}:1", registry_plain.host
    cold, _ = copy(uri, f"registry://{dst}/{src}-a:1", "normalize-timestamps")
    written = json.loads(httpx.get(f"{registry_plain.url}/v2/{src}-a/manifests/1", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"}).content)
    # the rewritten top layer goes from the only repository that held it
    _delete_blobs(registry_plain, f"{src}-a", [written["layers"][2]["digest"]])

    source.clear()
    warm, result = copy(uri, f"registry://{dst}/{src}-b:1", "normalize-timestamps")
    assert warm == cold
    assert sorted(_blob_gets(source)) == sorted(
        [f"/v2/{src}/blobs/{sample.config_digest}", f"/v2/{src}/blobs/{sample.layer_digests[2]}"])
    assert _transferred(result.stderr) == 1  # re-transferred, the rest mounted
    _sound(occy, skopeo, registry_plain, f"{src}-b:1", tmp_path)


def test_fresh_destination_registry_gets_everything(
        copy: Callable[..., tuple[str, Any]], source: FaultFront, occy: Callable[..., Any],
        registry_plain: RegistryServer, repo_name: Callable[[str], str],
        skopeo: Callable[..., str], tmp_path: Path) -> None:
    src = repo_name("cache-fresh")
    push_sample_image(registry_plain, src, "1", layers=_layers(2, seed=13))
    uri = f"registry://{source.host}/{src}:1"
    cold, _ = copy(uri, f"registry://{registry_plain.host}/{src}-a:1", "normalize-timestamps")
    fresh = start_registry("plain", tmp_path / "fresh")
    try:
        source.clear()
        result = occy(fresh, "--layer-cache", str(tmp_path / "cache"), "process", uri,
                      f"registry://{fresh.host}/{src}:1", "-f", "normalize-timestamps")
        assert cold in result.stderr and "cache hits" not in result.stderr
        assert len(_blob_gets(source)) == 3
        _sound(occy, skopeo, fresh, f"{src}:1", tmp_path)
    finally:
        fresh.stop()


def test_unusable_cache_is_a_warning(copy: Callable[..., tuple[str, Any]], source: FaultFront,
                                     registry_plain: RegistryServer,
                                     repo_name: Callable[[str], str], tmp_path: Path) -> None:
    src = repo_name("cache-corrupt")
    push_sample_image(registry_plain, src, "1")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cache.sqlite3").write_bytes(b"not sqlite" * 1000)
    _, result = copy(f"registry://{source.host}/{src}:1",
                     f"registry://{registry_plain.host}/{src}-a:1", "normalize-timestamps")
    assert "going on without the cache" in result.stderr


@pytest.mark.parametrize("where", ["link-to-nothing", "read-only"])
def test_a_directory_that_cannot_hold_the_cache_is_one_warning(
        where: str, copy: Callable[..., tuple[str, Any]], source: FaultFront,
        registry_plain: RegistryServer, repo_name: Callable[[str], str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """The run goes on without the cache, and without DIR: the upload journals (and
    partial downloads) go where they go without --layer-cache, so the cache's warning
    is the only line about DIR, and killed pushes stay resumable."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    where_dir = tmp_path / "cache"
    if where == "link-to-nothing":
        where_dir.symlink_to(tmp_path / "gone")
    else:
        where_dir.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where_dir)],
                       check=True, capture_output=True)
        request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(where_dir)],
                                                    check=False, capture_output=True))
    src = repo_name("cache-nowhere")
    push_sample_image(registry_plain, src, "1")
    _, result = copy(f"registry://{source.host}/{src}:1",
                     f"registry://{registry_plain.host}/{src}-a:1", "normalize-timestamps")
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "going on without the cache" in warnings[0], result.stderr
    assert (tmp_path / "xdg" / "occystrap" / "uploads").is_dir()


def test_library_takes_layer_cache(registry_plain: RegistryServer,
                                   repo_name: Callable[[str], str], tmp_path: Path) -> None:
    src = repo_name("cache-lib")
    push_sample_image(registry_plain, src, "1")
    options = {"insecure": True, "layer_cache": str(tmp_path / "c")}
    host = registry_plain.host
    first = occystrap.copy(f"registry://{host}/{src}:1", f"registry://{host}/{src}-a:1",
                           filters=["normalize-timestamps"], **options)
    second = occystrap.copy(f"registry://{host}/{src}:1", f"registry://{host}/{src}-b:1",
                            filters=["normalize-timestamps"], **options)
    assert first.ok and second.ok and first.manifest_digest == second.manifest_digest
    assert (first.stats["cache_hits"], second.stats["cache_hits"]) == (0, 2)


# --- four processes, one cache ------------------------------------------------------

PROCESS_CHAINS = {
    "zstd": ("?compression=zstd", ()),
    "normalize": ("", ("normalize-timestamps",)),
    "exclude": ("", ("exclude:pattern=*.bin",)),
    "normalize-exclude": ("", ("normalize-timestamps", "exclude:pattern=*.bin")),
}


def _start(server: RegistryServer, cache: Path | None, src: str, dest: str,
           filters: tuple[str, ...]) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "occystrap", "--insecure", "-j", "4"]
    args += ["--layer-cache", str(cache)] if cache else []
    args += ["process", src, dest] + [a for f in filters for a in ("-f", f)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())


def _all(procs: dict[str, subprocess.Popen[str]]) -> dict[str, str]:
    digests = {}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}: {err}"
        match = WROTE.search(err)
        assert match and "verified" in err, err
        digests[name] = match.group(1)
    return digests


def test_four_processes_with_different_chains_share_one_cache(
        registry_plain: RegistryServer, repo_name: Callable[[str], str],
        occy: Callable[..., Any], skopeo: Callable[..., str], tmp_path: Path) -> None:
    src = repo_name("cache-four")
    host = registry_plain.host
    push_sample_image(registry_plain, src, "1", layers=_layers(6, seed=21))
    uri, cache = f"registry://{host}/{src}:1", tmp_path / "shared-cache"

    def run_all(label: str, with_cache: bool) -> dict[str, str]:
        return _all({name: _start(registry_plain, cache if with_cache else None, uri,
                                  f"registry://{host}/{src}-{label}-{name}:1{query}", filters)
                     for name, (query, filters) in PROCESS_CHAINS.items()})

    reference = run_all("ref", with_cache=False)
    cold = run_all("cold", with_cache=True)
    warm = run_all("warm", with_cache=True)
    assert cold == reference and warm == reference
    assert len(set(reference.values())) == 4  # four chains, four images
    for label in ("cold", "warm"):
        for name in PROCESS_CHAINS:
            _sound(occy, skopeo, registry_plain, f"{src}-{label}-{name}:1", tmp_path)
