"""occystrap check: metadata and layer checks, text and JSON, exit codes."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import tarfile

import pytest

from occystrap_core import mediatypes as mt
from occystrap_core.api import Image, ImageInput, Layer
from occystrap_core.check import Report, run_check
from occystrap_core.engine import Loaded
from occystrap_core.testing.images import make_layer, sample_image, write_oci_layout


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class MemInput(ImageInput):
    """An image whose blobs, media types and config can be made wrong on purpose."""

    def __init__(self, tars: list[bytes], *, gzip_layers: bool = True,
                 media_type: str | None = None, diff_ids: list[str] | None = None,
                 corrupt: bool = False, history: int | None = None):
        self.blobs = [gzip.compress(t, mtime=0) if gzip_layers else t for t in tars]
        self.announced = list(self.blobs)
        if corrupt:  # flip a byte of the gzip trailer: the tar still reads, the digest differs
            blob = bytearray(self.blobs[0])
            blob[-5] ^= 0xFF
            self.blobs[0] = bytes(blob)
        self.media_type = media_type or (mt.OCI_LAYER_GZIP if gzip_layers else mt.OCI_LAYER_TAR)
        self.config = json.dumps({
            "os": "linux", "architecture": "amd64",
            "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha(t) for t in tars]},
            "history": [{"created_by": "x"}] * (len(tars) if history is None else history),
        }).encode()
        self.opened = 0

    def image(self) -> Image:
        layers = tuple(Layer(i, self.media_type, sha(b), len(b))
                       for i, b in enumerate(self.announced))
        return Image("example.com/check", "v1", self.config, layers)

    @contextlib.contextmanager
    def open_layer(self, layer: Layer):
        self.opened += 1
        yield io.BytesIO(self.blobs[layer.index])


def check_input(source: ImageInput, fast: bool) -> Report:
    return run_check(Loaded(source.image(), source.open_layer), fast)


def raw_tar(*members: tuple[str, bytes, int, bytes]) -> bytes:
    """(name, type, mode, data) members, written without any sanitising."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, type_, mode, data in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size = type_, mode, len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def checks(report, severity: str) -> set[str]:
    return {r.check for r in report.results if r.severity == severity}


def test_clean_image_passes():
    report = check_input(MemInput([make_layer({"a": "1"}), make_layer({"b": "2"})]), fast=False)
    assert report.count("error") == 0 and report.count("warning") == 0
    assert report.as_dict()["mode"] == "full"


def test_fast_mode_reads_no_layer():
    source = MemInput([make_layer({"a": "1"})], diff_ids=["sha256:" + "0" * 64])
    report = check_input(source, fast=True)
    assert source.opened == 0 and report.count("error") == 0


def test_media_type_against_compression_magic():
    tars = [make_layer({"a": "1"})]
    report = check_input(MemInput(tars, gzip_layers=False, media_type=mt.OCI_LAYER_GZIP), False)
    assert "compression" in checks(report, "error")


def test_wrong_diff_id_and_blob_digest():
    tars = [make_layer({"a": "1"})]
    report = check_input(MemInput(tars, diff_ids=["sha256:" + "1" * 64]), False)
    assert "diff-id" in checks(report, "error")
    report = check_input(MemInput(tars, corrupt=True), False)
    assert checks(report, "error") & {"layer-digest", "layer-read"}


def test_counts():
    tars = [make_layer({"a": "1"})]
    report = check_input(MemInput(tars, diff_ids=[sha(tars[0])] * 2, history=3), fast=True)
    assert {"layer-count", "history-count"} <= checks(report, "error")


def test_tar_contents():
    layer = raw_tar(("etc/.wh.", tarfile.REGTYPE, 0o644, b""),
                    ("etc/.wh.big", tarfile.REGTYPE, 0o644, b"junk"),
                    ("bin/su", tarfile.REGTYPE, 0o4777, b"x"),
                    ("/abs", tarfile.REGTYPE, 0o644, b""),
                    ("../up", tarfile.REGTYPE, 0o644, b""))
    report = check_input(MemInput([layer]), False)
    assert {"whiteout", "tar-path"} <= checks(report, "error")
    assert {"whiteout-size", "tar-permissions"} <= checks(report, "warning")


def test_not_a_tar():
    report = check_input(MemInput([b"this is not a tar archive" * 40]), False)
    assert "tar-format" in checks(report, "error")


def test_cli_json_and_exit_code(tmp_path, run_cli):
    layout = tmp_path / "layout"
    write_oci_layout(str(layout), [sample_image()])
    ok = run_cli("check", f"oci-layout://{layout}", "-O", "json")
    assert ok.exit_code == 0, ok.stdout
    doc = json.loads(ok.stdout)
    assert set(doc) == {"image", "mode", "errors", "warnings", "results"}
    assert doc["mode"] == "full" and doc["errors"] == 0
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" /
                           index["manifests"][0]["digest"].split(":")[1]).read_text())
    blob = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF
    blob.write_bytes(bytes(data))
    bad = run_cli("check", f"oci-layout://{layout}")
    assert bad.exit_code == 1
    assert "[ERROR" in bad.stdout
    assert run_cli("check", f"oci-layout://{layout}", "--fast").exit_code == 0


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_info_reports_sizes_and_history(tmp_path, run_cli, fmt):
    layout = tmp_path / "layout"
    write_oci_layout(str(layout), [sample_image()])
    result = run_cli("info", f"oci-layout://{layout}", "-O", fmt)
    assert result.exit_code == 0, result.stderr
    if fmt == "json":
        info = json.loads(result.stdout)
        assert info["manifest_digest"].startswith("sha256:")
        assert info["layers"][0]["created_by"].endswith("ADD layer 0")
        assert "platforms" in info and "total_uncompressed_size" in info
    else:
        assert "Manifest:" in result.stdout and "ADD layer 1" in result.stdout


def test_info_lists_platforms_when_the_input_can():
    from occystrap_core.info import as_text, describe
    from occystrap_core.oci.platform import Platform

    image = MemInput([make_layer({"a": "1"})], gzip_layers=False).image()
    info = describe(image, [Platform("linux", "amd64"), Platform("linux", "arm64", "v8")])
    assert info["platforms"] == ["linux/amd64", "linux/arm64/v8"]
    assert info["layers"][0]["uncompressed_size"] == image.layers[0].size
    assert "Platforms:     linux/amd64, linux/arm64/v8" in as_text(info)
