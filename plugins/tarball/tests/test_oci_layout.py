"""oci-layout:// input and output."""

import gzip
import hashlib
import json
import os
import subprocess

import pytest

from occystrap_core import mediatypes as mt
from occystrap_core import pipeline
from occystrap_core.context import Context
from occystrap_core.testing.images import (
    SampleImage,
    build_docker_archive,
    make_layer,
    oci_blobs,
    sample_image,
    write_oci_layout,
)
from occystrap_tarball.oci_layout_output import LayoutOutput


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, names in os.walk(root) for f in names)


def _index(path):
    with open(os.path.join(path, "index.json")) as f:
        return json.load(f)


def test_compressed_blobs_are_copied_byte_for_byte(tmp_path, process_ok, info_json):
    src, out = tmp_path / "src", tmp_path / "out"
    image = sample_image(tag="v1", n_layers=3)
    write_oci_layout(str(src), [image])
    process_ok(f"oci-layout://{src}", f"oci-layout://{out}")
    assert _files(out) == _files(src)
    for name in _files(src):
        if name.startswith("blobs"):
            assert (out / name).read_bytes() == (src / name).read_bytes()
    assert info_json(f"oci-layout://{out}")["manifest_digest"] == \
        info_json(f"oci-layout://{src}")["manifest_digest"]


def test_docker_source_becomes_oci_media_types(tmp_path, process_ok):
    src, out = str(tmp_path / "in.tar"), tmp_path / "out"
    built = build_docker_archive(src)
    process_ok(f"tar://{src}", f"oci-layout://{out}")
    entry = _index(out)["manifests"][0]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    manifest = json.loads((out / "blobs" / "sha256" / entry["digest"][7:]).read_bytes())
    assert manifest["mediaType"] == mt.OCI_MANIFEST
    assert manifest["config"]["mediaType"] == mt.OCI_CONFIG
    assert [(l["mediaType"], l["digest"]) for l in manifest["layers"]] == \
        [(mt.OCI_LAYER_TAR, d) for d in built["diff_ids"]]


def test_several_refs_in_one_layout(tmp_path, process_ok, info_json, run_cli, expect_error):
    a, b = str(tmp_path / "a.tar"), str(tmp_path / "b.tar")
    built_a = build_docker_archive(a, tag="a")
    built_b = build_docker_archive(b, tag="b", seed=4)
    out = tmp_path / "out"
    process_ok(f"tar://{a}", f"oci-layout://{out}")
    process_ok(f"tar://{b}", f"oci-layout://{out}?ref=second")
    process_ok(f"tar://{a}", f"oci-layout://{out}")  # same ref again: replaced, not duplicated
    refs = [e["annotations"]["org.opencontainers.image.ref.name"]
            for e in _index(out)["manifests"]]
    assert sorted(refs) == ["a", "second"]
    assert info_json(f"oci-layout://{out}?ref=a")["config_digest"] == built_a["config_digest"]
    assert info_json(f"oci-layout://{out}?ref=second")["config_digest"] == \
        built_b["config_digest"]
    expect_error(run_cli("info", f"oci-layout://{out}"), "holds 2 images", "?ref=NAME")
    expect_error(run_cli("info", f"oci-layout://{out}?ref=zzz"), "no image 'zzz'")


@pytest.mark.parametrize("ref", ["-x", "bad ref", "a//b", "v1__2", "x/"])
def test_a_ref_other_tools_cannot_name_is_refused(tmp_path, run_cli, expect_error, ref):
    # skopeo (oci:DIR:REF) and umoci (--image DIR:REF) refuse refs outside the
    # image-spec's ref.name grammar: an image listed under one could not be read back
    src = str(tmp_path / "a.tar")
    build_docker_archive(src)
    out = tmp_path / "out"
    expect_error(run_cli("process", f"tar://{src}", f"oci-layout://{out}?ref={ref}"), "ref")
    assert not out.exists()


@pytest.mark.parametrize("ref", ["v1.2-rc_3", "team/app:1", "a--b", "x@y", "1.0.0+build"])
def test_refs_of_the_grammar_are_read_back_by_skopeo_and_umoci(tmp_path, process_ok, ref):
    src = str(tmp_path / "a.tar")
    build_docker_archive(src)
    out = tmp_path / "out"
    process_ok(f"tar://{src}", f"oci-layout://{out}?ref={ref}")
    for cmd in (["skopeo", "inspect", "--raw", f"oci:{out}:{ref}"],
                ["umoci", "stat", "--image", f"{out}:{ref}"]):
        found = subprocess.run(cmd, capture_output=True, text=True)
        assert found.returncode == 0, found.stderr


def test_nested_index_picks_platform(tmp_path, run_cli):
    amd = sample_image(tag="multi", seed=1)
    arm = sample_image(tag="multi", seed=2, architecture="arm64")
    files, _ = oci_blobs([amd, arm])
    manifests = json.loads(files.pop("index.json"))["manifests"]
    for m, arch in zip(manifests, ("amd64", "arm64"), strict=True):
        m.pop("annotations")
        m["platform"] = {"os": "linux", "architecture": arch}
    nested = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                         "manifests": manifests}).encode()
    nested_digest = "sha256:" + hashlib.sha256(nested).hexdigest()
    files[f"blobs/sha256/{nested_digest[7:]}"] = nested
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": mt.OCI_INDEX, "digest": nested_digest, "size": len(nested),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}).encode()
    for name, data in files.items():
        (tmp_path / "l" / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "l" / name).write_bytes(data)
    for platform, image in (("linux/amd64", amd), ("linux/arm64", arm)):
        result = run_cli("--platform", platform, "info", "-O", "json",
                         f"oci-layout://{tmp_path / 'l'}")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["config_digest"] == image.config_digest
    result = run_cli("--platform", "linux/s390x", "info", f"oci-layout://{tmp_path / 'l'}")
    assert result.exit_code == 1
    assert "no image for platform linux/s390x (available: linux/amd64, linux/arm64)" \
        in result.stderr


def test_corrupt_layouts(tmp_path, run_cli, expect_error):
    image = sample_image()
    write_oci_layout(str(tmp_path / "l"), [image])
    config = tmp_path / "l" / "blobs" / "sha256" / image.config_digest[7:]
    config.write_bytes(config.read_bytes().replace(b"SAMPLE_SEED=0", b"SAMPLE_SEED=1"))
    expect_error(run_cli("info", f"oci-layout://{tmp_path / 'l'}"), "image config",
                 "digest mismatch")
    config.unlink()
    expect_error(run_cli("info", f"oci-layout://{tmp_path / 'l'}"), "is missing")
    expect_error(run_cli("info", f"oci-layout://{tmp_path / 'nowhere'}"), "not a directory")
    (tmp_path / "empty").mkdir()
    expect_error(run_cli("info", f"oci-layout://{tmp_path / 'empty'}"), "no index.json")


def test_bad_layer_blob_is_caught(tmp_path, run_cli, expect_error):
    image = sample_image()
    write_oci_layout(str(tmp_path / "l"), [image])
    blob = tmp_path / "l" / "blobs" / "sha256" / \
        hashlib.sha256(gzip.compress(image.layers[1], mtime=0)).hexdigest()
    blob.write_bytes(gzip.compress(make_layer({"evil": "1"}), mtime=0))
    expect_error(run_cli("process", f"oci-layout://{tmp_path / 'l'}",
                         f"tar://{tmp_path / 'o.tar'}"), "layer 1 blob")
    assert not (tmp_path / "o.tar").exists()


def test_failed_write_leaves_layout_as_it_was(tmp_path, process_ok, run_cli, expect_error):
    good, bad = str(tmp_path / "good.tar"), str(tmp_path / "bad.tar")
    build_docker_archive(good)
    image = sample_image(seed=7)
    from occystrap_core.testing.images import write_docker_archive
    write_docker_archive(bad, [SampleImage("x", "bad", (image.layers[0], make_layer({"a": "b"})),
                                           image.config)])
    out = tmp_path / "out"
    process_ok(f"tar://{good}", f"oci-layout://{out}")
    before = {n: (out / n).read_bytes() for n in _files(out)}
    expect_error(run_cli("process", f"tar://{bad}", f"oci-layout://{out}"), "digest mismatch")
    assert {n: (out / n).read_bytes() for n in _files(out)} == before
    expect_error(run_cli("process", f"tar://{bad}", f"oci-layout://{tmp_path / 'new'}"),
                 "digest mismatch")
    assert not (tmp_path / "new").exists()


def test_refuses_a_directory_that_is_not_a_layout(tmp_path, run_cli, expect_error):
    src = str(tmp_path / "in.tar")
    build_docker_archive(src)
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file").write_text("mine")
    expect_error(run_cli("process", f"tar://{src}", f"oci-layout://{tmp_path / 'stuff'}"),
                 "not an OCI image layout")
    assert os.listdir(tmp_path / "stuff") == ["file"]


def _blob(root, digest):
    return root / "blobs" / "sha256" / digest[7:]


def test_verify_rereads_the_layout(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_oci_layout(str(src), [sample_image(n_layers=2)])
    with Context() as ctx:
        output = pipeline.build_output(ctx, f"oci-layout://{out}")
        with pipeline.build_input(ctx, f"oci-layout://{src}") as source:
            pipeline.run(ctx, source, output)
        assert output.verify() == []
        ctx.settings.verify_full = True
        assert output.verify() == []  # gzip layers decompressed against their diff_ids

        manifest = json.loads(_blob(out, _index(out)["manifests"][0]["digest"]).read_bytes())
        layer = _blob(out, manifest["layers"][0]["digest"])
        data = layer.read_bytes()
        layer.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
        ctx.settings.verify_full = False
        assert output.verify() == []  # the cheap default checks sizes, not contents
        ctx.settings.verify_full = True
        assert [p for p in output.verify() if "layer 0 blob: digest mismatch" in p]

        ctx.settings.verify_full = False
        _blob(out, manifest["config"]["digest"]).unlink()
        assert [p for p in output.verify() if "config blob" in p and "missing" in p]


def test_cli_verify_reports_a_missing_blob(tmp_path, run_cli, monkeypatch):
    src, out = str(tmp_path / "in.tar"), tmp_path / "out"
    build_docker_archive(src)
    result = run_cli("process", f"tar://{src}", f"oci-layout://{out}")
    assert result.exit_code == 0 and result.stderr.rstrip().endswith(", verified")

    finish = LayoutOutput.finish

    def finish_then_tamper(self, image):
        written = finish(self, image)
        manifest = json.loads(_blob(out, written.manifest_digest).read_bytes())
        _blob(out, manifest["layers"][1]["digest"]).unlink()
        return written

    monkeypatch.setattr(LayoutOutput, "finish", finish_then_tamper)
    result = run_cli("process", f"tar://{src}", f"oci-layout://{out}?ref=again")
    assert result.exit_code == 1
    assert "Verify: manifest layer 1: blob sha256:" in result.stderr
    assert "is missing" in result.stderr and "verify failed (1 problems)" in result.stderr
