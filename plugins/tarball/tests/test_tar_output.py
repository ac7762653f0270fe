"""tar:// output: docker-save v1.2 + OCI archive, PAX, atomic replacement."""

import io
import json
import os
import subprocess
import tarfile
import tempfile

import pytest

from occystrap_core import mediatypes as mt
from occystrap_core import pipeline
from occystrap_core.api import Image, Layer, LayerData
from occystrap_core.archive.output import ArchiveOutput
from occystrap_core.archive.writer import (
    FORMAT,
    ArchiveWriter,
    header,
    member_info,
    one_block_header,
)
from occystrap_core.context import Context
from occystrap_core.errors import CorruptImageError
from occystrap_core.testing.images import (
    build_docker_archive,
    make_layer,
    sample_image,
    write_oci_layout,
)
from occystrap_core.types import ResolvedURI


def test_round_trip_through_oci_layout(tmp_path, process_ok, info_json, archive_member):
    src, out = str(tmp_path / "in.tar"), str(tmp_path / "out.tar")
    built = build_docker_archive(src, name="127.0.0.1:5000/team/app", tag="v1", n_layers=3)
    process_ok(f"tar://{src}", f"oci-layout://{tmp_path / 'layout'}")
    process_ok(f"oci-layout://{tmp_path / 'layout'}", f"tar://{out}")

    manifest = json.loads(archive_member(out, "manifest.json"))
    assert manifest[0]["RepoTags"] == ["127.0.0.1:5000/team/app:v1"]
    assert archive_member(out, manifest[0]["Config"]) == built["image"].config
    assert manifest[0]["Layers"] == [f"blobs/sha256/{d[7:]}" for d in built["diff_ids"]]
    for path, layer in zip(manifest[0]["Layers"], built["image"].layers, strict=True):
        assert archive_member(out, path) == layer

    # the same archive is an OCI archive too
    index = json.loads(archive_member(out, "index.json"))
    entry = index["manifests"][0]
    assert entry["annotations"] == {"io.containerd.image.name": "127.0.0.1:5000/team/app:v1",
                                    "org.opencontainers.image.ref.name": "v1"}
    oci_manifest = json.loads(archive_member(out, f"blobs/sha256/{entry['digest'][7:]}"))
    assert oci_manifest["mediaType"] == mt.OCI_MANIFEST
    assert {l["mediaType"] for l in oci_manifest["layers"]} == {mt.OCI_LAYER_TAR}
    assert json.loads(archive_member(out, "oci-layout")) == {"imageLayoutVersion": "1.0.0"}

    info = info_json(f"tar://{out}")
    assert info["config_digest"] == built["config_digest"]
    assert [l["diff_id"] for l in info["layers"]] == built["diff_ids"]


def test_repo_tag_override_and_untagged(tmp_path, process_ok, archive_member):
    src = str(tmp_path / "in.tar")
    build_docker_archive(src)
    process_ok(f"tar://{src}", f"tar://{tmp_path / 'a.tar'}?tag=other.example/x/y:2")
    assert json.loads(archive_member(str(tmp_path / "a.tar"), "manifest.json"))[0]["RepoTags"] \
        == ["other.example/x/y:2"]
    process_ok(f"tar://{src}", f"tar://{tmp_path / 'c.tar'}?tag=127.0.0.1:5000/x")
    assert json.loads(archive_member(str(tmp_path / "c.tar"), "manifest.json"))[0]["RepoTags"] \
        == ["127.0.0.1:5000/x:latest"]
    build_docker_archive(src, name=None, tag=None)
    process_ok(f"tar://{src}", f"tar://{tmp_path / 'b.tar'}")
    assert json.loads(archive_member(str(tmp_path / "b.tar"), "manifest.json"))[0]["RepoTags"] == []


@pytest.mark.parametrize("tag", ["Foo:1", "foo:", "a b:1", "x/y@sha256:" + "a" * 64])
def test_invalid_repo_tag_is_refused(tmp_path, run_cli, expect_error, tag):
    # docker load and podman load refuse such a RepoTags entry ("Foo:1" became
    # "Foo:1:latest"): it must fail here, not after the archive was written
    src = str(tmp_path / "in.tar")
    build_docker_archive(src)
    expect_error(run_cli("process", f"tar://{src}", f"tar://{tmp_path / 'o.tar'}?tag={tag}"),
                 "tag")
    assert sorted(os.listdir(tmp_path)) == ["in.tar"]


def test_repo_tag_is_read_back_by_skopeo(tmp_path, process_ok):
    src, out = str(tmp_path / "in.tar"), str(tmp_path / "out.tar")
    build_docker_archive(src)
    process_ok(f"tar://{src}", f"tar://{out}?tag=127.0.0.1:5000/x/y:2")
    found = subprocess.run(["skopeo", "inspect", "--raw",
                            f"docker-archive:{out}:127.0.0.1:5000/x/y:2"],
                           capture_output=True, text=True)
    assert found.returncode == 0, found.stderr


def test_compressed_source_layers_are_stored_uncompressed(tmp_path, process_ok, info_json):
    from occystrap_core.testing.images import write_oci_layout

    image = sample_image(n_layers=2)
    write_oci_layout(str(tmp_path / "layout"), [image], compress=True)
    process_ok(f"oci-layout://{tmp_path / 'layout'}", f"tar://{tmp_path / 'out.tar'}")
    info = info_json(f"tar://{tmp_path / 'out.tar'}")
    assert [l["digest"] for l in info["layers"]] == image.diff_ids
    assert {l["compression"] for l in info["layers"]} == {"none"}


def test_failure_keeps_existing_file_and_leaves_no_temp(tmp_path, run_cli, expect_error):
    good, bad = str(tmp_path / "good.tar"), str(tmp_path / "bad.tar")
    image = sample_image(layer_size=100_000)
    build_docker_archive(good)
    # an archive whose second layer's content does not match the config
    from occystrap_core.testing.images import SampleImage, write_docker_archive
    write_docker_archive(bad, [SampleImage(image.name, image.tag,
                                           (image.layers[0], make_layer({"x": "y"})),
                                           image.config)])
    dest = tmp_path / "dest.tar"
    dest.write_bytes(b"precious")
    expect_error(run_cli("process", f"tar://{bad}", f"tar://{dest}"), "digest mismatch")
    assert dest.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["bad.tar", "dest.tar", "good.tar"]
    # and success replaces it
    result = run_cli("process", f"tar://{good}", f"tar://{dest}")
    assert result.exit_code == 0, result.output
    assert tarfile.is_tarfile(dest)
    assert sorted(os.listdir(tmp_path)) == ["bad.tar", "dest.tar", "good.tar"]


def test_output_errors(tmp_path, run_cli, expect_error):
    src = str(tmp_path / "in.tar")
    build_docker_archive(src)
    expect_error(run_cli("process", f"tar://{src}", f"tar://{tmp_path / 'no' / 'x.tar'}"),
                 "does not exist")
    expect_error(run_cli("process", f"tar://{src}", f"tar://{tmp_path}"), "is a directory")


def test_outer_archive_is_pax_and_holds_members_over_8_gib(tmp_path):
    huge = 8 * 1024 ** 3 + 512
    with pytest.raises(ValueError):
        member_info("blobs/sha256/big", huge).tobuf(tarfile.USTAR_FORMAT)
    assert FORMAT == tarfile.PAX_FORMAT
    assert len(header(member_info("blobs/sha256/big", huge))) == 3 * 512  # pax header first
    # a streamed member's header is patched in place: one block, base-256 size
    patched = one_block_header("blobs/sha256/big", huge)
    assert len(patched) == 512
    assert tarfile.TarInfo.frombuf(patched, "utf-8", "surrogateescape").size == huge


def test_streamed_and_spooled_members_interleave(tmp_path):
    """One member streams while others are added: they wait, then follow it."""
    path = tmp_path / "out.tar"
    writer = ArchiveWriter(str(path), lambda: str(tmp_path))
    writer.add_directory("blobs")
    streamed = os.urandom(300_001)
    with writer.stream("blobs/streamed") as sink:
        assert sink is not None
        with writer.stream("blobs/other") as second:
            assert second is None  # one stream at a time
        sink.write(streamed[:100_000])
        spool = tempfile.TemporaryFile()
        spool.write(b"spooled" * 1000)
        spool.seek(0)
        assert writer.add_spooled("blobs/spooled", spool, 7000)  # waits for the stream
        assert writer.add_bytes("small", b"abc")
        assert not writer.add_bytes("small", b"again")  # a name is added once
        sink.write(streamed[100_000:])
    with writer.stream("blobs/streamed") as again:
        assert again is None
    writer.commit()
    assert os.path.getsize(path) % tarfile.RECORDSIZE == 0
    with tarfile.open(path) as tar:
        assert tar.getnames() == ["blobs", "blobs/streamed", "blobs/spooled", "small"]
        assert tar.extractfile("blobs/streamed").read() == streamed
        assert tar.extractfile("blobs/spooled").read() == b"spooled" * 1000
        assert tar.extractfile("small").read() == b"abc"
    listing = subprocess.run(["tar", "-tvf", str(path)], check=True, capture_output=True,
                             text=True).stdout
    assert "300001" in listing and "7000" in listing


def test_a_failed_stream_cannot_be_committed(tmp_path):
    writer = ArchiveWriter(str(tmp_path / "out.tar"), lambda: str(tmp_path))
    with pytest.raises(CorruptImageError):
        with writer.stream("blobs/x") as sink:
            sink.write(b"partial")
            raise CorruptImageError("digest mismatch")
    with pytest.raises(RuntimeError, match="incomplete"):
        writer.commit()
    writer.abort()
    assert os.listdir(tmp_path) == []


def _layer_data(index, tar):
    from occystrap_core import digest as digests

    d = digests.of_bytes(tar)
    layer = Layer(index=index, media_type=mt.DOCKER_LAYER_TAR, digest=d, size=len(tar),
                  diff_id=d, uncompressed_size=len(tar))
    import contextlib

    return layer, LayerData(layer, lambda: contextlib.nullcontext(io.BytesIO(tar)))


def test_config_must_match_layers_written(tmp_path):
    image = sample_image()
    other = sample_image(seed=9)
    pairs = [_layer_data(i, t) for i, t in enumerate(image.layers)]
    img = Image(name="a", tag="b", config=other.config, layers=tuple(l for l, _ in pairs))
    with Context() as ctx:
        out = ArchiveOutput(ResolvedURI("tar", str(tmp_path / "o.tar"), "", options={"tag": None}),
                        ctx)
        out.start(img)
        for _, data in pairs:
            out.add_layer(data)
        with pytest.raises(CorruptImageError, match="do not match the layers written"):
            out.finish(img)
        out.abort()
    assert os.listdir(tmp_path) == []


def _flip_last_byte(archive, member):
    """Corrupt one byte of a member in place: same size, different content."""
    with tarfile.open(archive) as tar:
        info = tar.getmember(member)
    with open(archive, "r+b") as f:
        f.seek(info.offset_data + info.size - 1)
        last = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([last[0] ^ 0xFF]))


@pytest.mark.parametrize("compression", ["none", "keep"])
def test_verify_rereads_the_archive(tmp_path, compression, archive_member):
    src, out = tmp_path / "src", str(tmp_path / "out.tar")
    write_oci_layout(str(src), [sample_image(n_layers=2)])  # gzip layers: diff_ids via gunzip
    with Context() as ctx:
        output = pipeline.build_output(ctx, f"tar://{out}?compression={compression}")
        with pipeline.build_input(ctx, f"oci-layout://{src}") as source:
            pipeline.run(ctx, source, output)
        assert output.verify() == []
        ctx.settings.verify_full = True
        assert output.verify() == []

        layer = json.loads(archive_member(out, "manifest.json"))[0]["Layers"][1]
        _flip_last_byte(out, layer)
        ctx.settings.verify_full = False
        assert output.verify() == []  # the cheap default checks sizes, not contents
        ctx.settings.verify_full = True
        assert [p for p in output.verify() if "layer 1 blob: digest mismatch" in p]

        with open(out, "r+b") as f:  # cut into the blobs: the archive itself is broken
            f.truncate(os.path.getsize(out) // 2)
        assert output.verify()


def test_cli_verify_full_reports_tampering(tmp_path, run_cli, monkeypatch, archive_member):
    src, out = str(tmp_path / "in.tar"), str(tmp_path / "out.tar")
    build_docker_archive(src)
    result = run_cli("process", f"tar://{src}", f"tar://{out}")
    assert result.exit_code == 0 and result.stderr.rstrip().endswith(", verified")

    finish = ArchiveOutput.finish

    def finish_then_tamper(self, image):
        written = finish(self, image)
        _flip_last_byte(out, json.loads(archive_member(out, "manifest.json"))[0]["Layers"][0])
        return written

    monkeypatch.setattr(ArchiveOutput, "finish", finish_then_tamper)
    assert run_cli("process", f"tar://{src}", f"tar://{out}").exit_code == 0  # sizes still fine
    result = run_cli("--verify-full", "process", f"tar://{src}", f"tar://{out}")
    assert result.exit_code == 1
    assert "Verify: manifest layer 0 blob: digest mismatch" in result.stderr
    assert "verify failed (1 problems)" in result.stderr
    result = run_cli("--no-verify", "--verify-full", "process", f"tar://{src}", f"tar://{out}")
    assert result.exit_code == 1  # --verify-full implies verifying
    result = run_cli("process", f"tar://{src}", f"tar://{out}",
                     env={"OCCYSTRAP_VERIFY_FULL": "1", "OCCYSTRAP_VERIFY": "0"})
    assert result.exit_code == 1
    result = run_cli("--no-verify", "process", f"tar://{src}", f"tar://{out}")
    assert result.exit_code == 0 and result.stderr.rstrip().endswith(" s")  # nothing said
