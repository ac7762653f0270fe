"""dir://, oci-bundle:// and mounts://: layout, atomicity, re-hashing verification."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import stat
import subprocess
import tarfile

import pytest

from occystrap_core.outputs.bundle import resolve_user
from occystrap_core.testing.images import (
    SampleImage,
    build_docker_archive,
    make_layer,
    write_docker_archive,
)

ROOT = os.geteuid() == 0


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def whiteout_layer() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("etc", "etc/.wh.motd", "opt", "opt/.wh..wh..opq"):
            info = tarfile.TarInfo(name)
            if "." not in name:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info, io.BytesIO(b""))
    return out.getvalue()


def image_with(layers: list[bytes], user: str = "", name: str = "example.com/demo/app",
               tag: str = "v1") -> SampleImage:
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Env": ["A=1", "PATH=/bin"], "Entrypoint": ["/entry"],
                         "Cmd": ["--flag"], "WorkingDir": "/srv", "User": user},
              "rootfs": {"type": "layers", "diff_ids": [sha(l) for l in layers]},
              "history": [{"created_by": f"step {i}"} for i in range(len(layers))]}
    return SampleImage(name, tag, tuple(layers), json.dumps(config, indent=1).encode())


BASE = make_layer({"etc/motd": "hello\n", "etc/passwd": "root:x:0:0::/root:/bin/sh\n"
                   "app:x:1000:1001::/home/app:/bin/sh\n",
                   "etc/group": "root:x:0:\napp:x:1001:\nwheel:x:10:app,other\n",
                   "opt/old/file": "old", "srv/data": "d"})


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "src.tar"
    write_docker_archive(str(path), [image_with([BASE, whiteout_layer()], user="app:wheel")])
    return f"tar://{path}"


# ---- dir:// -------------------------------------------------------------------

def test_dir_layout_shares_layers_and_keeps_config_bytes(tmp_path, src, run_cli):
    out = tmp_path / "dir"
    result = run_cli("process", src, f"dir://{out}")
    assert result.exit_code == 0, result.stderr
    assert "verified" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())[0]
    config = (out / manifest["Config"]).read_bytes()
    assert sha(config) == "sha256:" + manifest["Config"].removesuffix(".json")
    assert b'\n "architecture"' in config  # byte for byte, never re-serialised
    for name in manifest["Layers"]:
        assert sha((out / name).read_bytes()) == "sha256:" + name.split("/")[0]
    # a second image sharing the base layer: that layer is not read again
    other = tmp_path / "other.tar"
    write_docker_archive(str(other), [image_with([BASE], tag="v2")])
    again = run_cli("process", f"tar://{other}", f"dir://{out}")
    assert "1 skipped" in again.stderr, again.stderr


def test_dir_takes_up_what_a_killed_run_left(tmp_path, src, run_cli):
    # layers and a temp file, no manifest.json yet: the directory is dir://'s own
    out = tmp_path / "dir"
    assert run_cli("process", src, f"dir://{out}?expand=true").exit_code == 0
    (out / "manifest.json").unlink()
    (out / ".tmp-layer-x").write_bytes(b"half")
    result = run_cli("process", src, f"dir://{out}?expand=true")
    assert result.exit_code == 0, result.stderr
    assert "2 skipped" in result.stderr
    assert not (out / ".tmp-layer-x").exists()
    assert json.loads((out / "manifest.json").read_text())[0]["Layers"]


def test_dir_unique_names_and_catalog(tmp_path, run_cli):
    out = tmp_path / "dir"
    for tag, seed in (("v1", 1), ("v2", 2)):
        info = build_docker_archive(str(tmp_path / f"{tag}.tar"), tag=tag, seed=seed)
        assert run_cli("process", f"tar://{info['path']}",
                       f"dir://{out}?unique_names=true").exit_code == 0
    catalog = json.loads((out / "catalog.json").read_text())
    assert catalog == {"example.com/demo/app": {
        "v1": "manifest-example.com_demo_app-v1.json",
        "v2": "manifest-example.com_demo_app-v2.json"}}
    entry = json.loads((out / catalog["example.com/demo/app"]["v2"]).read_text())[0]
    assert entry["ImageName"] == "example.com/demo/app:v2"


def test_dir_unique_names_that_flatten_alike_keep_their_own_files(tmp_path, run_cli,
                                                                   info_json):
    # "app-dev:1" and "app:dev-1" (or "a_b/c" and "a/b_c") gave the same file name: the
    # second image replaced the first one's manifest (and rootfs), which the catalog still
    # named for the first
    out = tmp_path / "dir"
    built = {}
    for i, (name, tag) in enumerate((("example.com/app-dev", "1"), ("example.com/app", "dev-1"),
                                     ("example.com/a_b/c", "1"), ("example.com/a/b_c", "1"))):
        built[f"{name}:{tag}"] = build_docker_archive(str(tmp_path / f"{i}.tar"), name=name,
                                                      tag=tag, seed=i)
        result = run_cli("process", f"tar://{tmp_path / f'{i}.tar'}",
                         f"dir://{out}?unique_names=true&expand=true")
        assert result.exit_code == 0, result.stderr
    catalog = json.loads((out / "catalog.json").read_text())
    files = [f for tags in catalog.values() for f in tags.values()]
    assert len(set(files)) == 4
    assert catalog["example.com/app-dev"]["1"] == "manifest-example.com_app-dev-1.json"
    for reference, info in built.items():
        assert info_json(f"dir://{out}?image={reference}")["config_digest"] == \
            info["config_digest"], reference
    assert len([p for p in os.listdir(out) if p.startswith("rootfs-")]) == 4


def test_dir_expand_applies_whiteouts(tmp_path, src, run_cli):
    out = tmp_path / "dir"
    result = run_cli("process", src, f"dir://{out}?expand=true")
    assert result.exit_code == 0, result.stderr
    rootfs = out / "rootfs"
    assert (rootfs / "etc" / "passwd").exists() and not (rootfs / "etc" / "motd").exists()
    assert os.listdir(rootfs / "opt") == []
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")]


def test_dir_verify_rehashes(tmp_path, src):
    from occystrap_core import pipeline
    from occystrap_core.context import Context

    with Context() as ctx:
        output = pipeline.build_output(ctx, f"dir://{tmp_path / 'dir'}")
        with pipeline.build_input(ctx, src) as source:
            pipeline.run(ctx, source, output)
        assert output.verify() == []
        manifest = json.loads((tmp_path / "dir" / "manifest.json").read_text())[0]
        layer = tmp_path / "dir" / manifest["Layers"][0]
        layer.write_bytes(layer.read_bytes()[:-1] + b"\x01")
        assert any("does not match its name" in p for p in output.verify())


def test_dir_abort_removes_what_it_created(tmp_path, run_cli):
    good = make_layer({"a": "a"})
    image = image_with([good, good[:600]])  # the second layer is truncated
    path = tmp_path / "bad.tar"
    write_docker_archive(str(path), [image])
    result = run_cli("process", f"tar://{path}", f"dir://{tmp_path / 'dir'}?expand=true")
    assert result.exit_code == 1 and result.stderr.startswith("Error:")
    assert not (tmp_path / "dir").exists()


def _tree(root) -> dict[str, bytes | None]:
    """Every path under root, with the content of its files."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("catalog", [b"{not json", b'["a list"]', b'{"app": "v1"}'])
def test_dir_a_failed_run_leaves_what_was_there(tmp_path, run_cli, catalog):
    """A run that fails as it ends (here on a damaged catalog) must not have replaced
    the earlier image of the same name and tag, its root filesystem included."""
    out = f"dir://{tmp_path / 'dir'}?unique_names=true&expand=true"
    for seed in (1, 2):
        build_docker_archive(str(tmp_path / f"{seed}.tar"), tag="v1", seed=seed)
    assert run_cli("process", f"tar://{tmp_path / '1.tar'}", out).exit_code == 0
    (tmp_path / "dir" / "catalog.json").write_bytes(catalog)
    before = _tree(tmp_path / "dir")
    assert any(name.startswith("rootfs-") for name in before)
    result = run_cli("process", f"tar://{tmp_path / '2.tar'}", out)
    assert result.exit_code == 1, result.stderr
    assert result.stderr.startswith("Error: ") and "catalog.json" in result.stderr
    assert "unexpected" not in result.stderr, result.stderr
    assert _tree(tmp_path / "dir") == before


# ---- oci-bundle:// -------------------------------------------------------------

def test_bundle_runtime_config_from_the_image(tmp_path, src, run_cli):
    out = tmp_path / "bundle"
    result = run_cli("process", src, f"oci-bundle://{out}")
    assert result.exit_code == 0, result.stderr
    assert "verified" in result.stderr
    spec = json.loads((out / "config.json").read_text())
    process = spec["process"]
    assert process["args"] == ["/entry", "--flag"]
    assert process["env"] == ["PATH=/bin", "A=1", "HOME=/home/app"]  # PATH replaces the default
    assert process["cwd"] == "/srv"
    assert process["user"] == {"uid": 1000, "gid": 10}
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert (out / "rootfs" / "etc" / "passwd").exists()
    assert not (out / "rootfs" / "etc" / "motd").exists()
    assert sorted(os.listdir(tmp_path)) == ["bundle", "src.tar"]


@pytest.fixture
def mount_point(tmp_path):
    """An empty tmpfs mounted at tmp_path/bundle (mode 0750), unmounted afterwards."""
    out = tmp_path / "bundle"
    out.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0750", "tmpfs", str(out)],
                   check=True, capture_output=True)
    yield out
    subprocess.run(["umount", "-l", str(out)], check=False, capture_output=True)


@pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root")
def test_bundle_in_an_empty_mount_point(mount_point, src, run_cli, tmp_path):
    """An empty directory given is kept (a mount point, a volume, cannot be replaced):
    the bundle is built in it, and a run that fails leaves it empty."""
    good = make_layer({"a": "a"})
    write_docker_archive(str(tmp_path / "bad.tar"), [image_with([good, good[:600]])])
    result = run_cli("process", f"tar://{tmp_path / 'bad.tar'}", f"oci-bundle://{mount_point}")
    assert result.exit_code == 1 and result.stderr.startswith("Error:"), result.stderr
    assert os.listdir(mount_point) == []
    result = run_cli("process", src, f"oci-bundle://{mount_point}")
    assert result.exit_code == 0, result.stderr
    assert "verified" in result.stderr
    assert sorted(os.listdir(mount_point)) == ["config.json", "rootfs"]
    assert os.path.ismount(mount_point) and stat.S_IMODE(mount_point.stat().st_mode) == 0o750
    assert (mount_point / "rootfs" / "etc" / "passwd").exists()


def test_bundle_refuses_an_existing_directory(tmp_path, src, run_cli):
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "keep").write_text("x")
    result = run_cli("process", src, f"oci-bundle://{tmp_path / 'bundle'}")
    assert result.exit_code == 1 and "exists" in result.stderr
    assert os.listdir(tmp_path / "bundle") == ["keep"]


@pytest.mark.parametrize("user,expected", [
    ("", {"uid": 0, "gid": 0}),
    ("app", {"uid": 1000, "gid": 1001, "additionalGids": [10]}),
    ("1000", {"uid": 1000, "gid": 1001, "additionalGids": [10]}),
    ("4242:77", {"uid": 4242, "gid": 77}),
    ("app:root", {"uid": 1000, "gid": 0, "additionalGids": [10]}),
])
def test_resolve_user(user, expected):
    passwd = b"root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
    group = b"root:x:0:\napp:x:1001:\nwheel:x:10:app,other\n"
    assert resolve_user(user, passwd, group) == expected


def test_resolve_unknown_user_is_an_error():
    from occystrap_core.errors import CorruptImageError

    with pytest.raises(CorruptImageError, match="nobody"):
        resolve_user("nobody", None, None)


# ---- mounts:// ----------------------------------------------------------------

@pytest.mark.skipif(not ROOT, reason="mounts:// needs root (mknod, trusted.* xattrs)")
def test_mounts_overlay_layers(tmp_path, src, run_cli):
    out = tmp_path / "mounts"
    result = run_cli("process", src, f"mounts://{out}")
    assert result.exit_code == 0, result.stderr
    assert "verified" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    lower, upper = manifest["layers"]
    assert manifest["lowerdir"] == f"{upper}:{lower}"
    st = os.lstat(os.path.join(upper, "etc", "motd"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(os.path.join(upper, "opt"), "trusted.overlay.opaque") == b"y"
    assert os.path.exists(os.path.join(lower, "opt", "old", "file"))


def kernel_lowerdirs(option: str) -> list[str]:
    """How overlayfs splits a ``lowerdir=`` value: on unescaped ``:``, ``\\`` escaping
    the next character (fs/overlayfs/params.c)."""
    dirs, current, escaped = [], "", False
    for ch in option:
        if escaped:
            current, escaped = current + ch, False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            dirs, current = dirs + [current], ""
        elif ch == ",":
            raise AssertionError(f"an unescaped comma ends the option: {option}")
        else:
            current += ch
    return dirs + [current]


@pytest.mark.skipif(not ROOT, reason="mounts:// needs root (mknod, trusted.* xattrs)")
def test_mounts_lowerdir_escapes_colons_and_commas(tmp_path, src):
    from occystrap_core import library

    out = tmp_path / "a:b,c\\d"
    result = library.copy(src, f"mounts://{out}")
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(layer.startswith(str(out) + "/") for layer in manifest["layers"])
    assert kernel_lowerdirs(manifest["lowerdir"]) == manifest["layers"][::-1]
    mount = result.details["mount"]  # a shell command: the option quoted
    option = shlex.split(mount)[shlex.split(mount).index("-o") + 1]
    assert kernel_lowerdirs(option.removeprefix("lowerdir=")) == manifest["layers"][::-1]


def test_mounts_without_root_is_refused(tmp_path, src, run_cli, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = run_cli("process", src, f"mounts://{tmp_path / 'm'}")
    assert result.exit_code == 1 and "needs root" in result.stderr
    assert not (tmp_path / "m").exists()



def test_process_fails_when_verification_finds_problems(tmp_path, src, run_cli, monkeypatch):
    from occystrap_core.outputs.directory import DirOutput

    monkeypatch.setattr(DirOutput, "verify", lambda self: ["layer.tar: tampered"])
    result = run_cli("process", src, f"dir://{tmp_path / 'dir'}")
    assert result.exit_code == 1
    assert "Verify: layer.tar: tampered" in result.stderr and "verify failed" in result.stderr
