"""tar:// input: docker-save layouts, OCI archives, selection and corrupt archives."""

import io
import json
import os
import tarfile

import pytest

from occystrap_core.testing.images import (
    build_docker_archive,
    make_layer,
    sample_image,
    write_docker_archive,
    write_oci_archive,
)


@pytest.mark.parametrize("layout", ["legacy", "podman", "docker25"])
@pytest.mark.parametrize("compression", [None, "gzip"])
def test_docker_archive_layouts(tmp_path, info_json, layout, compression):
    path = str(tmp_path / "in.tar")
    built = build_docker_archive(path, name="127.0.0.1:5000/team/app", tag="v1",
                                 layout=layout, compression=compression, n_layers=3)
    info = info_json(f"tar://{path}")
    assert (info["name"], info["tag"]) == ("127.0.0.1:5000/team/app", "v1")
    assert info["config_digest"] == built["config_digest"]
    assert [l["diff_id"] for l in info["layers"]] == built["diff_ids"]
    assert [l["digest"] for l in info["layers"]] == built["diff_ids"]  # uncompressed tars
    assert {l["compression"] for l in info["layers"]} == {"none"}
    assert info["manifest_digest"] is None  # docker-save has no manifest to copy
    assert info["env"][1] == "SAMPLE_SEED=0" and info["os"] == "linux"


def test_podman_symlinks_are_followed_when_copying(tmp_path, process_ok, info_json):
    src, out = str(tmp_path / "podman.tar"), str(tmp_path / "out.tar")
    built = build_docker_archive(src, layout="podman")
    with tarfile.open(src) as tar:
        assert any(m.issym() for m in tar.getmembers())
    process_ok(f"tar://{src}", f"tar://{out}")
    assert [l["diff_id"] for l in info_json(f"tar://{out}")["layers"]] == built["diff_ids"]


def test_layers_are_read_in_parallel_and_verified(tmp_path, run_cli, process_ok):
    src = str(tmp_path / "in.tar")
    build_docker_archive(src, n_layers=6, layer_size=200_000)
    result = run_cli("-j", "4", "process", f"tar://{src}", f"oci-layout://{tmp_path / 'out'}")
    assert result.exit_code == 0, result.output
    assert "6 layers" in result.stderr


def _multi(path):
    write_docker_archive(path, [sample_image("a.example/one", "1"),
                                sample_image("127.0.0.1:5000/two", "2", seed=2),
                                sample_image(None, None, seed=3)])


def test_multi_image_archive_needs_a_choice(tmp_path, run_cli, expect_error):
    path = str(tmp_path / "multi.tar")
    _multi(path)
    expect_error(run_cli("info", f"tar://{path}"), "holds 3 images", "?image=NAME:TAG",
                 "[0] a.example/one:1", "[1] 127.0.0.1:5000/two:2", "[2] (untagged)")
    expect_error(run_cli("info", f"tar://{path}?image=nope:1"), "no image 'nope:1'")
    expect_error(run_cli("info", f"tar://{path}?index=7"), "no image at index 7")


@pytest.mark.parametrize("query, name, tag", [
    ("image=127.0.0.1:5000/two:2", "127.0.0.1:5000/two", "2"),
    ("image=a.example/one", "a.example/one", "1"),
    ("index=0", "a.example/one", "1"),
    ("index=2", None, None),
])
def test_multi_image_selection(tmp_path, info_json, query, name, tag):
    path = str(tmp_path / "multi.tar")
    _multi(path)
    info = info_json(f"tar://{path}?{query}")
    assert (info["name"], info["tag"]) == (name, tag)


def test_oci_archive(tmp_path, info_json, process_ok):
    path = str(tmp_path / "oci.tar")
    images = [sample_image("x", "v1"), sample_image("x", "v2", seed=5)]
    write_oci_archive(path, images, refs=["v1", "example.com/x:v2"])
    info = info_json(f"tar://{path}?image=example.com/x:v2")
    assert (info["name"], info["tag"]) == ("example.com/x", "v2")
    assert info["config_digest"] == images[1].config_digest
    assert {l["compression"] for l in info["layers"]} == {"gzip"}
    assert info["manifest_media_type"] == "application/vnd.oci.image.manifest.v1+json"
    info = info_json(f"tar://{path}?image=v1")
    assert (info["name"], info["tag"]) == (None, "v1")
    out = tmp_path / "layout"
    process_ok(f"tar://{path}?index=1", f"oci-layout://{out}")
    assert info_json(f"oci-layout://{out}")["manifest_digest"] == \
        info_json(f"tar://{path}?index=1")["manifest_digest"]  # manifest copied byte for byte


def _rewrite(src, dst, change):
    """Copy archive ``src`` to ``dst`` with ``change(name, data) -> data`` applied."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None
            if data is not None:
                data = change(m.name, data)
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)


def test_layer_not_matching_its_diff_id(tmp_path, run_cli, expect_error):
    src, bad = str(tmp_path / "in.tar"), str(tmp_path / "bad.tar")
    build_docker_archive(src)
    evil = make_layer({"etc/passwd": "evil"})
    _rewrite(src, bad, lambda n, d: evil if n.endswith("layer.tar") else d)
    dest = tmp_path / "out.tar"
    expect_error(run_cli("process", f"tar://{bad}", f"tar://{dest}"), "digest mismatch")
    expect_error(run_cli("process", f"tar://{bad}", f"oci-layout://{tmp_path / 'l'}"),
                 "digest mismatch")
    assert sorted(os.listdir(tmp_path)) == ["bad.tar", "in.tar"]  # nothing partial left


def test_config_not_matching_its_name(tmp_path, run_cli, expect_error):
    src, bad = str(tmp_path / "in.tar"), str(tmp_path / "bad.tar")
    build_docker_archive(src)
    _rewrite(src, bad, lambda n, d: d.replace(b"SAMPLE_SEED=0", b"SAMPLE_SEED=1")
             if n.endswith(".json") and "/" not in n and n != "manifest.json" else d)
    expect_error(run_cli("info", f"tar://{bad}"), "image config", "digest mismatch")


def test_truncated_archive(tmp_path, run_cli, expect_error):
    src = tmp_path / "in.tar"
    build_docker_archive(str(src), layer_size=4096)
    data = src.read_bytes()
    for cut in (len(data) // 2, 512 * (len(data) // 1024)):
        bad = tmp_path / "cut.tar"
        bad.write_bytes(data[:cut])
        expect_error(run_cli("process", f"tar://{bad}", f"tar://{tmp_path / 'o.tar'}"),
                     "cut.tar")
    assert not (tmp_path / "o.tar").exists()


@pytest.mark.parametrize("manifest, message", [
    (b"{not json", "manifest.json is not valid JSON"),
    (b'{"Config": "x"}', "manifest.json is not a JSON list"),
    (b'[{"Config": "x.json"}]', "lacks Config or Layers"),
    (b'[{"Config": "missing.json", "Layers": []}]', "no member 'missing.json'"),
])
def test_bad_manifest_json(tmp_path, run_cli, expect_error, manifest, message):
    src, bad = str(tmp_path / "in.tar"), str(tmp_path / "bad.tar")
    build_docker_archive(src)
    _rewrite(src, bad, lambda n, d: manifest if n == "manifest.json" else d)
    expect_error(run_cli("info", f"tar://{bad}"), message)


def test_missing_and_non_archive_inputs(tmp_path, run_cli, expect_error):
    expect_error(run_cli("info", f"tar://{tmp_path / 'nope.tar'}"), "does not exist")
    expect_error(run_cli("info", f"tar://{tmp_path}"), "is a directory", "oci-layout://")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    expect_error(run_cli("info", f"tar://{tmp_path / 'junk.tar'}"), "not a valid tar archive")
    with tarfile.open(tmp_path / "plain.tar", "w") as tar:
        tar.addfile(tarfile.TarInfo("hello"), io.BytesIO())
    expect_error(run_cli("info", f"tar://{tmp_path / 'plain.tar'}"),
                 "neither manifest.json nor index.json")
    expect_error(run_cli("info", f"tar://{tmp_path / 'plain.tar'}?bogus=1"), "unknown option")


def test_layer_count_must_match_config(tmp_path, run_cli, expect_error):
    src, bad = str(tmp_path / "in.tar"), str(tmp_path / "bad.tar")
    build_docker_archive(src)

    def drop_layer(name, data):
        if name != "manifest.json":
            return data
        doc = json.loads(data)
        doc[0]["Layers"] = doc[0]["Layers"][:1]
        return json.dumps(doc).encode()

    _rewrite(src, bad, drop_layer)
    expect_error(run_cli("info", f"tar://{bad}"), "lists 1 layers but the config has 2")
