"""normalize-timestamps and exclude: streaming layer rewrites, end to end through the CLI."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import subprocess
import tarfile
from typing import Any

import pytest

from occystrap_core.filters.exclude import PathMatcher
from occystrap_core.testing.images import (
    SampleImage,
    write_docker_archive,
    write_oci_layout,
)

CAP = b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\x00" * 12


def member(name: str, data: bytes | None = None, *, type: bytes = tarfile.REGTYPE,
           link: str = "", mtime: float = 1000, pax: dict[str, str] | None = None,
           mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime, info.mode = type, link, mtime, mode
    info.pax_headers = dict(pax or {})
    if data is not None:
        info.size = len(data)
    if type == tarfile.DIRTYPE:
        info.mode = 0o755
    return info, data


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_of(layers: list[bytes], created: str = "2024-01-01T00:00:00Z",
             name: str = "example.com/demo/app", tag: str = "v1") -> SampleImage:
    config = {"architecture": "amd64", "os": "linux", "created": created,
              "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": [sha(l) for l in layers]},
              "history": [{"created": created, "created_by": f"step {i}"}
                          for i in range(len(layers))]}
    return SampleImage(name, tag, tuple(layers), json.dumps(config).encode())


def tree(mtime: float) -> list[bytes]:
    """A small two-layer image whose content does not depend on ``mtime``."""
    return [tar_of(member("etc", type=tarfile.DIRTYPE, mtime=mtime),
                   member("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", mtime=mtime,
                          pax={"atime": str(mtime + 0.5), "ctime": str(mtime + 0.25)}),
                   member("bin", type=tarfile.DIRTYPE, mtime=mtime),
                   member("bin/ping", b"\x7fELF", mtime=mtime + 0.123, mode=0o755,
                          pax={"SCHILY.xattr.security.capability":
                               CAP.decode("utf-8", "surrogateescape")}),
                   member("bin/ping6", type=tarfile.LNKTYPE, link="bin/ping", mtime=mtime),
                   member("dev", type=tarfile.DIRTYPE, mtime=mtime),
                   member("dev/null", type=tarfile.CHRTYPE, mtime=mtime)),
            tar_of(member("tmp", type=tarfile.DIRTYPE, mtime=mtime),
                   member("tmp/cache.pyc", b"pyc", mtime=mtime),
                   member("etc/.wh.old", b"", mtime=mtime))]


def read_output(path) -> tuple[dict[str, Any], list[list[tarfile.TarInfo]], dict[str, bytes]]:
    """The config, each layer's members and each file's content in a tar:// output."""
    with tarfile.open(path) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]
        config = json.load(outer.extractfile(manifest["Config"]))
        layers, contents = [], {}
        for name in manifest["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(outer.extractfile(name).read())) as layer:
                layers.append(layer.getmembers())
                for m in layers[-1]:
                    if m.isreg():
                        contents[m.name] = layer.extractfile(m).read()
    return config, layers, contents


def names(layers: list[list[tarfile.TarInfo]]) -> list[list[str]]:
    return [[m.name for m in layer] for layer in layers]


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "src.tar"
    write_docker_archive(str(path), [image_of(tree(1000))])
    return f"tar://{path}"


def test_normalize_makes_two_builds_identical(tmp_path, run_cli):
    digests = []
    for i, (mtime, created) in enumerate(((1000, "2024-01-01T00:00:00Z"),
                                          (2000.75, "2025-06-01T12:00:00Z"))):
        layout = tmp_path / f"build{i}"
        write_oci_layout(str(layout), [image_of(tree(mtime), created=created)])  # gzip layers
        out = tmp_path / f"out{i}"
        result = run_cli("process", f"oci-layout://{layout}", f"oci-layout://{out}",
                         "-f", "normalize-timestamps:ts=42")
        assert result.exit_code == 0, result.stderr
        index = json.loads((out / "index.json").read_text())
        digests.append(index["manifests"][0]["digest"])
        assert run_cli("check", f"oci-layout://{out}").exit_code == 0
    assert digests[0] == digests[1]


def annotate(layout, annotations: dict[str, str]) -> None:
    """Give the layout's (only) manifest ``annotations``, as buildah and buildx write them."""
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    blob = layout / "blobs" / "sha256" / entry["digest"].split(":")[1]
    manifest = json.loads(blob.read_bytes())
    manifest["annotations"] = annotations
    data = json.dumps(manifest).encode()
    (layout / "blobs" / "sha256" / sha(data).split(":")[1]).write_bytes(data)
    entry.update(digest=sha(data), size=len(data))
    (layout / "index.json").write_text(json.dumps(index))


def test_normalize_sets_the_manifest_created_annotation(tmp_path, run_cli):
    # the manifest's org.opencontainers.image.created differed between two builds of the
    # same content, and so did the manifest digest normalize-timestamps is there to fix
    digests = []
    for i, created in enumerate(("2024-01-01T00:00:00Z", "2025-06-01T12:00:00Z")):
        layout = tmp_path / f"build{i}"
        write_oci_layout(str(layout), [image_of(tree(1000), created=created)])
        annotate(layout, {"org.opencontainers.image.created": created, "keep": "me"})
        out = tmp_path / f"out{i}"
        result = run_cli("process", f"oci-layout://{layout}", f"oci-layout://{out}",
                         "-f", "normalize-timestamps:ts=42")
        assert result.exit_code == 0, result.stderr
        entry = json.loads((out / "index.json").read_text())["manifests"][0]
        manifest = json.loads((out / "blobs" / "sha256" / entry["digest"].split(":")[1])
                              .read_bytes())
        assert manifest["annotations"] == {"org.opencontainers.image.created":
                                           "1970-01-01T00:00:42Z", "keep": "me"}
        digests.append(entry["digest"])
    assert digests[0] == digests[1]
    # config=false keeps the build dates, in the manifest too
    out = tmp_path / "kept"
    assert run_cli("process", f"oci-layout://{tmp_path / 'build1'}", f"oci-layout://{out}",
                   "-f", "normalize-timestamps:ts=42,config=false").exit_code == 0
    entry = json.loads((out / "index.json").read_text())["manifests"][0]
    assert json.loads((out / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes())[
        "annotations"]["org.opencontainers.image.created"] == "2025-06-01T12:00:00Z"


def test_normalize_rewrites_times_and_keeps_the_rest(tmp_path, src, run_cli):
    out = tmp_path / "out.tar"
    assert run_cli("process", src, f"tar://{out}", "-f", "normalize-timestamps:ts=7").exit_code == 0
    config, layers, contents = read_output(out)
    assert {m.mtime for layer in layers for m in layer} == {7}
    ping = next(m for m in layers[0] if m.name == "bin/ping")
    assert ping.pax_headers["SCHILY.xattr.security.capability"].encode(
        "utf-8", "surrogateescape") == CAP
    passwd = next(m for m in layers[0] if m.name == "etc/passwd")
    assert "atime" not in passwd.pax_headers and "ctime" not in passwd.pax_headers
    link = next(m for m in layers[0] if m.name == "bin/ping6")
    assert link.islnk() and link.linkname == "bin/ping"
    assert next(m for m in layers[0] if m.name == "dev/null").ischr()
    assert config["created"] == "1970-01-01T00:00:07Z"
    assert {h["created"] for h in config["history"]} == {"1970-01-01T00:00:07Z"}
    assert contents["etc/passwd"].startswith(b"root:")


def test_normalize_config_false_keeps_created(tmp_path, src, run_cli):
    out = tmp_path / "out.tar"
    result = run_cli("process", src, f"tar://{out}", "-f", "normalize-timestamps:config=false")
    assert result.exit_code == 0, result.stderr
    config, layers, _ = read_output(out)
    assert config["created"] == "2024-01-01T00:00:00Z"
    assert {m.mtime for layer in layers for m in layer} == {0}


def test_exclude_several_patterns_from_the_cli(tmp_path, src, run_cli):
    out = tmp_path / "out.tar"
    result = run_cli("process", src, f"tar://{out}",
                     "-f", "exclude:pattern=/tmp/*,pattern=*.pyc,pattern=dev")
    assert result.exit_code == 0, result.stderr
    _, layers, _ = read_output(out)
    assert names(layers) == [["etc", "etc/passwd", "bin", "bin/ping", "bin/ping6"],
                             ["tmp", "etc/.wh.old"]]
    assert run_cli("check", f"tar://{out}").exit_code == 0


def test_excluded_hardlink_target_moves_to_the_first_link(tmp_path, run_cli):
    layer = tar_of(member("data", type=tarfile.DIRTYPE),
                   member("data/big", b"payload"),
                   member("keep1", type=tarfile.LNKTYPE, link="data/big"),
                   member("data/other", type=tarfile.LNKTYPE, link="data/big"),
                   member("keep2", type=tarfile.LNKTYPE, link="data/other"))
    path = tmp_path / "src.tar"
    write_docker_archive(str(path), [image_of([layer])])
    out = tmp_path / "out.tar"
    assert run_cli("process", f"tar://{path}", f"tar://{out}", "-f",
                   "exclude:pattern=data").exit_code == 0
    _, layers, contents = read_output(out)
    keep1, keep2 = layers[0]
    assert keep1.isreg() and contents["keep1"] == b"payload"
    assert keep2.islnk() and keep2.linkname == "keep1"
    assert run_cli("check", f"tar://{out}").exit_code == 0


def test_hardlink_to_a_file_excluded_in_a_lower_layer_is_refused(tmp_path, run_cli):
    # Its content is in the lower layer only: kept as a link, it would name a file the
    # image no longer has, and umoci, containerd and docker would fail to unpack it.
    layers = [tar_of(member("big", type=tarfile.DIRTYPE), member("big/data", b"payload")),
              tar_of(member("bin", type=tarfile.DIRTYPE),
                     member("bin/x", type=tarfile.LNKTYPE, link="big/data"))]
    path = tmp_path / "src.tar"
    write_docker_archive(str(path), [image_of(layers)])
    out = tmp_path / "out"
    result = run_cli("process", f"tar://{path}", f"oci-layout://{out}", "-f",
                     "exclude:pattern=big")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error:") and "'bin/x'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    # excluding the link as well gives an image umoci unpacks
    assert run_cli("process", f"tar://{path}", f"oci-layout://{out}", "-f",
                   "exclude:pattern=big,pattern=bin/x").exit_code == 0
    unpacked = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{out}:v1",
                               str(tmp_path / "bundle")], capture_output=True, text=True)
    assert unpacked.returncode == 0, unpacked.stderr
    assert sorted(p.name for p in (tmp_path / "bundle" / "rootfs").iterdir()) == ["bin"]


def test_whiteouts_are_kept_unless_their_directory_is_excluded(tmp_path, run_cli):
    layer = tar_of(member("etc/.wh.secret", b""), member("tmp/.wh.x", b""),
                   member("tmp/.wh..wh..opq", b""))
    path = tmp_path / "src.tar"
    write_docker_archive(str(path), [image_of([layer])])
    out = tmp_path / "out.tar"
    assert run_cli("process", f"tar://{path}", f"tar://{out}", "-f",
                   "exclude:pattern=secret,pattern=tmp").exit_code == 0
    assert names(read_output(out)[1]) == [["etc/.wh.secret"]]


@pytest.mark.parametrize("pattern,path,hit", [
    ("*.pyc", "a/b/c.pyc", True), ("/tmp/*", "tmp/x/y", True), ("tmp/*", "tmp", False),
    ("usr/**/doc", "usr/share/doc/f", True), ("usr/*/doc", "usr/a/b/doc", False),
    ("*.{a,b}", "x/y.b", True), ("[!x]y", "zy", True), ("pattern=1", "pattern=1", True),
    # "." and empty components are dropped, as from member names: "./tmp" is "/tmp"
    ("./tmp", "tmp/x", True), ("./*.pyc", "b.pyc", True), ("./*.pyc", "a/b.pyc", False),
    ("usr//./share", "usr/share/doc", True),
])
def test_exclude_glob_semantics(pattern, path, hit):
    assert PathMatcher([pattern]).matches(path) is hit


FILTERS = ["normalize-timestamps:ts=1", "exclude:pattern=*.pyc", "search:pattern=passwd",
           "inspect:file={inspect}"]


@pytest.mark.parametrize("order", list(itertools.permutations(range(4)))[::5])
@pytest.mark.parametrize("dest", ["tar://{out}.tar", "oci-layout://{out}"])
def test_filter_chains_in_any_order_pass_check(tmp_path, run_cli, order, dest):
    write_oci_layout(str(tmp_path / "src"), [image_of(tree(1000))])
    filters = [FILTERS[i].format(inspect=tmp_path / "h.jsonl") for i in order]
    target = dest.format(out=tmp_path / "out")
    args = [a for f in filters for a in ("-f", f)]
    result = run_cli("-j", "3", "process", f"oci-layout://{tmp_path / 'src'}", target, *args)
    assert result.exit_code == 0, result.stderr
    assert "etc/passwd (file, 26 bytes)" in result.stdout
    checked = run_cli("check", target, "-O", "json")
    assert checked.exit_code == 0, checked.stdout
    assert json.loads(checked.stdout)["errors"] == 0
    history = json.loads((tmp_path / "h.jsonl").read_text().splitlines()[-1])
    assert len(history["layers"]) == 2


def test_failed_rewrite_leaves_no_output(tmp_path, run_cli):
    layers = [tar_of(member("f", b"x" * 3000))]
    image = image_of(layers)
    broken = SampleImage(image.name, image.tag, (layers[0][:1536],), image.config)
    path = tmp_path / "src.tar"
    write_docker_archive(str(path), [broken])
    out = tmp_path / "out.tar"
    result = run_cli("process", f"tar://{path}", f"tar://{out}", "-f", "exclude:pattern=x")
    assert result.exit_code == 1 and result.stderr.startswith("Error:")
    assert not out.exists()


def test_bad_filter_options_are_one_line_errors(src, tmp_path, run_cli):
    for spec in ("exclude", "exclude:pattern=./", "exclude:pattern=a/../b",
                 "normalize-timestamps:ts=abc", "normalize-timestamps:ts=-1",
                 "search:pattern=[,regex=true"):
        result = run_cli("process", src, f"tar://{tmp_path / 'o.tar'}", "-f", spec)
        assert result.exit_code == 1 and result.stderr.startswith("Error:"), spec
