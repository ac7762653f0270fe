"""What occystrap 0.4.17 users type, with today's behaviour: ``--compression`` and
``OCCYSTRAP_COMPRESSION``, its scheme names (``oci://``, ``file://``,
``directory://``), ``dir://`` read back as a source, ``?os=&arch=&variant=``, and
``info -O json``'s field names, and its deprecated commands as hidden aliases.
docs/migrating.md maps them all; tests/test_migrating.py runs its examples."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from occystrap_core import digest as digests
from occystrap_core import mediatypes as mt
from occystrap_core.testing import images
from occystrap_core.testing.registry import RegistryServer, push_sample_image, skopeo_args


@pytest.fixture
def archive(tmp_path: Path) -> dict[str, Any]:
    return images.build_docker_archive(str(tmp_path / "app.tar"), name="example.com/demo/app",
                                       tag="v1")


def layer_types(skopeo: Callable[..., str], server: RegistryServer, ref: str) -> list[str]:
    manifest = json.loads(skopeo("inspect", "--raw", *skopeo_args(server),
                                 f"docker://{server.host}/{ref}"))
    return [layer["mediaType"] for layer in manifest["layers"]]


# --compression and OCCYSTRAP_COMPRESSION


@pytest.mark.parametrize("how", ["env", "option"])
def test_compression_zstd_reaches_the_registry(how: str, registry_plain: RegistryServer,
                                               archive: dict[str, Any], run_cli: Any,
                                               skopeo: Callable[..., str]) -> None:
    dest = f"registry://{registry_plain.host}/from0417/zstd-{how}:v1"
    if how == "env":
        result = run_cli("--insecure", "process", f"tar://{archive['path']}", dest,
                         env={"OCCYSTRAP_COMPRESSION": "zstd"})
    else:
        result = run_cli("--insecure", "--compression", "zstd", "process",
                         f"tar://{archive['path']}", dest)
    assert result.exit_code == 0, result.output
    types = layer_types(skopeo, registry_plain, f"from0417/zstd-{how}:v1")
    assert types == ["application/vnd.oci.image.layer.v1.tar+zstd"] * 2
    # and the pushed image reads back to the same file systems
    skopeo("copy", *skopeo_args(registry_plain, "src"),
           f"docker://{registry_plain.host}/from0417/zstd-{how}:v1",
           f"oci:{archive['path']}.oci:v1")


def test_the_uri_option_overrides_the_variable(registry_plain: RegistryServer,
                                               archive: dict[str, Any], run_cli: Any,
                                               skopeo: Callable[..., str]) -> None:
    dest = f"registry://{registry_plain.host}/from0417/override:v1?compression=gzip"
    result = run_cli("--insecure", "process", f"tar://{archive['path']}", dest,
                     env={"OCCYSTRAP_COMPRESSION": "zstd"})
    assert result.exit_code == 0, result.output
    assert all(t.endswith("gzip") for t in
               layer_types(skopeo, registry_plain, "from0417/override:v1"))


def test_a_bad_compression_is_one_error_line(registry_plain: RegistryServer,
                                             archive: dict[str, Any], run_cli: Any,
                                             expect_error: Any) -> None:
    result = run_cli("--insecure", "process", f"tar://{archive['path']}",
                     f"registry://{registry_plain.host}/from0417/bad:v1",
                     env={"OCCYSTRAP_COMPRESSION": "lz4"})
    expect_error(result, "--compression: compression must be one of", "'lz4'")


# 0.4.17's scheme names


def test_oci_is_oci_bundle_with_one_note(archive: dict[str, Any], run_cli: Any,
                                         tmp_path: Path) -> None:
    result = run_cli("process", f"tar://{archive['path']}", f"oci://{tmp_path / 'bundle'}")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("Note: oci:// is oci-bundle:// now") == 1
    assert (tmp_path / "bundle" / "rootfs" / "etc").is_dir()
    assert json.loads((tmp_path / "bundle" / "config.json").read_text())["ociVersion"]


def test_file_and_directory_are_tar_and_dir(archive: dict[str, Any], run_cli: Any,
                                            tmp_path: Path) -> None:
    result = run_cli("process", f"file://{archive['path']}", f"directory://{tmp_path / 'd'}")
    assert result.exit_code == 0, result.output
    assert "Note: file:// is tar:// now" in result.stderr
    assert "Note: directory:// is dir:// now" in result.stderr
    assert (tmp_path / "d" / "manifest.json").is_file()


def test_oci_is_no_source(archive: dict[str, Any], run_cli: Any, tmp_path: Path,
                          expect_error: Any) -> None:
    expect_error(run_cli("info", f"oci://{tmp_path}"), "oci")


# dir:// as a source


def test_registry_dir_registry_round_trip(registry_plain: RegistryServer, run_cli: Any,
                                          skopeo: Callable[..., str], tmp_path: Path) -> None:
    pushed = push_sample_image(registry_plain, "from0417/round", "v1")
    host, where = registry_plain.host, tmp_path / "d"
    result = run_cli("--insecure", "process", f"registry://{host}/from0417/round:v1",
                     f"dir://{where}")
    assert result.exit_code == 0, result.output
    result = run_cli("--insecure", "process", f"dir://{where}",
                     f"registry://{host}/from0417/round-back:v1")
    assert result.exit_code == 0, result.output
    back = json.loads(skopeo("inspect", *skopeo_args(registry_plain),
                             f"docker://{host}/from0417/round-back:v1"))
    config = json.loads(skopeo("inspect", "--config", *skopeo_args(registry_plain),
                               f"docker://{host}/from0417/round-back:v1"))
    assert config["rootfs"]["diff_ids"] == list(pushed.diff_ids)
    assert back["Name"].endswith("from0417/round-back")
    # the dir is a tar away from a docker-save archive skopeo reads
    result = run_cli("process", f"dir://{where}", f"tar://{tmp_path / 'x.tar'}")
    assert result.exit_code == 0, result.output
    archived = json.loads(skopeo("inspect", "--config", f"docker-archive:{tmp_path / 'x.tar'}"))
    assert archived["rootfs"]["diff_ids"] == list(pushed.diff_ids)


def test_unique_names_pick_one_image(tmp_path: Path, run_cli: Any, info_json: Any,
                                     expect_error: Any) -> None:
    where = tmp_path / "d"
    built = []
    for i, name in enumerate(("example.com/a", "example.com/b")):
        built.append(images.build_docker_archive(str(tmp_path / f"{i}.tar"), name=name,
                                                 tag="v1", seed=i))
        result = run_cli("process", f"tar://{built[-1]['path']}",
                         f"dir://{where}?unique_names=true")
        assert result.exit_code == 0, result.output
    expect_error(run_cli("info", f"dir://{where}"), "holds 2 images",
                 "example.com/a:v1", "example.com/b:v1")
    picked = info_json(f"dir://{where}?image=example.com/b:v1")
    assert picked["config_digest"] == built[1]["config_digest"]
    assert info_json(f"dir://{where}?index=0")["config_digest"] == built[0]["config_digest"]


def test_a_changed_layer_is_refused(archive: dict[str, Any], run_cli: Any, tmp_path: Path,
                                    expect_error: Any) -> None:
    where = tmp_path / "d"
    assert run_cli("process", f"tar://{archive['path']}", f"dir://{where}").exit_code == 0
    layer = where / digests.hex_of(archive["diff_ids"][1]) / "layer.tar"
    data = bytearray(layer.read_bytes())
    data[600] ^= 1
    layer.write_bytes(bytes(data))
    out = tmp_path / "out.tar"
    expect_error(run_cli("process", f"dir://{where}", f"tar://{out}"), "digest")
    assert not out.exists()


def test_not_a_dir_layout(tmp_path: Path, run_cli: Any, expect_error: Any) -> None:
    expect_error(run_cli("info", f"dir://{tmp_path}"), "neither manifest.json nor catalog.json")


# ?os= ?arch= ?variant=


@pytest.fixture
def multi_layout(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """An OCI layout of one amd64 + arm64/v8 image; the config digest of each."""
    parts = [images.sample_image(architecture="amd64", seed=1),
             images.sample_image(architecture="arm64", variant="v8", seed=2)]
    files, _ = images.multi_platform_blobs(parts)
    images.write_files(str(tmp_path / "multi"), files)
    return str(tmp_path / "multi"), {"amd64": parts[0].config_digest,
                                     "arm64": parts[1].config_digest}


@pytest.mark.parametrize("query, arch", [("os=linux&arch=arm64", "arm64"),
                                         ("architecture=arm64&variant=v8", "arm64"),
                                         ("arch=amd64", "amd64")])
def test_platform_parts_in_the_uri(query: str, arch: str, multi_layout: Any, run_cli: Any) -> None:
    path, configs = multi_layout
    # the URI's parts override the global platform
    result = run_cli("--platform", "linux/s390x", "info", "-O", "json",
                     f"oci-layout://{path}?ref=v1&{query}")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config_digest"] == configs[arch]


def test_an_unknown_platform_part_names_what_there_is(multi_layout: Any, run_cli: Any,
                                                      expect_error: Any) -> None:
    expect_error(run_cli("info", f"oci-layout://{multi_layout[0]}?ref=v1&arch=s390x"),
                 "linux/s390x", "linux/amd64")


# info -O json: 0.4.17's names alongside today's


def test_info_keeps_0417_field_names(archive: dict[str, Any], info_json: Any) -> None:
    info = info_json(f"tar://{archive['path']}")
    assert info["image"] == info["name"] == "example.com/demo/app"
    assert info["tag"] == "v1"
    assert info["diff_ids"] == archive["diff_ids"]
    assert info["total_compressed_size"] == sum(l["size"] for l in info["layers"])
    assert info["media_type"] == info["manifest_media_type"]
    assert info["empty_layer_count"] == 0
    for layer in info["layers"]:
        assert {"index", "digest", "size", "media_type", "compression", "diff_id",
                "created_by"} <= layer.keys()


def test_info_of_an_index_lists_its_platforms(registry_plain: RegistryServer, run_cli: Any,
                                              multi_layout: Any,
                                              skopeo: Callable[..., str]) -> None:
    path, configs = multi_layout
    host = registry_plain.host
    skopeo("copy", "--all", "--preserve-digests", *skopeo_args(registry_plain, "dest"),
           f"oci:{path}:v1", f"docker://{host}/from0417/multi:v1")
    result = run_cli("--insecure", "info", "-O", "json",
                     f"registry://{host}/from0417/multi:v1?arch=arm64")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["config_digest"] == configs["arm64"]
    assert info["schema_version"] == 2
    assert info["platforms"] == ["linux/amd64", "linux/arm64/v8"]
    index = json.loads(open(os.path.join(path, "index.json")).read())["manifests"][0]
    listed = json.loads(open(os.path.join(path, "blobs", "sha256",
                                          index["digest"].split(":")[1])).read())
    assert info["index_manifests"] == [
        {"digest": e["digest"], "media_type": e["mediaType"], **e["platform"]}
        for e in listed["manifests"]]


# the deprecated commands


def test_deprecated_commands_are_hidden(run_cli: Any) -> None:
    shown = run_cli("--help").output
    assert "process" in shown and "fetch-to-tarfile" not in shown
    helped = run_cli("fetch-to-tarfile", "--help")
    assert helped.exit_code == 0
    assert "process registry://REGISTRY/IMAGE:TAG tar://TARFILE" in helped.output


def test_a_failing_alias_is_its_note_and_one_error(run_cli: Any, tmp_path: Path,
                                                   expect_error: Any) -> None:
    result = run_cli("search-layers-tarfile", str(tmp_path / "missing.tar"), "x")
    assert result.exit_code == 1
    note, error = result.stderr.splitlines()
    assert note == (f"Note: 'search-layers-tarfile' is deprecated; this runs: occystrap search "
                    f"tar://{tmp_path}/missing.tar x")
    assert error == f"Error: {tmp_path}/missing.tar does not exist"


def test_an_alias_never_shows_a_password(registry_basic: RegistryServer, run_cli: Any,
                                         tmp_path: Path) -> None:
    push_sample_image(registry_basic, "from0417/secret", "v1")
    user, password = registry_basic.username or "", registry_basic.password or ""
    result = run_cli("--ca-cert", registry_basic.ca_cert or "", "fetch-to-tarfile",
                     f"{user}:{password}@{registry_basic.host}", "from0417/secret", "v1",
                     str(tmp_path / "x.tar"))
    assert result.exit_code == 0, result.output
    assert password not in result.output
    assert f"registry://{user}:REDACTED@{registry_basic.host}/from0417/secret:v1" in result.stderr


def test_alias_usage_errors_are_click_s(run_cli: Any) -> None:
    result = run_cli("fetch-to-tarfile", "only-a-registry")
    assert result.exit_code == 2
    assert "Missing argument 'IMAGE'" in result.stderr and "Traceback" not in result.output


def test_recreate_image_names_the_repository_only(registry_plain: RegistryServer, run_cli: Any,
                                                  tmp_path: Path, skopeo: Callable[..., str]
                                                  ) -> None:
    pushed = push_sample_image(registry_plain, "from0417/recreate", "v2")
    where = tmp_path / "d"
    result = run_cli("--insecure", "fetch-to-extracted", registry_plain.host, "from0417/recreate",
                     "v2", str(where), "--use-unique-names")
    assert result.exit_code == 0, result.output
    result = run_cli("recreate-image", str(where), "from0417/recreate", "v2",
                     str(tmp_path / "r.tar"))
    assert result.exit_code == 0, result.output
    config = json.loads(skopeo("inspect", "--config", f"docker-archive:{tmp_path / 'r.tar'}"))
    assert config["rootfs"]["diff_ids"] == list(pushed.diff_ids)


@pytest.mark.parametrize("manifest, message", [
    ("[]", "holds no image"),
    ('[{"Config": "../outside.json", "Layers": []}]', "outside the directory"),
    ('[{"Config": "c.json", "Layers": ["/etc/passwd"]}]', "outside the directory"),
    ("{}", "not a JSON list"),
])
def test_a_bad_dir_manifest_is_one_error(manifest: str, message: str, tmp_path: Path,
                                         run_cli: Any, expect_error: Any) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "manifest.json").write_text(manifest)
    expect_error(run_cli("process", f"dir://{tmp_path / 'd'}", f"tar://{tmp_path / 'o.tar'}"),
                 message)
    assert not (tmp_path / "o.tar").exists()


@pytest.mark.parametrize("top", ["manifest", "index"])
def test_a_skopeo_dir_naming_paths_for_digests_is_one_error(top: str, tmp_path: Path,
                                                            run_cli: Any,
                                                            expect_error: Any) -> None:
    """A ``skopeo copy ... dir:`` directory names its files by digest: a "digest" that
    is a path never reaches the file system."""
    bad = "sha256:../../../etc/passwd"
    if top == "manifest":
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "layers": [],
               "config": {"mediaType": mt.OCI_CONFIG, "digest": bad, "size": 10}}
    else:
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
            {"mediaType": mt.OCI_MANIFEST, "digest": bad, "size": 10,
             "platform": {"os": "linux", "architecture": "amd64"}}]}
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "version").write_text("Directory Transport Version: 1.1\n")
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(doc))
    expect_error(run_cli("process", f"dir://{tmp_path / 'd'}", f"tar://{tmp_path / 'o.tar'}"),
                 bad)
    assert not (tmp_path / "o.tar").exists()
