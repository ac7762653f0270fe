"""The format rules the copy engine applies for every pair of schemes, each against the
real registry, real files and independent clients (skopeo, umoci, oras).

Each test is the regression test of a bug: --all-platforms ignored for local sources,
a Docker list kept in an OCI layout, zstd under a Docker manifest, a filtered re-push
judged up to date, artifacts refused or reported wrongly, ``latest`` invented for a
digest reference, an oci-bundle ``config.json`` ignoring the conversion rules.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from click.testing import Result

from occystrap_core import mediatypes as mt
from occystrap_core.testing.images import (
    make_layer,
    multi_platform_blobs,
    sample_image,
    write_docker_archive,
    write_files,
    write_oci_layout,
    write_tar,
)
from occystrap_core.testing.registry import RegistryServer, skopeo_args

ACCEPT = ", ".join((mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST))
IMAGES = [sample_image("example.com/rules/multi", "v1", architecture=arch, variant=variant,
                       n_layers=2, seed=60 + i)
          for i, (arch, variant) in enumerate([("amd64", None), ("arm64", "v8")])]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def get_manifest(server: RegistryServer, repo: str, ref: str) -> httpx.Response:
    response = httpx.get(f"http://{server.host}/v2/{repo}/manifests/{ref}",
                         headers={"Accept": ACCEPT})
    response.raise_for_status()
    return response


def upload_blob(base: str, blob: bytes) -> None:
    """A monolithic upload to the repository at ``base`` (``http://HOST/v2/REPO``)."""
    started = httpx.post(f"{base}/blobs/uploads/")
    started.raise_for_status()
    location = httpx.URL(base).join(started.headers["location"])
    httpx.put(location.copy_merge_params({"digest": sha(blob)}),
              content=blob).raise_for_status()


def layout_top(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The only ``index.json`` entry of a layout, and the document it names."""
    entries = json.loads((path / "index.json").read_bytes())["manifests"]
    assert len(entries) == 1, entries
    blob = path / "blobs" / "sha256" / entries[0]["digest"].split(":", 1)[1]
    return entries[0], json.loads(blob.read_bytes())


def run_tool(*args: str) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout


# --- --all-platforms from every source ------------------------------------------------

@pytest.fixture
def local_multi(tmp_path: Path) -> dict[str, str]:
    files, _ = multi_platform_blobs(IMAGES, "v1")
    write_files(str(tmp_path / "layout"), files)
    write_tar(str(tmp_path / "archive.tar"), files)
    return {"oci-layout": f"oci-layout://{tmp_path / 'layout'}",
            "tar": f"tar://{tmp_path / 'archive.tar'}"}


@pytest.mark.parametrize("scheme", ["oci-layout", "tar"])
def test_all_platforms_from_a_local_source(tmp_path: Path, local_multi: dict[str, str],
                                           scheme: str, run_cli: Callable[..., Result],
                                           registry_plain: RegistryServer) -> None:
    _, index = multi_platform_blobs(IMAGES, "v1")
    out = tmp_path / f"out-{scheme}"
    result = run_cli("--all-platforms", "process", local_multi[scheme], f"oci-layout://{out}")
    assert result.exit_code == 0, result.output
    entry, doc = layout_top(out)
    assert entry["digest"] == sha(index)  # the index, byte for byte
    assert len(doc["manifests"]) == 2
    for child in doc["manifests"]:
        assert (out / "blobs" / "sha256" / child["digest"][7:]).is_file()

    # and into a registry: the index and both images
    dest = f"{registry_plain.host}/rules/from-{scheme}"
    result = run_cli("--insecure", "--all-platforms", "process", local_multi[scheme],
                     f"registry://{dest}:v1")
    assert result.exit_code == 0, result.output
    assert get_manifest(registry_plain, f"rules/from-{scheme}", "v1").content == index

    # ?platforms= picks some, and rewrites the index
    result = run_cli("process", local_multi[scheme] + "?platforms=linux/aarch64",
                     f"oci-layout://{tmp_path / 'some'}")
    assert result.exit_code == 0, result.output
    _, some = layout_top(tmp_path / "some")
    assert [m["platform"]["architecture"] for m in some["manifests"]] == ["arm64"]


# --- skopeo's dir: as a source ------------------------------------------------------------

def test_a_skopeo_dir_is_read_with_its_digests(tmp_path: Path, local_multi: dict[str, str],
                                               run_cli: Callable[..., Result],
                                               registry_plain: RegistryServer) -> None:
    """``skopeo copy ... dir:`` (and ``podman save --format docker-dir``) is read by
    ``dir://``: the manifests as skopeo kept them, so every digest survives."""
    _, index = multi_platform_blobs(IMAGES, "v1")
    layout = local_multi["oci-layout"].removeprefix("oci-layout://")
    multi = tmp_path / "multi"
    run_tool("skopeo", "--insecure-policy", "copy", "--all", f"oci:{layout}:v1", f"dir:{multi}")
    result = run_cli("--insecure", "--all-platforms", "process", f"dir://{multi}",
                     f"registry://{registry_plain.host}/rules/from-skopeo-dir:v1")
    assert result.exit_code == 0, result.output
    assert get_manifest(registry_plain, "rules/from-skopeo-dir", "v1").content == index

    result = run_cli("process", f"dir://{multi}?platforms=linux/aarch64",
                     f"oci-layout://{tmp_path / 'some'}")
    assert result.exit_code == 0, result.output
    _, some = layout_top(tmp_path / "some")
    assert [m["platform"]["architecture"] for m in some["manifests"]] == ["arm64"]

    # one image, into an archive skopeo reads back with the same layers
    one = tmp_path / "one"
    image = sample_image("example.com/rules/one", "v1", n_layers=2, seed=70)
    write_oci_layout(str(tmp_path / "one-layout"), [image])
    run_tool("skopeo", "--insecure-policy", "copy", f"oci:{tmp_path / 'one-layout'}:v1",
             f"dir:{one}")
    result = run_cli("process", f"dir://{one}", f"tar://{tmp_path / 'one.tar'}")
    assert result.exit_code == 0, result.output
    inspected = json.loads(run_tool("skopeo", "inspect", f"docker-archive:{tmp_path / 'one.tar'}"))
    assert inspected["Layers"] == image.diff_ids
    result = run_cli("process", f"dir://{one}?index=1", f"tar://{tmp_path / 'two.tar'}")
    assert result.exit_code != 0 and "?index= does not apply" in result.output

    # a blob changed on disk is refused, and nothing is written
    manifest = json.loads((one / "manifest.json").read_bytes())
    blob = one / manifest["layers"][0]["digest"].split(":", 1)[1]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    result = run_cli("process", f"dir://{one}", f"tar://{tmp_path / 'bad.tar'}")
    assert result.exit_code != 0
    assert "mismatch" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "bad.tar").exists()


def test_a_zstd_chunked_layer_whose_diff_id_is_stale_is_refused_with_the_reason(
        tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    """skopeo 1.9 converts a layer to zstd:chunked (a tar written anew) but keeps the
    config's diff_id of the layer before: unpacking it must fail, and say why."""
    import zstandard

    from occystrap_core.api import ZSTD_CHUNKED_TOC

    before = make_layer({"etc/hello": "hello\n"})
    after = before + bytes(1024)  # the same files, other bytes
    blob = zstandard.ZstdCompressor().compress(after)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [sha(before)]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {
        "mediaType": mt.OCI_CONFIG, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": mt.OCI_LAYER_ZSTD, "digest": sha(blob), "size": len(blob),
                    "annotations": {ZSTD_CHUNKED_TOC: sha(b"toc")}}]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": mt.OCI_MANIFEST, "digest": sha(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}).encode()
    write_files(str(tmp_path / "layout"), {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index,
        **{f"blobs/sha256/{sha(b)[7:]}": b for b in (config, manifest, blob)}})

    result = run_cli("process", f"oci-layout://{tmp_path / 'layout'}",
                     f"tar://{tmp_path / 'out.tar'}")
    assert result.exit_code != 0
    assert "zstd:chunked" in result.output and "digest mismatch" in result.output
    assert not (tmp_path / "out.tar").exists()


# --- a Docker manifest list into an OCI layout ------------------------------------------

def push_files(server: RegistryServer, repo: str, files: dict[str, bytes], top: bytes,
               tag: str) -> None:
    """The blobs and manifests of layout ``files`` into ``repo``, ``top`` under ``tag``."""
    base = f"http://{server.host}/v2/{repo}"
    manifests = []
    for name, blob in files.items():
        if not name.startswith("blobs/") or blob == top:
            continue
        if b'"schemaVersion"' in blob:
            manifests.append(blob)
        else:
            upload_blob(base, blob)
    for manifest in manifests + [top]:  # after the blobs they name
        media_type = json.loads(manifest)["mediaType"]
        ref = tag if manifest is top else sha(manifest)
        httpx.put(f"{base}/manifests/{ref}", content=manifest,
                  headers={"Content-Type": media_type}).raise_for_status()


@pytest.fixture(scope="module")
def docker_list(registry_plain: RegistryServer) -> str:
    """Docker manifest lists of Docker manifests, in the registry: ``v1`` lists two
    platforms, ``one`` only amd64 (as a single-platform buildx push does)."""
    for tag, images in (("v1", IMAGES), ("one", IMAGES[:1])):
        files, index = multi_platform_blobs(images, tag, family="docker")
        push_files(registry_plain, "rules/dockerlist", files, index, tag)
        listed = get_manifest(registry_plain, "rules/dockerlist", tag)
        assert listed.headers["content-type"] == mt.DOCKER_MANIFEST_LIST
    return f"registry://{registry_plain.host}/rules/dockerlist"


def test_a_docker_list_becomes_an_oci_index_in_a_layout(tmp_path: Path, docker_list: str,
                                                        run_cli: Callable[..., Result],
                                                        skopeo: Callable[..., str]) -> None:
    out = tmp_path / "layout"
    result = run_cli("--insecure", "--all-platforms", "process", f"{docker_list}:v1",
                     f"oci-layout://{out}?ref=v1")
    assert result.exit_code == 0, result.output
    assert "verified" in result.stderr
    entry, index = layout_top(out)
    assert entry["mediaType"] == index["mediaType"] == mt.OCI_INDEX
    assert len(index["manifests"]) == 2
    for child in index["manifests"]:
        assert child["mediaType"] == mt.OCI_MANIFEST
        manifest = json.loads((out / "blobs/sha256" / child["digest"][7:]).read_bytes())
        assert manifest["mediaType"] == mt.OCI_MANIFEST
        assert manifest["config"]["mediaType"] == mt.OCI_CONFIG
        assert {l["mediaType"] for l in manifest["layers"]} == {mt.OCI_LAYER_GZIP}
    # skopeo reads every image of it
    skopeo("copy", "--all", f"oci:{out}:v1", f"oci:{tmp_path / 'skopeo'}:v1")
    for arch in ("amd64", "arm64"):
        inspected = json.loads(skopeo("--override-arch", arch, "inspect", f"oci:{out}:v1"))
        assert inspected["Architecture"] == arch


def test_umoci_reads_a_layout_written_from_a_docker_list(tmp_path: Path, docker_list: str,
                                                         run_cli: Callable[..., Result]
                                                         ) -> None:
    """umoci 0.4 picks no platform (two under one tag are "ambiguous" to it), so it reads
    the index of a single-platform list; it refuses a Docker list outright."""
    out = tmp_path / "layout"
    result = run_cli("--insecure", "--all-platforms", "process", f"{docker_list}:one",
                     f"oci-layout://{out}?ref=one")
    assert result.exit_code == 0, result.output
    entry, index = layout_top(out)
    assert entry["mediaType"] == index["mediaType"] == mt.OCI_INDEX
    stat = json.loads(run_tool("umoci", "stat", "--json", "--image", f"{out}:one"))
    assert [h["created_by"] for h in stat["history"]] == \
        [h["created_by"] for h in IMAGES[0].config_json["history"]]
    run_tool("umoci", "gc", "--layout", str(out))
    assert layout_top(out)[0] == entry  # nothing unreferenced was there to collect


def test_one_image_of_a_docker_list_becomes_an_oci_manifest(tmp_path: Path, docker_list: str,
                                                            run_cli: Callable[..., Result]
                                                            ) -> None:
    out = tmp_path / "layout"
    result = run_cli("--insecure", "--platform", "linux/arm64", "process", f"{docker_list}:v1",
                     f"oci-layout://{out}?ref=v1")
    assert result.exit_code == 0, result.output
    entry, manifest = layout_top(out)
    assert entry["mediaType"] == manifest["mediaType"] == mt.OCI_MANIFEST
    stat = json.loads(run_tool("umoci", "stat", "--json", "--image", f"{out}:v1"))
    assert len(stat["history"]) == 2


# --- zstd needs an OCI manifest ---------------------------------------------------------

def test_zstd_from_a_docker_source_is_pushed_under_an_oci_manifest(
        tmp_path: Path, registry_plain: RegistryServer, run_cli: Callable[..., Result],
        skopeo: Callable[..., str]) -> None:
    image = sample_image("example.com/rules/zstd", "v1", n_layers=2, seed=70)
    write_docker_archive(str(tmp_path / "in.tar"), [image])
    dest = f"{registry_plain.host}/rules/zstd"
    result = run_cli("--insecure", "process", f"tar://{tmp_path / 'in.tar'}",
                     f"registry://{dest}:v1?compression=zstd")
    assert result.exit_code == 0, result.output
    response = get_manifest(registry_plain, "rules/zstd", "v1")
    manifest = response.json()
    assert response.headers["content-type"] == manifest["mediaType"] == mt.OCI_MANIFEST
    assert manifest["config"]["mediaType"] == mt.OCI_CONFIG
    assert {l["mediaType"] for l in manifest["layers"]} == {mt.OCI_LAYER_ZSTD}
    # skopeo pulls it, decompressing every layer to the config's diff_ids
    skopeo("copy", *skopeo_args(registry_plain, "src"), f"docker://{dest}:v1",
           f"oci:{tmp_path / 'pulled'}:v1")
    pulled = json.loads(skopeo("inspect", "--config", f"oci:{tmp_path / 'pulled'}:v1"))
    assert pulled["rootfs"]["diff_ids"] == image.diff_ids
    check = run_cli("--insecure", "check", f"registry://{dest}:v1")
    assert check.exit_code == 0, check.output


def test_check_reports_zstd_under_a_docker_manifest(registry_plain: RegistryServer,
                                                    run_cli: Callable[..., Result]) -> None:
    import zstandard

    image = sample_image("example.com/rules/badzstd", "v1", n_layers=1, seed=71)
    layer = zstandard.ZstdCompressor().compress(image.layers[0])
    base = f"http://{registry_plain.host}/v2/rules/badzstd"
    for blob in (image.config, layer):
        upload_blob(base, blob)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
        "config": {"mediaType": mt.DOCKER_CONFIG, "digest": sha(image.config),
                   "size": len(image.config)},
        "layers": [{"mediaType": mt.OCI_LAYER_ZSTD, "digest": sha(layer),
                    "size": len(layer)}]}).encode()
    httpx.put(f"{base}/manifests/v1", content=manifest,
              headers={"Content-Type": mt.DOCKER_MANIFEST}).raise_for_status()
    result = run_cli("--insecure", "check", "-O", "json",
                     f"registry://{registry_plain.host}/rules/badzstd:v1")
    assert result.exit_code == 1, result.output
    errors = {r["check"] for r in json.loads(result.stdout)["results"] if r["severity"] == "error"}
    assert "zstd-docker" in errors


# --- a filtered re-push -----------------------------------------------------------------

def test_a_filtered_copy_to_a_destination_that_holds_the_image(
        tmp_path: Path, registry_plain: RegistryServer, run_cli: Callable[..., Result]) -> None:
    image = sample_image("example.com/rules/filtered", "v1", n_layers=2, seed=72)
    write_docker_archive(str(tmp_path / "in.tar"), [image])
    dest = f"registry://{registry_plain.host}/rules/filtered:v1"
    first = run_cli("--insecure", "process", f"tar://{tmp_path / 'in.tar'}", dest)
    assert first.exit_code == 0, first.output
    for _ in range(2):  # the second run finds what the first filtered run wrote
        result = run_cli("--insecure", "process", dest, dest, "-f", "normalize-timestamps")
        assert result.exit_code == 0, result.output
        assert "AssertionError" not in result.output
    config = json.loads(httpx.get(
        f"http://{registry_plain.host}/v2/rules/filtered/blobs/"
        f"{get_manifest(registry_plain, 'rules/filtered', 'v1').json()['config']['digest']}"
    ).content)
    assert all(h.get("created") in (None, "1970-01-01T00:00:00Z") for h in config["history"])


# --- artifacts --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifacts(registry_plain: RegistryServer, tmp_path_factory: Any) -> dict[str, str]:
    """Artifacts pushed by oras (the PyPI client): an SBOM with the empty config, an
    artifactType and a subject, and a Helm chart with its own config media type."""
    import oras.oci
    import oras.provider

    root = tmp_path_factory.mktemp("artifacts")
    image = sample_image("example.com/rules/app", "v1", n_layers=1, seed=73)
    write_docker_archive(str(root / "app.tar"), [image])
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--format", "oci",
                    *skopeo_args(registry_plain, "dest"), f"docker-archive:{root / 'app.tar'}",
                    f"docker://{registry_plain.host}/rules/app:v1"],
                   check=True, capture_output=True)
    subject_manifest = get_manifest(registry_plain, "rules/app", "v1")

    registry = oras.provider.Registry(hostname=registry_plain.host, insecure=True)
    cwd = os.getcwd()
    os.chdir(root)  # oras pushes files named relative to the working directory
    try:
        Path("chart.tgz").write_bytes(gzip.compress(b"a helm chart", mtime=0))
        Path("chart-config.json").write_text('{"name":"demo","version":"1.0.0"}')
        registry.push(f"{registry_plain.host}/rules/chart:1.0.0",
                      files=["chart.tgz:application/vnd.cncf.helm.chart.content.v1.tar+gzip"],
                      manifest_config="chart-config.json:application/vnd.cncf.helm.config.v1+json")
        Path("notes.txt").write_text("release notes\n")  # typed as a tar layer by default
        registry.push(f"{registry_plain.host}/rules/notes:1", files=["notes.txt"])

        # the SBOM: oras-py has no artifactType parameter, so its upload calls are
        # used one by one for a manifest that has one
        Path("sbom.spdx.json").write_text('{"spdxVersion": "SPDX-2.3"}')
        container = registry.get_container(f"{registry_plain.host}/rules/app:sbom")
        layer = oras.oci.NewLayer("sbom.spdx.json", media_type="application/spdx+json")
        layer["annotations"] = {"org.opencontainers.image.title": "sbom.spdx.json"}
        registry.upload_blob("sbom.spdx.json", container, layer)
        Path("empty.json").write_text("{}")
        empty = {"mediaType": mt.OCI_EMPTY, "digest": sha(b"{}"), "size": 2,
                 "data": "e30="}
        registry.upload_blob("empty.json", container, empty)
        sbom = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                "artifactType": "application/spdx+json", "config": empty, "layers": [layer],
                "subject": {"mediaType": mt.OCI_MANIFEST,
                            "digest": sha(subject_manifest.content),
                            "size": len(subject_manifest.content)},
                "annotations": {"org.opencontainers.image.created": "2026-11-27T00:00:00Z"}}
        registry.upload_manifest(sbom, container).raise_for_status()
    finally:
        os.chdir(cwd)
    return {"sbom": f"{registry_plain.host}/rules/app:sbom",
            "chart": f"{registry_plain.host}/rules/chart:1.0.0",
            "notes": f"{registry_plain.host}/rules/notes:1",
            "subject": sha(subject_manifest.content)}


@pytest.mark.parametrize("kind", ["sbom", "chart"])
def test_an_artifact_copies_byte_for_byte_through_layout_and_tar(
        tmp_path: Path, registry_plain: RegistryServer, artifacts: dict[str, str], kind: str,
        run_cli: Callable[..., Result]) -> None:
    repo, tag = artifacts[kind].split("/", 1)[1].rsplit(":", 1)
    original = get_manifest(registry_plain, repo, tag).content
    layout, archive = tmp_path / "layout", tmp_path / "artifact.tar"
    for source, dest in ((f"registry://{artifacts[kind]}", f"oci-layout://{layout}?ref={tag}"),
                         (f"oci-layout://{layout}?ref={tag}", f"tar://{archive}"),
                         (f"tar://{archive}", f"registry://{registry_plain.host}/rules/copied-"
                                              f"{kind}:{tag}")):
        result = run_cli("--insecure", "process", source, dest)
        assert result.exit_code == 0, f"{source} -> {dest}: {result.output}"
        assert "verified" in result.stderr, result.stderr
    assert get_manifest(registry_plain, f"rules/copied-{kind}", tag).content == original
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "index.json" in names and "manifest.json" not in names  # no docker load of it

    for uri in (f"registry://{artifacts[kind]}", f"oci-layout://{layout}", f"tar://{archive}"):
        info = json.loads(run_cli("--insecure", "info", "-O", "json", uri).stdout)
        check = run_cli("--insecure", "check", "-O", "json", uri)
        assert check.exit_code == 0, check.output
        report = json.loads(check.stdout)["results"]
        assert not [r for r in report if r["severity"] == "error"]
        assert info["manifest_digest"] == sha(original)
        if kind == "sbom":
            assert info["artifact_type"] == "application/spdx+json"
            assert info["config_media_type"] == mt.OCI_EMPTY
            assert info["subject"] == artifacts["subject"]
            assert any(r["check"] == "subject" for r in report)
        else:
            assert info["artifact_type"] == info["config_media_type"] == \
                "application/vnd.cncf.helm.config.v1+json"
        text = run_cli("--insecure", "info", uri).stdout
        assert f"Artifact:      {info['artifact_type']}" in text


def test_an_artifact_is_refused_where_only_file_systems_go(
        tmp_path: Path, artifacts: dict[str, str], run_cli: Callable[..., Result],
        expect_error: Callable[..., None]) -> None:
    source = f"registry://{artifacts['chart']}"
    for dest in (f"dir://{tmp_path / 'dir'}", f"oci-bundle://{tmp_path / 'bundle'}"):
        expect_error(run_cli("--insecure", "process", source, dest), "is an artifact")
        assert not os.path.exists(dest.split("://", 1)[1])
    expect_error(run_cli("--insecure", "process", source, f"oci-layout://{tmp_path / 'l'}",
                         "-f", "normalize-timestamps"), "normalize-timestamps", "artifact")


def test_unfiltered_artifacts_go_beneath_the_filters(
        registry_plain: RegistryServer, artifacts: dict[str, str]) -> None:
    """``library.copy(unfiltered_artifacts=True)``, as the proxy copies: an artifact
    goes on byte for byte where a filter would refuse it."""
    from occystrap_core import library

    original = get_manifest(registry_plain, "rules/chart", "1.0.0").content
    with library.session(insecure=True) as session:
        result = library.copy(f"registry://{artifacts['chart']}",
                              f"registry://{registry_plain.host}/rules/unfiltered-chart:1",
                              filters=["normalize-timestamps"], unfiltered_artifacts=True,
                              session=session)
    assert result.problems == []
    assert get_manifest(registry_plain, "rules/unfiltered-chart", "1").content == original


def test_a_file_typed_as_a_tar_layer_is_an_artifact_still(
        tmp_path: Path, registry_plain: RegistryServer, artifacts: dict[str, str],
        run_cli: Callable[..., Result], expect_error: Callable[..., None]) -> None:
    """oras types a plain file as an uncompressed OCI layer by default: a copy keeps
    its blob as it is (a registry output gzips uncompressed image layers), and a
    filter refuses it as any artifact instead of reading a text file as a tar."""
    source = f"registry://{artifacts['notes']}"
    original = get_manifest(registry_plain, "rules/notes", "1").content
    result = run_cli("--insecure", "process", source,
                     f"registry://{registry_plain.host}/rules/copied-notes:1")
    assert result.exit_code == 0, result.output
    assert get_manifest(registry_plain, "rules/copied-notes", "1").content == original
    expect_error(run_cli("--insecure", "process", source, f"oci-layout://{tmp_path / 'l'}",
                         "-f", "normalize-timestamps"), "normalize-timestamps", "artifact")


# --- no invented tag --------------------------------------------------------------------

def test_an_archive_of_a_digest_reference_has_no_tag(tmp_path: Path,
                                                     registry_plain: RegistryServer,
                                                     run_cli: Callable[..., Result]) -> None:
    image = sample_image("example.com/rules/bydigest", "v1", n_layers=1, seed=74)
    write_docker_archive(str(tmp_path / "in.tar"), [image])
    dest = f"{registry_plain.host}/rules/bydigest"
    assert run_cli("--insecure", "process", f"tar://{tmp_path / 'in.tar'}",
                   f"registry://{dest}:v1").exit_code == 0
    digest = sha(get_manifest(registry_plain, "rules/bydigest", "v1").content)
    result = run_cli("--insecure", "process", f"registry://{dest}@{digest}",
                     f"tar://{tmp_path / 'out.tar'}")
    assert result.exit_code == 0, result.output
    with tarfile.open(tmp_path / "out.tar") as tar:
        docker = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    assert docker[0]["RepoTags"] == []
    assert "annotations" not in index["manifests"][0]
    # a tagged source keeps its tag
    result = run_cli("--insecure", "process", f"registry://{dest}:v1",
                     f"tar://{tmp_path / 'tagged.tar'}")
    with tarfile.open(tmp_path / "tagged.tar") as tar:
        docker = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert docker[0]["RepoTags"] == [f"{dest}:v1"]


# --- oci-bundle config.json: the image-spec conversion, as umoci does it --------------

def test_bundle_config_follows_the_conversion_rules_like_umoci(
        tmp_path: Path, run_cli: Callable[..., Result]) -> None:
    passwd = "root:x:0:0:root:/root:/bin/sh\nsvc:x:1000:1000::/home/svc:/bin/sh\n"
    layer = make_layer({"etc/passwd": passwd, "etc/group": "root:x:0:\nsvc:x:1000:\n",
                        "bin/sh": "#!/bin/true\n"})
    config = {"architecture": "amd64", "os": "linux", "created": "2026-01-02T03:04:05Z",
              "author": "occystrap tests",
              "config": {"User": "svc", "Labels": {"org.example.team": "images"},
                         "Volumes": {"/data": {}, "/cache": {}},
                         "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
                         "StopSignal": "SIGTERM"},
              "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
              "history": [{"created_by": "test"}]}
    from occystrap_core.testing.images import SampleImage

    image = SampleImage("example.com/rules/bundle", "v1", (layer,),
                        json.dumps(config).encode())
    write_oci_layout(str(tmp_path / "layout"), [image], refs=["v1"])
    bundle = tmp_path / "bundle"
    result = run_cli("process", f"oci-layout://{tmp_path / 'layout'}", f"oci-bundle://{bundle}")
    assert result.exit_code == 0, result.output
    ours = json.loads((bundle / "config.json").read_text())
    run_tool("umoci", "unpack", "--image", f"{tmp_path / 'layout'}:v1", str(tmp_path / "umoci"))
    theirs = json.loads((tmp_path / "umoci" / "config.json").read_text())

    assert ours["process"]["args"] == theirs["process"]["args"] == ["sh"]
    # umoci adds TERM=xterm for its terminal; ours runs without one
    assert ours["process"]["env"] == [e for e in theirs["process"]["env"]
                                      if not e.startswith("TERM=")]
    assert ours["process"]["cwd"] == theirs["process"]["cwd"]
    assert (ours["process"]["user"]["uid"], ours["process"]["user"]["gid"]) == \
        (theirs["process"]["user"]["uid"], theirs["process"]["user"]["gid"]) == (1000, 1000)
    assert {k: v for k, v in theirs["annotations"].items() if v} == ours["annotations"]

    def volumes(spec: dict[str, Any]) -> list[tuple[str, str]]:
        return sorted((m["destination"], m["type"]) for m in spec["mounts"]
                      if m["destination"] in ("/data", "/cache"))

    assert volumes(ours) == volumes(theirs) == [("/cache", "tmpfs"), ("/data", "tmpfs")]
