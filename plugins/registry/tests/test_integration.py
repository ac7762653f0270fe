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
from occystrap_core.testing.registry import (
    RegistryServer,
    push_sample_image,
    serve_registry,
    skopeo_args,
)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_pull_what_skopeo_pushed(registry: RegistryServer, occy: Callable[..., Any],
                                 registry_info: Callable[..., dict],
                                 repo_name: Callable[[str], str], tmp_path: Path) -> None:
    repo = repo_name("pull")
    sample = push_sample_image(registry, repo, "v1")
    uri = f"registry://{registry.host}/{repo}:v1"

    info = registry_info(registry, uri)
    assert info["manifest_digest"] == sample.manifest_digest
    assert info["config_digest"] == sample.config_digest
    assert [lay["digest"] for lay in info["layers"]] == list(sample.layer_digests)
    assert [lay["diff_id"] for lay in info["layers"]] == list(sample.diff_ids)

    by_digest = registry_info(registry, f"registry://{registry.host}/{repo}@{sample.manifest_digest}")
    assert by_digest["manifest_digest"] == sample.manifest_digest

    out = tmp_path / "out.tar"
    result = occy(registry, "process", uri, f"tar://{out}")
    assert "2 layers" in result.stderr
    pulled = registry_info(registry, f"tar://{out}")
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
                   registry_info: Callable[..., dict], tmp_path: Path) -> None:
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
    assert [lay["diff_id"] for lay in registry_info(registry_plain, f"tar://{out}")["layers"]] == \
        archive["diff_ids"]


def test_copy_keeps_every_digest_and_warm_copy_is_a_no_op(
        registry: RegistryServer, occy: Callable[..., Any], inspect_raw: Callable[..., bytes],
        repo_name: Callable[[str], str], request_log: Any, summary: Callable[..., dict]) -> None:
    src, dest = repo_name("src"), repo_name("mirror")
    sample = push_sample_image(registry, src, "v1")
    source = f"registry://{registry.host}/{src}:v1"
    target = f"registry://{registry.host}/{dest}:v1"

    first = occy(registry, "process", source, target)
    assert inspect_raw(registry, f"{dest}:v1") == sample.manifest  # a faithful mirror
    # same registry: blobs mounted, not copied, and not counted as skipped too
    assert summary(first.stderr) == {"layers": 0, "skipped": 0, "mounted": 2, "retries": 0}
    assert not [r for r in request_log.paths() if r[0] == "GET" and "/blobs/sha256" in r[1]
                and r[1] != f"/v2/{src}/blobs/{sample.config_digest}"]

    request_log.clear()
    second = occy(registry, "process", source, target)
    assert sample.manifest_digest in second.stderr
    assert summary(second.stderr) == {"layers": 0, "skipped": 2, "mounted": 0, "retries": 0}
    methods = {m for m, _ in request_log.paths()}
    assert methods <= {"GET", "HEAD"}, request_log.paths()
    # auth included: token mode is 401, one token for both repositories, GET, HEAD
    limit = {"plain": 2, "tls": 2, "basic": 3, "token": 4}[registry.mode]
    assert len(request_log.paths()) <= limit, request_log.paths()
    assert ("GET", f"/v2/{src}/blobs/{sample.config_digest}") not in request_log.paths()
    blob_reads = [p for m, p in request_log.paths() if "/blobs/" in p and
                  not p.endswith(sample.config_digest)]
    assert not blob_reads, request_log.paths()


def test_copy_between_registries_passthrough(registry: RegistryServer,
                                             registry_plain: RegistryServer,
                                             run_cli: Any, inspect_raw: Callable[..., bytes],
                                             repo_name: Callable[[str], str],
                                             summary: Callable[..., dict]) -> None:
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
    counts = summary(result.stderr)
    assert (counts["layers"], counts["mounted"], counts["skipped"]) == ((0, 2, 0) if same
                                                                        else (2, 0, 0))
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


def _push_multi_platform(skopeo: Callable[..., str], server: RegistryServer, ref: str,
                         layout: Path) -> dict[str, bytes]:
    """Push the index of :func:`_multi_platform_layout` (built in ``layout``) as ``ref``
    (``REPO:TAG``), with skopeo, every digest kept."""
    tag = ref.rsplit(":", 1)[1]
    manifests = _multi_platform_layout(layout, tag)
    skopeo("copy", "--all", "--preserve-digests", *skopeo_args(server, "dest"),
           f"oci:{layout}:{tag}", f"docker://{server.host}/{ref}")
    return manifests


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
        platform = {"os": "linux", "architecture": arch,
                    **({"variant": variant} if variant else {})}
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
                                  registry_info: Callable[..., dict],
                                  inspect_raw: Callable[..., bytes],
                                  repo_name: Callable[[str], str], tmp_path: Path) -> None:
    server: RegistryServer = request.getfixturevalue(f"registry_{mode}")
    repo = repo_name("multi")
    manifests = _push_multi_platform(skopeo, server, f"{repo}:v1", tmp_path / "layout")
    uri = f"registry://{server.host}/{repo}:v1"

    arm = registry_info(server, f"{uri}?platform=linux/arm64")  # arm64 == arm64/v8
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


@pytest.mark.parametrize("mode", ["plain", "token"])
def test_all_platforms_and_platform_lists(mode: str, request: pytest.FixtureRequest,
                                         occy: Callable[..., Any], skopeo: Callable[..., str],
                                         inspect_raw: Callable[..., bytes],
                                         repo_name: Callable[[str], str], tmp_path: Path,
                                         summary: Callable[..., dict]) -> None:
    server: RegistryServer = request.getfixturevalue(f"registry_{mode}")
    repo = repo_name("multi")
    manifests = _push_multi_platform(skopeo, server, f"{repo}:v1", tmp_path / "layout")
    uri = f"registry://{server.host}/{repo}:v1"

    # every platform: the index and every image keep their digests
    copy = f"registry://{server.host}/{repo}-all:v1"
    result = occy(server, "--all-platforms", "process", uri, copy)
    assert _sha256(manifests["index"]) in result.stderr
    assert result.stderr.rstrip().endswith(", verified")  # the index and both images read back
    assert inspect_raw(server, f"{repo}-all:v1") == manifests["index"]
    for arch in ("amd64", "arm64"):
        assert inspect_raw(server, f"{repo}-all@{_sha256(manifests[arch])}") == manifests[arch]
    warm = occy(server, "--all-platforms", "process", uri, copy)
    assert summary(warm.stderr)["layers"] == 0

    # a platform list: a new index listing that image, readable by skopeo
    occy(server, "process", f"{uri}?platforms=linux/arm64",
         f"registry://{server.host}/{repo}-arm:v1")
    index = inspect_raw(server, f"{repo}-arm:v1")
    entries = json.loads(index)["manifests"]
    assert [e["digest"] for e in entries] == [_sha256(manifests["arm64"])]
    assert entries == [e for e in json.loads(manifests["index"])["manifests"]
                       if e["platform"]["architecture"] == "arm64"]
    inspected = json.loads(skopeo("inspect", "--override-arch", "arm64", *skopeo_args(server),
                                  f"docker://{server.host}/{repo}-arm:v1"))
    assert inspected["Digest"] == _sha256(index) and inspected["Architecture"] == "arm64"

    # an OCI layout holds the index too, and skopeo copies every image out of it
    layout = tmp_path / "copy"
    result = occy(server, "--all-platforms", "--verify-full", "process", uri,
                  f"oci-layout://{layout}")
    assert result.stderr.rstrip().endswith(", verified")
    top = json.loads((layout / "index.json").read_text())["manifests"]
    assert [e["digest"] for e in top] == [_sha256(manifests["index"])]
    skopeo("copy", "--all", "--preserve-digests", f"oci:{layout}:v1",
           f"oci:{tmp_path / 'again'}:v1")
    from occystrap_core.archive.stores import DirStore
    from occystrap_core.archive.verify import verify_descriptor

    config = json.loads(manifests["arm64"])["config"]["digest"]
    (layout / "blobs" / "sha256" / config[7:]).unlink()  # every child is checked too
    assert verify_descriptor(DirStore(str(layout)), top[0], "index", False) == [
        f"index entry 1 config blob {config} is missing"]

    result = occy(server, "--all-platforms", "process", uri, f"tar://{tmp_path / 'x.tar'}",
                  ok=False)
    assert result.exit_code == 1 and "cannot hold a multi-platform index" in result.stderr


def test_all_platforms_copies_a_nested_index(registry_plain: RegistryServer,
                                             occy: Callable[..., Any], skopeo: Callable[..., str],
                                             inspect_raw: Callable[..., bytes],
                                             repo_name: Callable[[str], str],
                                             tmp_path: Path) -> None:
    import httpx

    server, repo = registry_plain, repo_name("nested")
    manifests = _push_multi_platform(skopeo, server, f"{repo}:inner", tmp_path / "layout")
    index_type = "application/vnd.oci.image.index.v1+json"
    outer = json.dumps({"schemaVersion": 2, "mediaType": index_type, "manifests": [
        {"mediaType": index_type, "digest": _sha256(manifests["index"]),
         "size": len(manifests["index"])}]}).encode()
    response = httpx.put(f"{server.url}/v2/{repo}/manifests/v1", content=outer,
                         headers={"Content-Type": index_type})
    assert response.status_code == 201, response.text

    result = occy(server, "--all-platforms", "process", f"registry://{server.host}/{repo}:v1",
                  f"registry://{server.host}/{repo}-copy:v1")
    assert result.stderr.rstrip().endswith(", verified")
    assert inspect_raw(server, f"{repo}-copy:v1") == outer
    for name in ("index", "amd64", "arm64"):
        assert inspect_raw(server, f"{repo}-copy@{_sha256(manifests[name])}") == manifests[name]

    layout = tmp_path / "copy"
    result = occy(server, "--all-platforms", "--verify-full", "process",
                  f"registry://{server.host}/{repo}:v1", f"oci-layout://{layout}")
    assert result.stderr.rstrip().endswith(", verified")  # nested entries re-hashed too
    top = json.loads((layout / "index.json").read_text())["manifests"]
    assert [e["digest"] for e in top] == [_sha256(outer)]
    for name in ("index", "amd64", "arm64"):
        assert (layout / "blobs" / "sha256" / _sha256(manifests[name])[7:]).read_bytes() \
            == manifests[name]


@pytest.fixture(scope="module")
def logged_registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A token-mode registry that logs every request it serves."""
    yield from serve_registry("token", tmp_path_factory, access_log=True)


def test_warm_no_op_counted_by_the_servers(logged_registry: RegistryServer,
                                          occy: Callable[..., Any],
                                          repo_name: Callable[[str], str],
                                          summary: Callable[..., dict]) -> None:
    server = logged_registry
    assert server.token_server is not None
    src, dest = repo_name("wsrc"), repo_name("wdest")
    push_sample_image(server, src, "v1")
    source = f"registry://{server.host}/{src}:v1"
    target = f"registry://{server.host}/{dest}:v1"
    occy(server, "process", source, target)

    before = len(server.requests())
    server.token_server.reset()
    result = occy(server, "process", source, target)
    served = server.requests()[before:]
    assert summary(result.stderr)["skipped"] == 2
    assert [r.scopes for r in server.token_server.requests] == [
        (f"repository:{dest}:pull,push", f"repository:{src}:pull")]  # one token, both ends
    assert len(served) + server.token_server.count <= 4, served
    assert [r.split()[0] for r in served] == ["GET", "GET", "HEAD"]


def test_over_tls_layers_stream_over_http11_and_the_rest_shares_http2(
        registry_tls: RegistryServer, occy: Callable[..., Any], request_log: Any,
        repo_name: Callable[[str], str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCCYSTRAP_HTTP2_OVERLAP", "1")  # from the first request, not the third
    repo = repo_name("h2split")
    image = push_sample_image(registry_tls, repo, "v1")
    occy(registry_tls, "process", f"registry://{registry_tls.host}/{repo}:v1",
         f"tar://{tmp_path / 'out.tar'}")
    answers = {(method, path): version for method, path, version in request_log.answers}
    assert answers[("GET", f"/v2/{repo}/manifests/v1")] == "HTTP/2"
    assert answers[("GET", f"/v2/{repo}/blobs/{image.config_digest}")] == "HTTP/2"
    for digest in image.layer_digests:  # pure-Python HTTP/2 framing would cost 3x the time
        assert answers[("GET", f"/v2/{repo}/blobs/{digest}")] == "HTTP/1.1"


def test_push_is_read_back_and_verified(registry_plain: RegistryServer,
                                        occy: Callable[..., Any], request_log: Any,
                                        repo_name: Callable[[str], str], tmp_path: Path) -> None:
    archive = build_docker_archive(str(tmp_path / "in.tar"), n_layers=2)
    repo = repo_name("verify")
    target = f"registry://{registry_plain.host}/{repo}:v1"
    result = occy(registry_plain, "process", f"tar://{archive['path']}", target)
    assert result.stderr.rstrip().endswith(", verified")
    digest = result.stderr.split("(", 1)[1].split(")", 1)[0]  # "Wrote ... (sha256:...)"
    paths = request_log.paths()
    assert ("GET", f"/v2/{repo}/manifests/{digest}") in paths
    # the default is cheap: blobs are HEADed, never downloaded
    assert not [p for m, p in paths if m == "GET" and "/blobs/sha256:" in p], paths

    request_log.clear()  # to another repository: a copy that writes nothing checks nothing
    result = occy(registry_plain, "--verify-full", "process", f"tar://{archive['path']}",
                  f"registry://{registry_plain.host}/{repo}-full:v1")
    assert result.stderr.rstrip().endswith(", verified")
    fetched = {p for m, p in request_log.paths() if m == "GET" and "/blobs/sha256:" in p}
    assert len(fetched) == 3  # the config and both layers, re-hashed


def test_verify_checks_the_blobs_while_the_manifest_goes_up(
        registry_plain: RegistryServer, occy: Callable[..., Any],
        fault_front_factory: Callable[..., Any], repo_name: Callable[[str], str],
        tmp_path: Path) -> None:
    """The blobs to check are known from the manifest sent, and were all written before
    it: they are HEADed while it goes up, and only the read-back waits for the PUT."""
    from occystrap_core.testing.faults import Fault

    archive = build_docker_archive(str(tmp_path / "in.tar"), n_layers=2)
    front = fault_front_factory(registry_plain)
    front.add(Fault("stall", method="PUT", path=r"/manifests/v1", seconds=0.5))
    repo = repo_name("verify-at-once")
    result = occy(registry_plain, "process", f"tar://{archive['path']}",
                  f"registry://{front.host}/{repo}:v1")
    assert result.stderr.rstrip().endswith(", verified")
    [put] = [h for h in front.log if h.method == "PUT" and "/manifests/" in h.path]
    uploaded = max(h.answered for h in front.log
                   if h.method == "PUT" and "/blobs/uploads/" in h.path)
    [read_back] = [h for h in front.log if h.method == "GET" and "/manifests/sha256:" in h.path]
    heads = [h for h in front.log if h.method == "HEAD" and "/blobs/" in h.path
             and h.arrived > uploaded]
    assert len(heads) == 3  # the config and both layers
    assert put.answered is not None
    assert all(h.answered is not None and h.answered < put.answered for h in heads)
    assert read_back.arrived > put.answered  # the manifest is read back once it is there


def test_verify_reports_a_blob_missing_while_the_manifest_goes_up(
        registry_plain: RegistryServer, occy: Callable[..., Any],
        fault_front_factory: Callable[..., Any], repo_name: Callable[[str], str],
        tmp_path: Path) -> None:
    """A blob the check finds missing as the manifest goes up fails the run, named."""
    from occystrap_core.testing.faults import Fault

    archive = build_docker_archive(str(tmp_path / "in.tar"), n_layers=2)
    config = archive["config_digest"]
    front = fault_front_factory(registry_plain)
    # the push asks for the config once before sending it; the check is the second HEAD
    front.add(Fault("status", method="HEAD", path=f"/blobs/{config}$", status=404,
                    code="BLOB_UNKNOWN", after=1))
    result = occy(registry_plain, "process", f"tar://{archive['path']}",
                  f"registry://{front.host}/{repo_name('verify-missing')}:v1", ok=False)
    heads = [h for h in front.log if h.method == "HEAD" and h.path.endswith(config)]
    assert [h.fault for h in heads] == [None, "status"]
    assert result.exit_code != 0
    assert f"config: blob {config} is missing" in result.stderr


def test_push_summary_counts_layers_then_skips(registry_plain: RegistryServer,
                                               occy: Callable[..., Any],
                                               repo_name: Callable[[str], str], tmp_path: Path,
                                               summary: Callable[..., dict]) -> None:
    archive = build_docker_archive(str(tmp_path / "in.tar"), n_layers=3, layer_size=50_000)
    target = f"registry://{registry_plain.host}/{repo_name('sum')}:v1"
    first = summary(occy(registry_plain, "process", f"tar://{archive['path']}", target).stderr)
    assert first == {"layers": 3, "skipped": 0, "mounted": 0, "retries": 0}
    again = summary(occy(registry_plain, "process", f"tar://{archive['path']}", target).stderr)
    assert (again["layers"], again["skipped"], again["mounted"]) == (0, 3, 0)


def test_shared_blobs_move_once_per_destination_registry(registry_plain: RegistryServer,
                                                         registry_tls: RegistryServer,
                                                         repo_name: Callable[[str], str]) -> None:
    """Two images sharing a layer, copied in one run to two repositories of another
    registry: the shared blob is uploaded once and mounted into the second repository,
    one after the other or at the same time."""
    import threading

    import occystrap_registry.plugin as registry_plugin
    from occystrap_core.pipeline import build_input, build_output, run
    from occystrap_core.testing.http import RequestLog, make_context

    shared = {"shared/base.txt": b"shared base layer\n" * 1000}
    sources = []
    for name in ("a", "b"):
        repo = repo_name(f"share-{name}")
        pushed = push_sample_image(registry_plain, repo, "v1",
                                   layers=(shared, {f"{name}.txt": name.encode() * 5000}))
        sources.append((f"registry://{registry_plain.host}/{repo}:v1?insecure=true", pushed))
    shared_digest = sources[0][1].layer_digests[0]
    assert shared_digest == sources[1][1].layer_digests[0]

    def copy_both(concurrently: bool) -> tuple[RequestLog, list[str]]:
        log = RequestLog()
        dests = [repo_name("mirror") for _ in sources]
        with make_context(registry_plugin, log, ca_cert=registry_tls.ca_cert) as ctx:
            def copy(i: int) -> None:
                with build_input(ctx, sources[i][0]) as source:
                    run(ctx, source, build_output(
                        ctx, f"registry://{registry_tls.host}/{dests[i]}:v1"))
            threads = [threading.Thread(target=copy, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
                if not concurrently:
                    thread.join()
            for thread in threads:
                thread.join()
            assert ctx.stats["mounted"] == 1 and ctx.stats["layers"] == 3
        return log, dests

    for concurrently in (False, True):
        log, dests = copy_both(concurrently)
        uploads = [p for m, p in log.paths() if m == "PUT" and "/blobs/uploads/" in p]
        assert len(uploads) == 2 + 3, uploads  # three layers (not four) and two configs


def test_pull_to_tar_keeping_compression(registry_tls: RegistryServer, occy: Callable[..., Any],
                                         skopeo: Callable[..., str],
                                         registry_info: Callable[..., dict],
                                         repo_name: Callable[[str], str], tmp_path: Path) -> None:
    import tarfile

    repo = repo_name("keep")
    sample = push_sample_image(registry_tls, repo, "v1")
    out = tmp_path / "out.tar"
    occy(registry_tls, "process", f"registry://{registry_tls.host}/{repo}:v1",
         f"tar://{out}?compression=keep")
    with tarfile.open(out) as tar:
        docker = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        names = set(tar.getnames())
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert docker[0]["Layers"] == [f"blobs/sha256/{d.split(':')[1]}" for d in sample.layer_digests]
    assert set(docker[0]["Layers"]) <= names
    # the OCI side is the registry's manifest, so the image keeps its digest
    assert index["manifests"][0]["digest"] == sample.manifest_digest
    info = registry_info(registry_tls, f"tar://{out}")
    assert [lay["digest"] for lay in info["layers"]] == list(sample.layer_digests)
    assert [lay["diff_id"] for lay in info["layers"]] == list(sample.diff_ids)
    # docker-archive readers (skopeo, as podman load) accept the gzip layers
    skopeo("copy", f"docker-archive:{out}", f"oci:{tmp_path / 'layout'}:v1")
    skopeo("copy", f"oci-archive:{out}", f"oci:{tmp_path / 'layout2'}:v1")
