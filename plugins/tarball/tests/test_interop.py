"""skopeo and podman read what occystrap writes, and occystrap reads what they write."""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from occystrap_core.testing.images import (
    build_docker_archive,
    sample_image,
    write_oci_layout,
)


def test_skopeo_reads_our_archive(tmp_path, skopeo, process_ok, info_json):
    src, out = str(tmp_path / "in.tar"), str(tmp_path / "out.tar")
    built = build_docker_archive(src, name="127.0.0.1:5000/team/app", tag="v1", n_layers=3)
    process_ok(f"tar://{src}", f"tar://{out}")

    inspected = json.loads(skopeo("inspect", f"docker-archive:{out}"))
    assert inspected["Layers"] == built["diff_ids"]
    assert (inspected["Os"], inspected["Architecture"]) == ("linux", "amd64")
    config = skopeo("inspect", "--raw", "--config", f"docker-archive:{out}").encode()
    assert config == built["image"].config
    # by its full RepoTag, and as an OCI archive
    skopeo("inspect", f"docker-archive:{out}:127.0.0.1:5000/team/app:v1")
    assert json.loads(skopeo("inspect", f"oci-archive:{out}"))["Layers"] == built["diff_ids"]

    # skopeo can read the layers themselves
    skopeo("copy", f"docker-archive:{out}", f"oci:{tmp_path / 'copied'}:v1")
    info = info_json(f"oci-layout://{tmp_path / 'copied'}")
    assert [l["diff_id"] for l in info["layers"]] == built["diff_ids"]


def test_skopeo_reads_our_layout(tmp_path, skopeo, process_ok):
    a, b = str(tmp_path / "a.tar"), str(tmp_path / "b.tar")
    built_a = build_docker_archive(a, tag="a")
    built_b = build_docker_archive(b, tag="b", seed=3)
    layout = tmp_path / "layout"
    process_ok(f"tar://{a}", f"oci-layout://{layout}")
    assert json.loads(skopeo("inspect", f"oci:{layout}"))["Layers"] == built_a["diff_ids"]
    process_ok(f"tar://{b}", f"oci-layout://{layout}")
    assert json.loads(skopeo("inspect", f"oci:{layout}:b"))["Layers"] == built_b["diff_ids"]
    skopeo("copy", f"oci:{layout}:a", f"docker-archive:{tmp_path / 'back.tar'}")


def test_we_read_what_skopeo_writes(tmp_path, skopeo, info_json, process_ok):
    image = sample_image("example.com/demo/app", "v1", n_layers=2)
    src = tmp_path / "src"
    write_oci_layout(str(src), [image])

    skopeo("copy", f"oci:{src}:v1", f"docker-archive:{tmp_path / 'd.tar'}:reg.example:5000/x/y:t")
    info = info_json(f"tar://{tmp_path / 'd.tar'}")  # podman-style: symlinked layer.tar
    assert (info["name"], info["tag"]) == ("reg.example:5000/x/y", "t")
    assert [l["diff_id"] for l in info["layers"]] == image.diff_ids

    skopeo("copy", f"oci:{src}:v1", f"oci-archive:{tmp_path / 'o.tar'}:myref")
    info = info_json(f"tar://{tmp_path / 'o.tar'}")
    assert info["tag"] == "myref" and info["config_digest"] == image.config_digest

    skopeo("copy", f"oci:{src}:v1", f"oci:{tmp_path / 'dir2'}:other")
    info = info_json(f"oci-layout://{tmp_path / 'dir2'}?ref=other")
    assert [l["diff_id"] for l in info["layers"]] == image.diff_ids

    # and converts all three to archives skopeo reads back
    for uri in (f"tar://{tmp_path / 'd.tar'}", f"tar://{tmp_path / 'o.tar'}",
                f"oci-layout://{tmp_path / 'dir2'}"):
        out = tmp_path / "round.tar"
        process_ok(uri, f"tar://{out}")
        assert json.loads(skopeo("inspect", f"docker-archive:{out}"))["Layers"] == image.diff_ids


def test_podman_loads_our_archive_and_we_read_its_save(tmp_path, process_ok, info_json):
    if os.geteuid() != 0:
        pytest.skip("podman with its own --root needs root")
    if shutil.which("podman") is None:  # installed by scripts/setup.sh: a skip would hide it
        pytest.fail("podman is not installed (scripts/setup.sh installs it)")
    runroot = tempfile.mkdtemp(prefix="occy-run-")  # podman wants a short runroot path
    store = ["--root", str(tmp_path / "root"), "--runroot", runroot, "--storage-driver", "vfs"]

    def podman(*args: str) -> str:
        result = subprocess.run(["podman", *store, *args], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    src, out = str(tmp_path / "in.tar"), str(tmp_path / "out.tar")
    built = build_docker_archive(src, name="example.com/team/app", tag="v9")
    process_ok(f"tar://{src}", f"tar://{out}")
    try:
        assert "example.com/team/app:v9" in podman("load", "-i", out)
        podman("save", "--format", "docker-archive", "-o", str(tmp_path / "saved.tar"),
               "example.com/team/app:v9")
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
    info = info_json(f"tar://{tmp_path / 'saved.tar'}")  # podman's symlinked layout
    assert (info["name"], info["tag"]) == ("example.com/team/app", "v9")
    assert [l["diff_id"] for l in info["layers"]] == built["diff_ids"]
