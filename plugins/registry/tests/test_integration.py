"""occystrap against the real CNCF distribution registry, in every auth mode.

Interop is checked with skopeo: what skopeo pushes occystrap pulls, what occystrap
pushes skopeo reads back with the same digests.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from occystrap_core.testing.images import build_docker_archive
from occystrap_core.testing.registry import RegistryServer, push_sample_image, skopeo_args

pytestmark = pytest.mark.skipif(
    __import__("shutil").which("docker-registry") is None, reason="docker-registry not installed")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_pull_what_skopeo_pushed(registry: RegistryServer, occy: Callable[..., Any],
                                 info_json: Callable[..., dict], repo_name: Callable[[str], str],
                                 tmp_path: Path) -> None:
    repo = repo_name("pull")
    sample = push_sample_image(registry, repo, "v1")
    uri = f"registry://{registry.host}/{repo}:v1"

    info = info_json(registry, uri)
    assert info["manifest_digest"] == sample.manifest_digest
    assert info["config_digest"] == sample.config_digest
    assert [lay["digest"] for lay in info["layers"]] == list(sample.layer_digests)
    assert [lay["diff_id"] for lay in info["layers"]] == list(sample.diff_ids)

    by_digest = info_json(registry, f"registry://{registry.host}/{repo}@{sample.manifest_digest}")
    assert by_digest["manifest_digest"] == sample.manifest_digest

    out = tmp_path / "out.tar"
    result = occy(registry, "process", uri, f"tar://{out}")
    assert "2 layers" in result.stderr
    pulled = info_json(registry, f"tar://{out}")
    assert pulled["config_digest"] == sample.config_digest
    assert [lay["diff_id"] for lay in pulled["layers"]] == list(sample.diff_ids)


def test_push_then_skopeo_reads_it_back(registry: RegistryServer, occy: Callable[..., Any],
                                        skopeo: Callable[..., str],
                                        inspect_raw: Callable[..., bytes],
                                        repo_name: Callable[[str], str], tmp_path: Path) -> None:
    archive = build_docker_archive(str(tmp_path / "in.tar"), n_layers=3, layer_size=200_000)
    repo = repo_name("push")
    result = occy(registry, "process", f"tar://{archive['path']}",
                  f"registry://{registry.host}/{repo}:v1")
    assert "3 layers" in result.stderr

    manifest = inspect_raw(registry, f"{repo}:v1")
    digest = _sha256(manifest)
    assert digest in result.stderr  # "Wrote ... (sha256:...)" names what the registry holds
    doc = json.loads(manifest)
    assert doc["config"]["digest"] == archive["config_digest"]
    assert all(lay["mediaType"].endswith("gzip") for lay in doc["layers"])

    inspected = json.loads(skopeo("inspect", *skopeo_args(registry),
                                  f"docker://{registry.host}/{repo}:v1"))
    assert inspected["Digest"] == digest
    assert inspected["Layers"] == [lay["digest"] for lay in doc["layers"]]

    # skopeo copies it back, byte for byte, and its blobs check out against the config.
    layout = tmp_path / "layout"
    skopeo("copy", "--preserve-digests", *skopeo_args(registry, "src"),
           f"docker://{registry.host}/{repo}:v1", f"oci:{layout}:v1")
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    blobs = layout / "blobs" / "sha256"
    config = json.loads((blobs / archive["config_digest"].split(":")[1]).read_bytes())
    assert config["rootfs"]["diff_ids"] == archive["diff_ids"]
    import gzip
    for layer, diff_id in zip(doc["layers"], archive["diff_ids"], strict=True):
        blob = (blobs / layer["digest"].split(":")[1]).read_bytes()
        assert _sha256(blob) == layer["digest"] and len(blob) == layer["size"]
        assert _sha256(gzip.decompress(blob)) == diff_id


def test_push_zstd(registry_plain: RegistryServer, occy: Callable[..., Any],
                   inspect_raw: Callable[..., bytes], repo_name: Callable[[str], str],
                   info_json: Callable[..., dict], tmp_path: Path) -> None:
    archive = build_docker_archive(str(tmp_path / "in.tar"))
    repo = repo_name("zstd")
    occy(registry_plain, "process", f"tar://{archive['path']}",
         f"registry://{registry_plain.host}/{repo}:v1?compression=zstd&level=5")
    doc = json.loads(inspect_raw(registry_plain, f"{repo}:v1"))
    assert [lay["mediaType"] for lay in doc["layers"]] == \
        ["application/vnd.oci.image.layer.v1.tar+zstd"] * 2
    # pulling it back decompresses and checks every diff_id
    out = tmp_path / "back.tar"
    occy(registry_plain, "process", f"registry://{registry_plain.host}/{repo}:v1", f"tar://{out}")
    assert [lay["diff_id"] for lay in info_json(registry_plain, f"tar://{out}")["layers"]] == \
        archive["diff_ids"]


def test_copy_keeps_every_digest_and_warm_copy_is_a_no_op(
        registry: RegistryServer, occy: Callable[..., Any], inspect_raw: Callable[..., bytes],
        repo_name: Callable[[str], str], request_log: Any) -> None:
    src, dest = repo_name("src"), repo_name("mirror")
    sample = push_sample_image(registry, src, "v1")
    source = f"registry://{registry.host}/{src}:v1"
    target = f"registry://{registry.host}/{dest}:v1"

    first = occy(registry, "process", source, target)
    assert inspect_raw(registry, f"{dest}:v1") == sample.manifest  # a faithful mirror
    assert "2 mounted" in first.stderr  # same registry: blobs mounted, not copied
    assert not [r for r in request_log.requests if r[0] == "GET" and "/blobs/sha256" in r[1]
                and r[1] != f"/v2/{src}/blobs/{sample.config_digest}"]

    request_log.clear()
    second = occy(registry, "process", source, target)
    assert sample.manifest_digest in second.stderr
    assert "0 layers (2 skipped)" in second.stderr
    methods = {m for m, _ in request_log.requests}
    assert methods <= {"GET", "HEAD"}, request_log.requests
    blob_reads = [p for m, p in request_log.requests if "/blobs/" in p and
                  not p.endswith(sample.config_digest)]
    assert not blob_reads, request_log.requests


def test_copy_between_registries_passthrough(registry: RegistryServer,
                                             registry_plain: RegistryServer,
                                             run_cli: Any, inspect_raw: Callable[..., bytes],
                                             repo_name: Callable[[str], str]) -> None:
    """plain -> each mode: blobs streamed byte for byte, the manifest digest unchanged
    (plain -> plain is the same registry, where blobs are mounted)."""
    src, dest = repo_name("xsrc"), repo_name("xdest")
    sample = push_sample_image(registry_plain, src, "v1")
    flags = ["--ca-cert", registry.ca_cert] if registry.ca_cert else []
    userinfo = f"{registry.username}:{registry.password}@" if registry.username else ""
    result = run_cli(*flags, "process",
                     f"registry://{registry_plain.host}/{src}:v1?insecure=true",
                     f"registry://{userinfo}{registry.host}/{dest}:v2"
                     + ("" if registry.ca_cert else "?insecure=true"))
    assert result.exit_code == 0, result.output
    same = registry.host == registry_plain.host
    assert ("2 mounted" if same else "2 layers") in result.stderr
    assert inspect_raw(registry, f"{dest}:v2") == sample.manifest


def test_push_by_digest(registry_token: RegistryServer, occy: Callable[..., Any],
                        inspect_raw: Callable[..., bytes],
                        repo_name: Callable[[str], str]) -> None:
    src, dest = repo_name("dsrc"), repo_name("ddest")
    sample = push_sample_image(registry_token, src, "v1")
    occy(registry_token, "process", f"registry://{registry_token.host}/{src}:v1",
         f"registry://{registry_token.host}/{dest}@{sample.manifest_digest}")
    assert inspect_raw(registry_token, f"{dest}@{sample.manifest_digest}") == sample.manifest


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_wrong_credentials(mode: str, request: pytest.FixtureRequest, occy: Callable[..., Any],
                           repo_name: Callable[[str], str]) -> None:
    server: RegistryServer = request.getfixturevalue(f"registry_{mode}")
    repo = repo_name("creds")
    push_sample_image(server, repo, "v1")
    for args in (("info", f"registry://{server.host}/{repo}:v1"),
                 ("process", f"registry://{server.host}/{repo}:v1",
                  f"registry://{server.host}/{repo}-copy:v1")):
        result = occy(server, *args, ok=False, creds=("alice", "wrong-password"))
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: "), result.stderr
        assert server.host in result.stderr
        assert "Traceback" not in result.stderr and "unexpected" not in result.stderr


def test_missing_image_and_bad_reference(registry_plain: RegistryServer,
                                         occy: Callable[..., Any]) -> None:
    result = occy(registry_plain, "info", f"registry://{registry_plain.host}/no/such:tag",
                  ok=False)
    assert result.exit_code == 1
    assert "not found" in result.stderr and registry_plain.host in result.stderr
    result = occy(registry_plain, "info", f"registry://{registry_plain.host}/Bad/Name", ok=False)
    assert result.exit_code == 1
    assert "Error: invalid image reference" in result.stderr


def _multi_platform_layout(path: Path, tag: str) -> dict[str, bytes]:
    """An OCI layout whose ``tag`` is an index of linux/amd64 and linux/arm64/v8 images."""
    import gzip

    from occystrap_core.testing.images import sample_image

    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        (blobs / _sha256(data).split(":")[1]).write_bytes(data)
        return _sha256(data)

    manifests: dict[str, bytes] = {}
    entries = []
    for arch, variant in (("amd64", None), ("arm64", "v8")):
        image = sample_image(architecture=arch, seed=len(manifests) + 7)
        layers = [gzip.compress(t, mtime=0) for t in image.layers]
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": put(image.config), "size": len(image.config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": put(lay), "size": len(lay)} for lay in layers]}).encode()
        manifests[arch] = manifest
        platform = {"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})}
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": put(manifest), "size": len(manifest), "platform": platform})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": entries}).encode()
    manifests["index"] = index
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": put(index),
         "size": len(index), "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return manifests


@pytest.mark.parametrize("mode", ["plain", "token"])
def test_multi_platform_selection(mode: str, request: pytest.FixtureRequest,
                                  occy: Callable[..., Any], skopeo: Callable[..., str],
                                  info_json: Callable[..., dict],
                                  inspect_raw: Callable[..., bytes],
                                  repo_name: Callable[[str], str], tmp_path: Path) -> None:
    server: RegistryServer = request.getfixturevalue(f"registry_{mode}")
    repo = repo_name("multi")
    manifests = _multi_platform_layout(tmp_path / "layout", "v1")
    skopeo("copy", "--all", "--preserve-digests", *skopeo_args(server, "dest"),
           f"oci:{tmp_path / 'layout'}:v1", f"docker://{server.host}/{repo}:v1")
    uri = f"registry://{server.host}/{repo}:v1"

    arm = info_json(server, f"{uri}?platform=linux/arm64")  # arm64 == arm64/v8
    assert arm["manifest_digest"] == _sha256(manifests["arm64"])
    assert arm["architecture"] == "arm64"
    amd = occy(server, "--platform", "linux/amd64", "info", "-O", "json", uri)
    assert json.loads(amd.stdout)["manifest_digest"] == _sha256(manifests["amd64"])

    result = occy(server, "--platform", "linux/s390x", "info", uri, ok=False)
    assert result.exit_code == 1
    assert "available: linux/amd64, linux/arm64/v8" in result.stderr

    # copying one platform pushes that platform's manifest unchanged
    occy(server, "--platform", "linux/arm64/v8", "process", uri,
         f"registry://{server.host}/{repo}-arm:v1")
    assert inspect_raw(server, f"{repo}-arm:v1") == manifests["arm64"]
