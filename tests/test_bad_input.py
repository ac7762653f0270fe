"""Bad input of every kind gives one clean ``Error:`` line and leaves nothing behind.

Each case builds its bad input under ``tmp_path`` and runs the CLI in-process. The
rules every case is held to (DEVELOPERS.md, README "Errors the user can act on"):

1. exit 1, or 2 for click's own usage errors (a malformed ``--platform``,
   ``--timeout 0``);
2. stderr, ``Warning:``/``WARNING `` log lines aside, starts with ``Error: `` (exit 1)
   and holds exactly one line starting with ``Error: ``, which names the problem
   (the case's fragment); no ``Traceback``, no ``Error: unexpected``;
3. nothing under ``tmp_path`` changed: no output, no temporary file beside it or in
   the ``--temp-dir`` (every run gets one, ``tmp_path/scratch``), and whatever
   existed before (an archive, a layout, a directory with known content at the
   destination) is byte-identical afterwards.

``check`` reports what is wrong with an image rather than failing on it: a layer whose
gzip stream is broken (its digest matching the broken bytes, so the codec and not the
digest check fails) or whose blob does not match its digest gives exit 1 and one
``[ERROR]`` line naming it in the report on stdout, and nothing on stderr.

The full-disk and read-only cases mount a 1 MiB tmpfs under ``tmp_path`` (we run as
root) and write a 3 MiB image of random bytes to it; the tmpfs must be empty and
hold no allocated space afterwards (a temporary file left open but unlinked would
still hold it).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from occystrap_core.testing import images
from occystrap_core.testing.registry import RegistryServer, push_sample_image

# ---- the environment a case builds its input in ----------------------------------


@dataclass
class Env:
    """What a case's setup works with; ``vars`` fills the ``{name}`` fields of args."""

    tmp: Path
    request: pytest.FixtureRequest
    vars: dict[str, str] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.tmp / name

    def registry(self, mode: str) -> RegistryServer:
        """A session registry; its host is ``{MODE}`` and its CA ``{MODE_ca}`` in args."""
        server: RegistryServer = self.request.getfixturevalue(f"registry_{mode}")
        self.vars[mode] = server.host
        if server.ca_cert:
            self.vars[f"{mode}_ca"] = server.ca_cert
        return server

    def mount_tmpfs(self, name: str, options: str) -> Path:
        """A tmpfs at ``tmp/name``, unmounted when the test ends."""
        target = self.path(name)
        target.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                       check=True, capture_output=True)

        def unmount() -> None:
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)

        self.request.addfinalizer(unmount)
        self.vars[name] = str(target)
        return target


Setup = Callable[[Env], Any]


@dataclass(frozen=True)
class Case:
    id: str
    setup: Setup
    args: tuple[str, ...]
    fragment: str  # the Error: line must contain it (after formatting with vars)
    exit_code: int = 1
    also: tuple[str, ...] = ()  # more fragments the Error: line must contain
    absent: tuple[str, ...] = ()  # paths outside tmp_path that must not exist afterwards
    report: bool = False  # check's findings: a report on stdout, not an Error: line
    not_in: tuple[str, ...] = ()  # what the Error: line must not say


# ---- builders of bad input ---------------------------------------------------------


def _good_image(seed: int = 0) -> images.SampleImage:
    return images.sample_image("example.com/bad/input", "v1", seed=seed)


def good_tar(env: Env, name: str = "good.tar") -> Path:
    path = env.path(name)
    images.write_docker_archive(str(path), [_good_image()])
    env.vars["good"] = str(path)
    return path


def good_layout(env: Env, name: str = "layout") -> Path:
    path = env.path(name)
    images.write_oci_layout(str(path), [_good_image()], ["v1"])
    env.vars["layout"] = str(path)
    return path


def rewrite_tar(src: Path, dst: Path, replace: dict[str, bytes | None]) -> None:
    """Copy a tar, replacing members' contents (None: drop the member)."""
    out = io.BytesIO()
    with tarfile.open(src) as tin, tarfile.open(fileobj=out, mode="w",
                                                  format=tarfile.PAX_FORMAT) as tout:
        for member in tin.getmembers():
            if member.name in replace:
                data = replace[member.name]
                if data is None:
                    continue
                member.size = len(data)
                tout.addfile(member, io.BytesIO(data))
            elif member.isfile():
                tout.addfile(member, tin.extractfile(member))
            else:
                tout.addfile(member)
    dst.write_bytes(out.getvalue())


def _manifest_of(path: Path) -> list[dict[str, Any]]:
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        return json.loads(member.read())


def nothing(env: Env) -> None:
    """Input that needs no file (the bad part is in the arguments)."""


def with_good_tar(env: Env) -> None:
    good_tar(env)


def with_good_layout(env: Env) -> None:
    good_layout(env)


def random_bytes(env: Env) -> None:
    env.path("random.tar").write_bytes(random.Random(1).randbytes(64 * 1024))


def manifest_empty_list(env: Env) -> None:
    rewrite_tar(good_tar(env), env.path("bad.tar"), {"manifest.json": b"[]"})


def manifest_layer_outside(env: Env) -> None:
    """manifest.json names a layer path that climbs out of the archive."""
    src = good_tar(env)
    manifest = _manifest_of(src)
    manifest[0]["Layers"][0] = "../../../../../../etc/passwd"
    rewrite_tar(src, env.path("bad.tar"), {"manifest.json": json.dumps(manifest).encode()})


def symlink_loop(env: Env) -> None:
    env.path("loop.tar").symlink_to(env.path("loop.tar"))


def layout_blob_missing(env: Env) -> None:
    _, blob = _layout_layer_blob(good_layout(env), 1)
    blob.unlink()


def existing_tar_dest_registry_tag_missing(env: Env) -> None:
    plain_registry_with_image(env)
    env.path("out.tar").write_bytes(b"precious existing content\n")


def dest_is_a_file(env: Env) -> None:
    good_tar(env)
    env.path("afile").write_text("precious\n")


def dest_is_a_dangling_link(env: Env) -> None:
    good_tar(env)
    env.path("link").symlink_to(env.path("nowhere"))


def der_certificate_dir(env: Env) -> None:
    """A --ca-cert directory whose .crt is DER, not PEM text."""
    good_tar(env)
    env.path("certs").mkdir()
    env.path("certs/ca.crt").write_bytes(b"\x30\x82\x01\xff\xfe\x80")


def truncated(env: Env) -> None:
    data = good_tar(env).read_bytes()
    env.path("truncated.tar").write_bytes(data[: len(data) * 2 // 3])


def empty_file(env: Env) -> None:
    env.path("empty.tar").write_bytes(b"")


def corrupt_gzip_archive(env: Env) -> None:
    path = env.path("archive.tar.gz")
    images.write_docker_archive(str(path), [_good_image()], compression="gzip")
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def archive_dir(env: Env) -> None:
    env.path("adir.tar").mkdir()


def manifest_not_json(env: Env) -> None:
    rewrite_tar(good_tar(env), env.path("bad.tar"), {"manifest.json": b"{this is not json"})


def manifest_missing_layer(env: Env) -> None:
    src = good_tar(env)
    manifest = _manifest_of(src)
    manifest[0]["Layers"][1] = "0123456789abcdef/layer.tar"
    rewrite_tar(src, env.path("bad.tar"), {"manifest.json": json.dumps(manifest).encode()})


def config_mismatch_legacy(env: Env) -> None:
    src = good_tar(env)
    config_name = _manifest_of(src)[0]["Config"]
    image = _good_image()
    config = image.config_json
    config["author"] = "someone else"
    rewrite_tar(src, env.path("bad.tar"), {config_name: json.dumps(config).encode()})


def config_mismatch_docker25(env: Env) -> None:
    src = env.path("good25.tar")
    images.write_docker_archive(str(src), [_good_image()], layout="docker25")
    config_name = _manifest_of(src)[0]["Config"]
    config = _good_image().config_json
    config["author"] = "someone else"
    rewrite_tar(src, env.path("bad.tar"), {config_name: json.dumps(config).encode()})


def _layout_layer_blob(layout: Path, n: int = 0) -> tuple[dict[str, Any], Path]:
    """The n-th layer descriptor of the layout's first manifest, and its blob file."""
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    manifest_path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    manifest = json.loads(manifest_path.read_text())
    layer = manifest["layers"][n]
    return layer, layout / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]


def layout_without_index(env: Env) -> None:
    (good_layout(env) / "index.json").unlink()


def layout_without_marker(env: Env) -> None:
    """An OCI layout whose oci-layout file is gone (index.json and blobs there)."""
    (good_layout(env) / "oci-layout").unlink()


def layout_index_not_json(env: Env) -> None:
    (good_layout(env) / "index.json").write_text("{ not json at all")


#: Valid JSON nested deeper than Python's recursion limit (json.loads: RecursionError).
NESTED = b"[" * 100_000 + b"]" * 100_000


def manifest_nested(env: Env) -> None:
    rewrite_tar(good_tar(env), env.path("bad.tar"), {"manifest.json": NESTED})


def layout_index_nested(env: Env) -> None:
    (good_layout(env) / "index.json").write_bytes(NESTED)


def layout_config_nested(env: Env) -> None:
    """The config nests too deeply, its digest and size right."""
    _replace_blob_consistently(good_layout(env), _good_image().config_digest,
                               b'{"history": ' + NESTED + b"}")


def _replace_blob_consistently(layout: Path, old: str, new_bytes: bytes) -> None:
    """Put ``new_bytes`` in place of blob ``old`` and fix every digest and size that
    points at it (manifest, then index), so that only the content is bad."""
    new = "sha256:" + hashlib.sha256(new_bytes).hexdigest()
    blobs = layout / "blobs" / "sha256"
    (blobs / old.split(":", 1)[1]).unlink()
    (blobs / new.split(":", 1)[1]).write_bytes(new_bytes)
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    manifest_path = blobs / entry["digest"].split(":", 1)[1]
    manifest = json.loads(manifest_path.read_text())
    for descriptor in (manifest["config"], *manifest["layers"]):
        if descriptor["digest"] == old:
            descriptor["digest"], descriptor["size"] = new, len(new_bytes)
    data = json.dumps(manifest, separators=(",", ":")).encode()
    manifest_path.unlink()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobs / digest.split(":", 1)[1]).write_bytes(data)
    entry["digest"], entry["size"] = digest, len(data)
    (layout / "index.json").write_text(json.dumps(index))


def layout_corrupt_gzip(env: Env) -> None:
    """The second layer's gzip stream is broken in the middle, and its digest and size
    in the manifest are those of the broken bytes: the digest check passes, the
    decompressor fails."""
    layout = good_layout(env)
    layer, blob = _layout_layer_blob(layout, 1)
    data = bytearray(blob.read_bytes())
    for i in range(20, len(data) - 12):
        data[i] ^= 0x5A
    _replace_blob_consistently(layout, layer["digest"], bytes(data))


def layout_not_gzip(env: Env) -> None:
    """The second layer claims gzip but holds random bytes (digest and size matching)."""
    layout = good_layout(env)
    layer, _ = _layout_layer_blob(layout, 1)
    _replace_blob_consistently(layout, layer["digest"], random.Random(5).randbytes(2048))


def layout_gzip_flipped_byte(env: Env) -> None:
    """One byte of the deflate stream flipped (digest and size matching)."""
    layout = good_layout(env)
    layer, blob = _layout_layer_blob(layout, 1)
    data = bytearray(blob.read_bytes())
    data[len(data) // 3] ^= 0xFF
    _replace_blob_consistently(layout, layer["digest"], bytes(data))


def layout_blob_mismatch(env: Env) -> None:
    """The second layer's blob no longer hashes to its digest; same size, still valid
    gzip that decompresses to the same layer (only the header's MTIME changed)."""
    layout = good_layout(env)
    _, blob = _layout_layer_blob(layout, 1)
    data = bytearray(blob.read_bytes())
    data[4] ^= 0x01  # gzip MTIME
    blob.write_bytes(bytes(data))


def layout_blob_wrong_size(env: Env) -> None:
    layout = good_layout(env)
    _, blob = _layout_layer_blob(layout, 1)
    blob.write_bytes(gzip.compress(b"not the layer that was announced" * 64, mtime=0))


def layout_config_mismatch(env: Env) -> None:
    """The config blob changed, same size: it no longer hashes to its digest."""
    layout = good_layout(env)
    digest = _good_image().config_digest
    path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    data = path.read_bytes()
    assert b"occystrap test images" in data
    path.write_bytes(data.replace(b"occystrap test images", b"occystrap TEST images"))


def existing_tar_dest_truncated_source(env: Env) -> None:
    truncated(env)
    env.path("out.tar").write_bytes(b"precious existing content\n")


def existing_layout_dest_bad_source(env: Env) -> None:
    """An OCI layout holding an image already; the source's second layer is corrupt."""
    existing = env.path("dest-layout")
    images.write_oci_layout(str(existing), [_good_image(seed=7)], ["old"])
    layout_blob_mismatch(env)


def empty_dir_dest_bad_source(env: Env) -> None:
    """An empty directory made for the layout; the source's second layer is corrupt."""
    env.path("empty").mkdir()
    layout_blob_mismatch(env)


def existing_dir_dest_bad_source(env: Env) -> None:
    """What an earlier dir:// run wrote; the source's layer is corrupt."""
    out = env.path("out")
    out.mkdir()
    (out / "manifest.json").write_text('[{"Config": "precious.json", "Layers": []}]\n')
    layout_corrupt_gzip(env)


def foreign_dir_dest(env: Env) -> None:
    """A directory dir:// did not write (a home directory given by mistake)."""
    good_tar(env)
    out = env.path("home")
    out.mkdir()
    (out / "notes.txt").write_text("precious\n")
    (out / "manifest.json").write_text("my own manifest\n")


def skopeo_dir_dest(env: Env) -> None:
    """A skopeo dir: directory: its manifest.json is an image manifest."""
    good_tar(env)
    out = env.path("skopeo-dir")
    out.mkdir()
    (out / "manifest.json").write_text('{"schemaVersion": 2, "layers": []}\n')


def existing_tar_dest_bad_filter(env: Env) -> None:
    good_tar(env)
    env.path("out.tar").write_bytes(b"precious existing content\n")


def dest_dir_is_a_directory(env: Env) -> None:
    good_tar(env)
    (env.path("outdir") / "inner").mkdir(parents=True)
    (env.path("outdir") / "inner" / "f.txt").write_text("keep\n")


def bundle_not_empty(env: Env) -> None:
    good_tar(env)
    env.path("bundle").mkdir()
    (env.path("bundle") / "something.txt").write_text("keep me\n")


def plain_registry(env: Env) -> None:
    env.registry("plain")


def plain_registry_with_image(env: Env) -> None:
    server = env.registry("plain")
    repo = f"badinput/{uuid.uuid4().hex[:8]}"
    push_sample_image(server, repo, "v1")
    env.vars["repo"] = repo


def tls_registry(env: Env) -> None:
    env.registry("tls")


def basic_registry(env: Env) -> None:
    env.registry("basic")


def token_registry(env: Env) -> None:
    env.registry("token")


def push_to_basic(env: Env) -> None:
    good_tar(env)
    env.registry("basic")


# ---- full disk and read-only file system -------------------------------------------

_BIG: dict[str, bytes] = {}


def big_tar(env: Env) -> None:
    """A docker-save archive holding 3 MiB of random bytes (it does not compress)."""
    if "data" not in _BIG:
        image = images.sample_image(
            "example.com/bad/big", "v1",
            layers=[{"data/random.bin": random.Random(3).randbytes(3 * 1024 * 1024)}])
        buf = env.path("big-build.tar")
        images.write_docker_archive(str(buf), [image])
        _BIG["data"] = buf.read_bytes()
        buf.unlink()
    env.path("big.tar").write_bytes(_BIG["data"])
    env.vars["big"] = str(env.path("big.tar"))


def full_disk(env: Env) -> None:
    big_tar(env)
    env.mount_tmpfs("full", "size=1m")


def full_temp_dir(env: Env) -> None:
    full_disk(env)
    env.registry("plain")


def read_only(env: Env) -> None:
    big_tar(env)
    env.mount_tmpfs("ro", "ro,size=1m")


def read_only_with_basic(env: Env) -> None:
    read_only(env)
    env.registry("basic")


# ---- the table ----------------------------------------------------------------------

OUT = "tar://{t}/out.tar"
INSECURE_PLAIN = ("--insecure",)

CASES: list[Case] = [
    # URIs and references
    Case("unknown-scheme", with_good_tar, ("process", "nosuch://{good}", OUT), "nosuch"),
    Case("unknown-dest-scheme", with_good_tar, ("process", "tar://{good}", "nosuch://x"), "nosuch"),
    Case("not-a-uri", with_good_tar, ("process", "{good}", OUT), "not a URI"),
    Case("uppercase-repository", nothing,
         ("process", "registry://127.0.0.1:1/Upper/Case:v1", OUT), "lowercase"),
    Case("non-ascii-tag", nothing, ("process", "registry://127.0.0.1:1/repo:tést", OUT),
         "invalid tag"),
    Case("bad-digest", nothing, ("process", "registry://127.0.0.1:1/repo@sha256:abc", OUT),
         "not a valid digest"),
    Case("port-0", nothing, ("process", "registry://127.0.0.1:0/repo:v1", OUT), "port 0"),
    Case("port-99999", nothing, ("process", "registry://127.0.0.1:99999/repo:v1", OUT),
         "port 99999"),
    Case("credentials-no-repository", nothing,
         ("process", "registry://someone:pw-1234@127.0.0.1:5000", OUT), "repository"),
    Case("unknown-uri-option", with_good_tar, ("process", "tar://{good}?bogus=1", OUT), "bogus"),
    Case("option-wrong-type", with_good_tar, ("process", "tar://{good}?index=first", OUT),
         "index"),
    Case("bool-option-wrong-type", with_good_tar,
         ("process", "tar://{good}", "dir://{t}/out?expand=maybe"), "expand"),
    # archives
    Case("missing-archive", nothing, ("process", "tar://{t}/missing.tar", OUT), "missing.tar"),
    Case("archive-is-directory", archive_dir, ("process", "tar://{t}/adir.tar", OUT), "adir.tar"),
    Case("random-bytes-archive", random_bytes, ("process", "tar://{t}/random.tar", OUT),
         "random.tar"),
    Case("truncated-archive", truncated, ("process", "tar://{t}/truncated.tar", OUT),
         "truncated.tar"),
    Case("empty-archive", empty_file, ("process", "tar://{t}/empty.tar", OUT), "empty.tar"),
    Case("corrupt-gzip-archive", corrupt_gzip_archive,
         ("process", "tar://{t}/archive.tar.gz", OUT), "archive.tar.gz"),
    Case("manifest-not-json", manifest_not_json, ("process", "tar://{t}/bad.tar", OUT),
         "manifest.json"),
    Case("manifest-nested-too-deeply", manifest_nested, ("process", "tar://{t}/bad.tar", OUT),
         "manifest.json"),
    Case("manifest-missing-layer", manifest_missing_layer, ("process", "tar://{t}/bad.tar", OUT),
         "0123456789abcdef/layer.tar"),
    Case("config-digest-mismatch-legacy", config_mismatch_legacy,
         ("process", "tar://{t}/bad.tar", OUT), "digest mismatch"),
    Case("config-digest-mismatch-docker25", config_mismatch_docker25,
         ("process", "tar://{t}/bad.tar", OUT), "digest mismatch"),
    Case("manifest-empty-list", manifest_empty_list, ("process", "tar://{t}/bad.tar", OUT),
         "bad.tar"),
    Case("manifest-layer-outside-archive", manifest_layer_outside,
         ("process", "tar://{t}/bad.tar", OUT), "etc/passwd"),
    Case("archive-symlink-loop", symlink_loop, ("process", "tar://{t}/loop.tar", OUT),
         "loop.tar"),
    Case("duplicate-uri-option", with_good_tar, ("process", "tar://{good}?index=0&index=0", OUT),
         "more than once"),
    Case("info-truncated-archive", truncated, ("info", "tar://{t}/truncated.tar"),
         "truncated.tar"),
    Case("index-out-of-range", with_good_tar, ("process", "tar://{good}?index=5", OUT), "5"),
    Case("image-not-in-archive", with_good_tar,
         ("process", "tar://{good}?image=example.com/nope:v9", OUT), "example.com/nope:v9"),
    # OCI layouts
    Case("delete-in-layout-without-marker", layout_without_marker,
         ("delete", "oci-layout://{layout}?ref=v1"), "not an OCI image layout (no oci-layout)"),
    Case("layout-without-index", layout_without_index, ("process", "oci-layout://{layout}", OUT),
         "index.json"),
    Case("layout-index-not-json", layout_index_not_json,
         ("process", "oci-layout://{layout}", OUT), "index.json"),
    Case("layout-index-nested-too-deeply", layout_index_nested,
         ("process", "oci-layout://{layout}", OUT), "index.json"),
    Case("layout-config-nested-too-deeply", layout_config_nested,
         ("process", "oci-layout://{layout}", OUT), "config"),
    Case("layout-config-nested-too-deeply-info", layout_config_nested,
         ("info", "oci-layout://{layout}"), "config"),
    Case("layout-config-nested-too-deeply-filtered", layout_config_nested,
         ("process", "oci-layout://{layout}", OUT, "-f", "normalize-timestamps"), "config"),
    Case("layout-corrupt-gzip-expand", layout_corrupt_gzip,
         ("process", "oci-layout://{layout}", "dir://{t}/out?expand=true"), "decompress"),
    Case("layout-corrupt-gzip-check", layout_corrupt_gzip, ("check", "oci-layout://{layout}"),
         "decompress", report=True),
    Case("layout-corrupt-gzip-tar", layout_corrupt_gzip, ("process", "oci-layout://{layout}", OUT),
         "decompress"),
    Case("layout-not-gzip-expand", layout_not_gzip,
         ("process", "oci-layout://{layout}", "dir://{t}/out?expand=true"), "layer 1"),
    Case("layout-not-gzip-check", layout_not_gzip, ("check", "oci-layout://{layout}"), "layer 1",
         report=True),
    Case("layout-flipped-byte-expand", layout_gzip_flipped_byte,
         ("process", "oci-layout://{layout}", "dir://{t}/out?expand=true"), "layer 1"),
    Case("layout-flipped-byte-check", layout_gzip_flipped_byte,
         ("check", "oci-layout://{layout}"), "layer 1", report=True),
    Case("layout-blob-digest-mismatch", layout_blob_mismatch,
         ("process", "oci-layout://{layout}", OUT), "digest mismatch"),
    Case("layout-blob-wrong-size", layout_blob_wrong_size,
         ("process", "oci-layout://{layout}", OUT), "size mismatch"),
    Case("layout-blob-digest-mismatch-check", layout_blob_mismatch,
         ("check", "oci-layout://{layout}"), "hashes to", report=True),
    Case("layout-config-digest-mismatch", layout_config_mismatch,
         ("process", "oci-layout://{layout}", OUT), "digest mismatch"),
    Case("layout-uppercase-digest", with_good_layout,
         ("process", "oci-layout://{layout}@SHA256:" + "AB" * 32, OUT), "invalid digest after"),
    Case("layout-short-digest", with_good_layout,
         ("info", "oci-layout://{layout}@sha256:abc"), "invalid digest after"),
    Case("layout-ref-missing", with_good_layout, ("process", "oci-layout://{layout}?ref=nope", OUT),
         "nope"),
    Case("layout-index-out-of-range", with_good_layout,
         ("process", "oci-layout://{layout}?index=9", OUT), "9"),
    Case("layout-blob-missing", layout_blob_missing, ("process", "oci-layout://{layout}", OUT),
         "layer 1"),
    Case("dry-run-missing-archive", nothing,
         ("process", "--dry-run", "tar://{t}/missing.tar", OUT), "missing.tar"),
    Case("dry-run-missing-layout", nothing,
         ("process", "--dry-run", "oci-layout://{t}/nolayout", OUT), "nolayout"),
    Case("check-missing-archive", nothing, ("check", "tar://{t}/missing.tar"), "missing.tar"),
    Case("search-bad-regex", with_good_tar, ("search", "--regex", "tar://{good}", "("),
         "invalid regex"),
    # re.compile raises OverflowError, not re.error, for a repeat count past its limit
    Case("search-regex-repeat-too-large", with_good_tar,
         ("search", "--regex", "tar://{good}", "a{{99999999999}}"), "invalid regex"),
    Case("search-regex-nested-too-deeply", with_good_tar,
         ("search", "--regex", "tar://{good}", "(" * 10000 + ")" * 10000), "invalid regex"),
    # a TYPE that is no media type would match no referrer, and an empty one all of them
    *(Case(f"referrers-artifact-type-{name}", with_good_layout,
           ("referrers", "oci-layout://{layout}", "--artifact-type", value), "--artifact-type",
           exit_code=2) for name, value in (("empty", ""), ("no-slash", "sbom"),
                                            ("spaces", "application/x sbom"))),
    Case("search-missing-archive", nothing, ("search", "tar://{t}/missing.tar", "*"),
         "missing.tar"),
    Case("layout-missing-dir", nothing, ("process", "oci-layout://{t}/nolayout", OUT), "nolayout"),
    # destinations that exist already, with a bad source or a bad filter
    Case("existing-tar-dest-truncated-source", existing_tar_dest_truncated_source,
         ("process", "tar://{t}/truncated.tar", OUT), "truncated.tar"),
    Case("existing-layout-dest-bad-blob", existing_layout_dest_bad_source,
         ("process", "oci-layout://{layout}", "oci-layout://{t}/dest-layout?ref=new"),
         "digest mismatch"),
    Case("empty-dir-layout-dest-bad-blob", empty_dir_dest_bad_source,
         ("process", "oci-layout://{layout}", "oci-layout://{t}/empty"), "digest mismatch"),
    Case("existing-dir-dest-corrupt-gzip", existing_dir_dest_bad_source,
         ("process", "oci-layout://{layout}", "dir://{t}/out?expand=true"), "decompress"),
    Case("foreign-dir-dest", foreign_dir_dest, ("process", "tar://{good}", "dir://{t}/home"),
         "which dir:// does not write"),
    Case("foreign-dir-dest-mounts", foreign_dir_dest,
         ("process", "tar://{good}", "mounts://{t}/home"), "which mounts:// does not write"),
    Case("skopeo-dir-dest", skopeo_dir_dest, ("process", "tar://{good}", "dir://{t}/skopeo-dir"),
         "is not one dir:// wrote"),
    Case("existing-tar-dest-registry-tag-missing", existing_tar_dest_registry_tag_missing,
         ("--insecure", "process", "registry://{plain}/{repo}:nope", OUT), "nope"),
    Case("existing-tar-dest-bad-filter", existing_tar_dest_bad_filter,
         ("process", "tar://{good}", OUT, "-f", "exclude:pattern=[z-a]"), "[z-a]"),
    # destinations
    Case("dest-dir-missing", with_good_tar, ("process", "tar://{good}", "tar://{t}/nodir/out.tar"),
         "nodir"),
    Case("tar-dest-is-directory", dest_dir_is_a_directory,
         ("process", "tar://{good}", "tar://{t}/outdir"), "outdir"),
    Case("dir-dest-is-a-file", dest_is_a_file, ("process", "tar://{good}", "dir://{t}/afile"),
         "afile"),
    Case("dir-dest-is-a-dangling-link", dest_is_a_dangling_link,
         ("process", "tar://{good}", "dir://{t}/link"), "symbolic link"),
    Case("mounts-dest-is-a-dangling-link", dest_is_a_dangling_link,
         ("process", "tar://{good}", "mounts://{t}/link"), "symbolic link"),
    Case("bundle-dest-is-a-dangling-link", dest_is_a_dangling_link,
         ("process", "tar://{good}", "oci-bundle://{t}/link"), "symbolic link"),
    Case("oci-layout-dest-is-a-file", dest_is_a_file,
         ("process", "tar://{good}", "oci-layout://{t}/afile"), "afile"),
    Case("registry-dest-bad-reference", with_good_tar,
         ("process", "tar://{good}", "registry://127.0.0.1:1/Upper:v1"), "lowercase"),
    Case("client-key-without-client-cert", with_good_tar,
         ("--client-key", "{good}", "--retries", "0", "process", "tar://{good}",
          "registry://127.0.0.1:1/app:v1"), "--client-cert"),
    Case("ca-cert-dir-with-a-der-certificate", der_certificate_dir,
         ("--ca-cert", "{t}/certs", "--retries", "0", "process", "tar://{good}",
          "registry://127.0.0.1:1/app:v1"), "ca.crt", also=("PEM",)),
    Case("oci-bundle-dest-not-empty", bundle_not_empty,
         ("process", "tar://{good}", "oci-bundle://{t}/bundle"), "bundle"),
    # filters
    Case("unknown-filter", with_good_tar, ("process", "tar://{good}", OUT, "-f", "nosuchfilter"),
         "nosuchfilter"),
    Case("filter-missing-required-option", with_good_tar,
         ("process", "tar://{good}", OUT, "-f", "inspect"), "file"),
    Case("exclude-without-pattern", with_good_tar,
         ("process", "tar://{good}", OUT, "-f", "exclude"), "pattern"),
    Case("filter-unknown-option", with_good_tar,
         ("process", "tar://{good}", OUT, "-f", "exclude:pattern=/tmp,colour=red"), "colour"),
    Case("exclude-bad-range", with_good_tar,
         ("process", "tar://{good}", OUT, "-f", "exclude:pattern=[z-a]"), "[z-a]"),
    Case("timestamp-negative", with_good_tar,
         ("process", "tar://{good}", OUT, "-f", "normalize-timestamps:ts=-1"), "-1"),
    Case("timestamp-huge", with_good_tar,
         ("process", "tar://{good}", OUT, "-f", "normalize-timestamps:ts=99999999999999"),
         "99999999999999"),
    Case("timestamp-not-int", with_good_tar,
         ("process", "tar://{good}", OUT, "-f", "normalize-timestamps:ts=yesterday"), "yesterday"),
    Case("inspect-file-no-dir", with_good_tar,
         ("process", "tar://{good}", OUT, "-f", "inspect:file=/nonexistent-dir/x"),
         "/nonexistent-dir", absent=("/nonexistent-dir",)),
    # registries
    Case("unreachable-registry", nothing,
         ("--retries", "0", "process", "registry://127.0.0.1:1/x:y", OUT), "127.0.0.1:1"),
    Case("tls-without-ca-cert", tls_registry,
         ("--retries", "0", "process", "registry://{tls}/badinput/x:v1", OUT), "certificate"),
    Case("ca-cert-missing-file", tls_registry,
         ("--ca-cert", "{t}/no-such-ca.pem", "process", "registry://{tls}/badinput/x:v1", OUT),
         "no-such-ca.pem", exit_code=2, also=("--ca-cert",)),
    Case("plain-registry-without-insecure", plain_registry,
         ("--retries", "0", "process", "registry://{plain}/badinput/x:v1", OUT), "{plain}",
         also=("insecure",)),
    Case("registry-tag-missing", plain_registry_with_image,
         ("--insecure", "process", "registry://{plain}/{repo}:nope", OUT), "nope"),
    Case("registry-repository-missing", plain_registry,
         ("--insecure", "process", "registry://{plain}/badinput/never-pushed:v1", OUT),
         "badinput/never-pushed"),
    Case("basic-wrong-password", basic_registry,
         ("--ca-cert", "{basic_ca}", "--username", "alice", "--password", "not-her-password",
          "process", "registry://{basic}/badinput/x:v1", OUT), "{basic}"),
    Case("basic-wrong-password-push", push_to_basic,
         ("--ca-cert", "{basic_ca}", "--username", "alice", "--password", "not-her-password",
          "process", "tar://{good}", "registry://{basic}/badinput/pushed:v1"), "{basic}"),
    Case("token-wrong-password", token_registry,
         ("--ca-cert", "{token_ca}", "--username", "alice", "--password", "not-her-password",
          "process", "registry://{token}/badinput/x:v1", OUT), "{token}"),
    Case("token-no-credentials", token_registry,
         ("--ca-cert", "{token_ca}", "process", "registry://{token}/badinput/x:v1", OUT),
         "{token}"),
    *(Case(f"catalog-page-size-{n}", plain_registry,
           ("--insecure", "catalog", f"registry://{{plain}}?page_size={n}"), "page_size",
           also=(n,)) for n in ("0", "-1")),
    # a range whose start comes after its end matches nothing: a typo, not a filter
    Case("tags-filter-empty-range", plain_registry_with_image,
         ("--insecure", "tags", "registry://{plain}/{repo}", "--filter", "v[z-a]*"),
         "'v[z-a]*'", also=("z-a",)),
    *(Case(f"{command}-{where}-glob-empty-range", plain_registry,
           ("--insecure", command, f"registry://{{plain}}/{target}", *extra), "[9-0]",
           also=(f"{where} glob", "9-0"))
      for command, extra in (("process", (OUT,)), ("info", ()))
      for where, target in (("repository", "badinput/[9-0]*:v1"), ("tag", "badinput/*:v[9-0]"))),
    Case("quay-tag-glob-empty-range", nothing,
         ("--retries", "0", "process", "quay://ns/app:v[z-a]*?host=127.0.0.1:1", OUT),
         "tag glob", also=("z-a",)),
    Case("search-glob-empty-range", with_good_tar, ("search", "tar://{good}", "[z-a]*"),
         "search: glob '[z-a]*'", also=("z-a",)),
    Case("search-filter-glob-empty-range", with_good_tar,
         ("process", "tar://{good}", OUT, "-f", "search:pattern=/etc/[z-a]*"), "z-a"),
    Case("tags-page-size-0", plain_registry,
         ("--insecure", "tags", "registry://{plain}/badinput/x?page_size=0"), "page_size"),
    # a registry host alone: the error names what was given, not a made-up HOST/x
    *(Case(f"catalog-host-{name}", nothing, ("--insecure", "catalog", host), fragment,
           not_in=("/x",))
      for name, host, fragment in (("port-0", "127.0.0.1:0", "port 0"),
                                   ("port-99999", "registry://127.0.0.1:99999", "port 99999"),
                                   ("underscore", "bad_host:5000", "bad_host"))),
    *(Case(f"{command}-port-{port}", nothing,
           ("--retries", "0", command, f"127.0.0.1:{port}", *extra), f"port {port}")
      for command, extra in (("login", ("-u", "alice", "-p", "secret")), ("logout", ()))
      for port in ("0", "99999")),
    # an auth file holds base64(USER:PASSWORD): read back, 'ali:ce' would be user 'ali'
    Case("login-username-with-colon", plain_registry,
         ("--insecure", "login", "{plain}", "-u", "ali:ce", "-p", "secret", "--authfile",
          "{t}/auth.json"), "':'"),
    # a destination that cannot delete says so by its scheme, not by a class name
    *(Case(f"delete-{scheme}{'-manifest' if whole else ''}", with_good_tar,
           ("delete", *(("--manifest",) if whole else ()), target), f"{scheme}://",
           not_in=("Output",))
      for scheme, target in (("tar", "tar://{good}"), ("dir", "dir://{t}/d"),
                             ("oci-bundle", "oci-bundle://{t}/b"))
      for whole in (False, True)),
    # an empty --authfile is no file, not the default one ($DOCKER_CONFIG/config.json,
    # under tmp_path here: a write there is a change the snapshot sees)
    *(Case(f"{command}-empty-authfile", plain_registry,
           ("--insecure", command, "{plain}", *extra, "--authfile", ""), "--authfile",
           exit_code=2)
      for command, extra in (("login", ("-u", "alice", "-p", "secret")), ("logout", ()))),
    # other sources
    Case("docker-socket-missing", nothing,
         ("process", "docker://busybox:latest?socket={t}/no.sock", OUT), "no.sock"),
    # global options
    Case("temp-dir-missing", with_good_tar,
         ("--temp-dir", "{t}/no-temp", "process", "tar://{good}", OUT), "no-temp",
         exit_code=2, also=("--temp-dir",)),
    Case("temp-dir-missing-spooling-filter", with_good_tar,
         ("--temp-dir", "{t}/no-temp", "process", "tar://{good}", OUT, "-f",
          "exclude:pattern=/etc/*"), "no-temp", exit_code=2, also=("--temp-dir",)),
    # "" names no file or directory: not the option left out (no cache, no digest file)
    *(Case(f"{option[2:]}-empty", plain_registry_with_image,
           ("--insecure", *before, option, "", *after), option, also=("named",), exit_code=2)
      for before, option, after in (
          ((), "--layer-cache", ("process", "registry://{plain}/{repo}:v1", OUT)),
          ((), "--temp-dir", ("process", "registry://{plain}/{repo}:v1", OUT)),
          ((), "--ca-cert", ("process", "registry://{plain}/{repo}:v1", OUT)),
          ((), "--client-cert", ("process", "registry://{plain}/{repo}:v1", OUT)),
          ((), "--client-key", ("process", "registry://{plain}/{repo}:v1", OUT)),
          (("process",), "--digestfile", ("registry://{plain}/{repo}:v1", OUT)),
          (("sync",), "--events", ("registry://{plain}/{repo}",
                                   "oci-layout://{t}/copy?ref={{tag}}")))),
    Case("platform-malformed", with_good_tar,
         ("--platform", "linux", "process", "tar://{good}", OUT), "--platform", exit_code=2),
    Case("timeout-zero", with_good_tar, ("--timeout", "0", "process", "tar://{good}", OUT),
         "--timeout", exit_code=2),
    # nan passes every comparison a range makes; inf and 1e400 overflow a socket timeout
    *(Case(f"{option[2:]}-{value}", nothing,
           ("--insecure", option, value, "process", "registry://127.0.0.1:1/repo:v1", OUT),
           option, exit_code=2)
      for option, value in (("--timeout", "nan"), ("--timeout", "inf"), ("--timeout", "1e400"),
                            ("--connect-timeout", "nan"), ("--rate-limit", "nan"),
                            ("--rate-limit", "inf"), ("--progress-interval", "nan"))),
    Case("parallel-zero", with_good_tar, ("-j", "0", "process", "tar://{good}", OUT),
         "--parallel", exit_code=2),
    Case("unknown-global-option", with_good_tar,
         ("--no-such-option", "process", "tar://{good}", OUT), "--no-such-option", exit_code=2),
    # the machine: a full disk, a read-only file system
    Case("full-disk-tar", full_disk, ("process", "tar://{big}", "tar://{full}/out.tar"),
         "No space left", also=("{full}",)),
    Case("full-disk-oci-layout", full_disk,
         ("process", "tar://{big}", "oci-layout://{full}/layout"), "No space left",
         also=("{full}",)),
    Case("full-disk-oci-layout-mount-point", full_disk,
         ("process", "tar://{big}", "oci-layout://{full}"), "No space left", also=("{full}",)),
    Case("full-disk-dir-expand", full_disk,
         ("process", "tar://{big}", "dir://{full}/out?expand=true"), "No space left",
         also=("{full}",)),
    # a filter spools each layer in the temporary directory: it is the disk that filled
    Case("full-temp-dir-tar", full_temp_dir, ("--temp-dir", "{full}", "process", "tar://{big}",
                                              OUT, "-f", "normalize-timestamps"),
         "No space left", also=("temporary directory {full}",)),
    Case("full-temp-dir-registry", full_temp_dir,
         ("--temp-dir", "{full}", "--insecure", "process", "tar://{big}",
          "registry://{plain}/badinput/full:v1", "-f", "normalize-timestamps"),
         "No space left", also=("temporary directory {full}",)),
    Case("export-to-an-empty-name", with_good_tar, ("export", "tar://{good}", ""),
         "no file named"),
    Case("full-disk-export", full_disk, ("export", "tar://{big}", "{full}/rootfs.tar"),
         "No space left", also=("{full}/rootfs.tar",)),
    Case("read-only-tar", read_only, ("process", "tar://{big}", "tar://{ro}/out.tar"),
         "Read-only"),
    Case("read-only-oci-layout", read_only,
         ("process", "tar://{big}", "oci-layout://{ro}/layout"), "Read-only"),
    Case("read-only-dir-expand", read_only,
         ("process", "tar://{big}", "dir://{ro}/out?expand=true"), "Read-only"),
    # a refused write names where it went, not the temporary file it never made
    Case("read-only-tar-names-no-temp-file", read_only,
         ("process", "tar://{big}", "tar://{ro}/out.tar"), "Read-only", also=("{ro}",),
         not_in=(".tmp",)),
    Case("read-only-export", read_only, ("export", "tar://{big}", "{ro}/rootfs.tar"),
         "Read-only", also=("{ro}",), not_in=(".tmp",)),
    # a name too long is the name's fault, not the directory's: the error shows the name
    Case("export-name-too-long", with_good_tar, ("export", "tar://{good}", "{t}/" + "a" * 300),
         "File name too long", also=("a" * 100,)),
    Case("read-only-login-authfile", read_only_with_basic,
         ("--ca-cert", "{basic_ca}", "login", "{basic}", "-u", "alice", "-p", "alice-secret",
          "--authfile", "{ro}/auth.json"), "Read-only", also=("{ro}",), not_in=(".tmp",)),
]


# ---- the checks ------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """Every path under root: its type and, for files and symlinks, what they hold."""
    out: dict[str, tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", "")
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    out[rel] = ("file", hashlib.sha256(f.read()).hexdigest())
            else:
                out[rel] = ("other", oct(st.st_mode))
    return out


def error_lines(stderr: str) -> list[str]:
    """stderr without the warning log lines a run may print before failing."""
    return [line for line in stderr.splitlines()
            if not line.startswith(("Warning:", "WARNING "))]


def check_clean_error(result: Result, fragments: list[str], exit_code: int = 1,
                      not_in: tuple[str, ...] = ()) -> str:
    """The rules on exit code and stderr; returns the Error: line."""
    stderr = result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"exception escaped the CLI: {result.exception!r}\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert "Error: unexpected" not in stderr, stderr
    assert result.exit_code == exit_code, f"exit {result.exit_code}\n{stderr}"
    lines = error_lines(stderr)
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, f"expected one Error: line, got {len(errors)}:\n{stderr}"
    if exit_code == 1:
        assert lines and lines[0].startswith("Error: "), \
            f"stderr does not start with Error:\n{stderr}"
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    for fragment in not_in:
        assert fragment not in errors[0], f"{fragment!r} in {errors[0]!r}"
    return errors[0]


def check_report(result: Result, fragments: list[str]) -> None:
    """check's findings: exit 1, a report on stdout whose ERROR lines name the problem
    once (not a second, meaningless error after it), and a silent stderr."""
    assert result.exit_code == 1, f"exit {result.exit_code}\n{result.output}"
    assert result.stderr == "", result.stderr
    errors = [line for line in result.stdout.splitlines() if "[ERROR" in line]
    assert errors, result.stdout
    for fragment in fragments:
        assert any(fragment in line for line in errors), f"{fragment!r} not in {errors}"
    layers = [line for line in errors if "layer-read" in line or "tar-format" in line]
    assert len(layers) <= 1, f"one broken layer reported twice: {layers}"


@pytest.fixture
def bad_env(tmp_path: Path, request: pytest.FixtureRequest, quick_clock: Any) -> Env:
    env = Env(tmp_path, request, {"t": str(tmp_path)})
    (tmp_path / "scratch").mkdir()  # every run's --temp-dir: it must stay empty
    return env


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clean_error(case: Case, bad_env: Env, run_cli: Callable[..., Result],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCCYSTRAP_TEMP_DIR", str(bad_env.tmp / "scratch"))
    monkeypatch.setenv("DOCKER_CONFIG", str(bad_env.tmp / "no-docker-config"))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    for name in ("USERNAME", "PASSWORD", "SRC_USERNAME", "SRC_PASSWORD", "DEST_USERNAME",
                 "DEST_PASSWORD", "CA_CERT", "PLATFORM"):
        monkeypatch.delenv(f"OCCYSTRAP_{name}", raising=False)
    case.setup(bad_env)
    args = [arg.format(**bad_env.vars) for arg in case.args]
    fragments = [f.format(**bad_env.vars) for f in (case.fragment, *case.also)]
    before = snapshot(bad_env.tmp)

    result = run_cli("--no-progress", *args)

    problems = []
    try:
        if case.report:
            check_report(result, fragments)
        else:
            check_clean_error(result, fragments, case.exit_code, case.not_in)
    except AssertionError as e:
        problems.append(str(e))
    after = snapshot(bad_env.tmp)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    if added or removed or changed:
        problems.append(f"files changed by a failed run: added {added}, removed {removed}, "
                        f"changed {changed}")
    for name in ("full", "ro"):
        if name in bad_env.vars:
            mount = Path(bad_env.vars[name])
            left = os.listdir(mount)
            vfs = os.statvfs(mount)
            if left or vfs.f_bfree != vfs.f_blocks:
                problems.append(f"tmpfs not empty afterwards: {left}, "
                                f"{(vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize} bytes in use")
    for path in case.absent:
        if os.path.lexists(path):
            problems.append(f"{path} exists afterwards")
    assert not problems, f"occystrap {' '.join(args)}\n" + "\n".join(problems) + \
        f"\n--- stdout:\n{result.stdout}\n--- stderr:\n{result.stderr}"


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 45
    assert len({c.id for c in CASES}) == len(CASES)
