"""Safe extraction and exact whiteouts (occystrap_core.rootfs)."""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from occystrap_core.errors import CorruptImageError
from occystrap_core.layertar import MAX_HEADER
from occystrap_core.rootfs import TreeWriter

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (mknod, chown, trusted.* xattrs)")


def entry(name: str, data: bytes | None = None, *, type: bytes = tarfile.REGTYPE,
          link: str = "", mode: int = 0o644, pax: dict[str, str] | None = None,
          dev: tuple[int, int] = (0, 0)) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = type, link, mode, 1000
    info.devmajor, info.devminor = dev
    if pax:
        info.pax_headers = dict(pax)
    if type == tarfile.DIRTYPE:
        info.mode = 0o755
    if data is not None:
        info.size = len(data)
    return info, data


def d(name: str) -> tuple[tarfile.TarInfo, None]:
    return entry(name, type=tarfile.DIRTYPE)  # type: ignore[return-value]


def tar_of(*entries: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def extract(root, *layers: bytes, overlay: bool = False) -> TreeWriter:
    tree = TreeWriter(str(root), overlay=overlay)
    for i, layer in enumerate(layers):
        tree.apply(io.BytesIO(layer), f"layer {i}")
    tree.close()
    return tree


def listing(root) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, n), root))
    return found


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "rootfs"
    path.mkdir()
    return path


# ---- adversarial layers -------------------------------------------------------

@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/etc/escape"])
def test_traversal_and_absolute_paths_are_refused(tmp_path, root, name):
    with pytest.raises(CorruptImageError, match="refused"):
        extract(root, tar_of(entry(name, b"x")))
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize("target", ["/outside", "../../outside", "../outside"])
def test_writing_through_a_symlink_is_refused(tmp_path, root, target):
    (tmp_path / "outside").mkdir()
    layer = tar_of(entry("evil", type=tarfile.SYMTYPE, link=target),
                   entry("evil/pwned", b"owned"))
    with pytest.raises(CorruptImageError, match="symlink"):
        extract(root, layer)
    assert not (tmp_path / "outside" / "pwned").exists()


def test_symlink_planted_in_a_lower_layer_is_not_followed(tmp_path, root):
    (tmp_path / "outside").mkdir()
    lower = tar_of(entry("etc", type=tarfile.SYMTYPE, link=str(tmp_path / "outside")))
    upper = tar_of(entry("etc/passwd", b"root"))
    with pytest.raises(CorruptImageError, match="symlink"):
        extract(root, lower, upper)
    assert os.listdir(tmp_path / "outside") == []


def test_a_file_replaces_a_symlink_instead_of_writing_through_it(tmp_path, root):
    victim = tmp_path / "victim"
    victim.write_text("safe")
    tree = extract(root, tar_of(entry("f", type=tarfile.SYMTYPE, link=str(victim))),
                   tar_of(entry("f", b"new")))
    assert victim.read_text() == "safe"
    assert not (root / "f").is_symlink() and (root / "f").read_bytes() == b"new"
    assert tree.verify() == []


def test_absolute_symlink_targets_are_kept(root):
    tree = extract(root, tar_of(d("bin"), entry("bin/sh", type=tarfile.SYMTYPE,
                                                link="/usr/bin/dash")))
    assert os.readlink(root / "bin" / "sh") == "/usr/bin/dash"
    assert tree.verify() == []


def test_hardlink_escaping_the_root_is_refused(tmp_path, root):
    (tmp_path / "secret").write_text("s")
    with pytest.raises(CorruptImageError, match="refused"):
        extract(root, tar_of(entry("x", type=tarfile.LNKTYPE, link="../secret")))


def test_hardlink_through_a_symlinked_directory_is_refused(tmp_path, root):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "secret").write_text("s")
    layer = tar_of(entry("lnk", type=tarfile.SYMTYPE, link=str(tmp_path / "out")),
                   entry("x", type=tarfile.LNKTYPE, link="lnk/secret"))
    with pytest.raises(CorruptImageError, match="not extracted"):
        extract(root, layer)


def test_huge_pax_header_is_refused_before_it_is_read(root):
    big = "x" * (MAX_HEADER + 10)
    with pytest.raises(CorruptImageError, match="extended header"):
        extract(root, tar_of(entry("f", b"x", pax={"comment": big})))


def test_truncated_tar_is_an_error(root):
    layer = tar_of(entry("f", b"x" * 5000))
    with pytest.raises(CorruptImageError):
        extract(root, layer[:1024])


# ---- whiteouts ----------------------------------------------------------------

LOWER = tar_of(d("usr"), d("usr/lib"), entry("usr/lib/a", b"a"), d("usr/lib/sub"),
               entry("usr/lib/sub/b", b"b"), d("usr/lib64"), entry("usr/lib64/c", b"c"),
               entry("usr/foo", b"foo"), entry("usr/foobar", b"foobar"),
               d("usr/dir"), entry("usr/dir/x", b"x"), d("usr/dirx"), entry("usr/dirx/y", b"y"))


def test_opaque_directory_clears_exactly_that_directory(root):
    upper = tar_of(d("usr/lib"), entry("usr/lib/.wh..wh..opq", b""), entry("usr/lib/new", b"n"))
    tree = extract(root, LOWER, upper)
    assert sorted(os.listdir(root / "usr" / "lib")) == ["new"]
    assert (root / "usr" / "lib64" / "c").exists()  # a prefix sibling, untouched
    assert tree.verify() == []


def test_opaque_marker_after_same_layer_entries_keeps_them(root):
    upper = tar_of(d("usr/lib"), entry("usr/lib/-early", b"e"), d("usr/lib/sub"),
                   entry("usr/lib/sub/kept", b"k"), entry("usr/lib/.wh..wh..opq", b""))
    extract(root, LOWER, upper)
    assert sorted(os.listdir(root / "usr" / "lib")) == ["-early", "sub"]
    assert os.listdir(root / "usr" / "lib" / "sub") == ["kept"]


def test_file_whiteout_removes_only_that_file(root):
    tree = extract(root, LOWER, tar_of(d("usr"), entry("usr/.wh.foo", b"")))
    assert not (root / "usr" / "foo").exists()
    assert (root / "usr" / "foobar").read_bytes() == b"foobar"
    assert tree.verify() == []


def test_directory_whiteout_removes_the_tree_not_prefix_siblings(root):
    tree = extract(root, LOWER, tar_of(d("usr"), entry("usr/.wh.dir", b"")))
    assert not (root / "usr" / "dir").exists()
    assert (root / "usr" / "dirx" / "y").exists()
    assert tree.verify() == []


def test_whiteouts_of_absent_paths_are_ignored(root):
    upper = tar_of(entry("nowhere/.wh.ghost", b""), entry("usr/.wh.ghost", b""),
                   entry("gone/.wh..wh..opq", b""))
    tree = extract(root, LOWER, upper)
    assert (root / "usr" / "foo").exists()
    assert tree.verify() == []


def test_whiteout_does_not_follow_a_symlinked_parent(tmp_path, root):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("k")
    lower = tar_of(entry("link", type=tarfile.SYMTYPE, link=str(outside)))
    extract(root, lower, tar_of(entry("link/.wh.keep", b""), entry("link/.wh..wh..opq", b"")))
    assert (outside / "keep").exists()


def test_whiteout_then_recreate_across_layers(root):
    tree = extract(root, LOWER, tar_of(d("usr"), entry("usr/.wh.dir", b"")),
                   tar_of(d("usr/dir"), entry("usr/dir/again", b"2")))
    assert os.listdir(root / "usr" / "dir") == ["again"]
    assert tree.verify() == []


def test_type_changes_replace_entries(root):
    lower = tar_of(d("a"), entry("a/x", b"x"), entry("b", b"file"))
    upper = tar_of(entry("a", b"now a file"), d("b"), entry("b/y", b"y"))
    tree = extract(root, lower, upper)
    assert (root / "a").read_bytes() == b"now a file"
    assert (root / "b" / "y").exists()
    assert tree.verify() == []


# ---- special members ----------------------------------------------------------

def test_hardlinks_share_the_inode(root):
    tree = extract(root, tar_of(entry("a", b"data"), entry("b", type=tarfile.LNKTYPE, link="a")))
    assert os.stat(root / "a").st_ino == os.stat(root / "b").st_ino
    assert tree.verify() == []


def test_modes_and_directory_modes_applied_last(root):
    ro, _ = entry("ro", type=tarfile.DIRTYPE)
    ro.mode = 0o555  # applied after its children are written, even across layers
    tree = extract(root, tar_of((ro, None), entry("ro/f", b"x", mode=0o4755)),
                   tar_of((ro, None), entry("ro/g", b"y")))
    assert stat.S_IMODE(os.stat(root / "ro").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(root / "ro" / "f").st_mode) == 0o4755
    assert os.stat(root / "ro" / "f").st_mtime == 1000
    assert tree.verify() == []


@needs_root
def test_device_nodes_and_ownership(root):
    info, _ = entry("dev/null", type=tarfile.CHRTYPE, mode=0o666, dev=(1, 3))
    info.uid, info.gid = 1234, 5678
    tree = extract(root, tar_of(d("dev"), (info, None)))
    st = os.lstat(root / "dev" / "null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert tree.verify() == []


@needs_root
def test_xattrs_and_capabilities_are_set(root):
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    pax = {"SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape"),
           "SCHILY.xattr.user.note": "hello"}
    extract(root, tar_of(entry("ping", b"elf", mode=0o755, pax=pax)))
    assert os.getxattr(root / "ping", "security.capability") == cap
    assert os.getxattr(root / "ping", "user.note") == b"hello"


@needs_root
def test_overlay_mode_whiteouts(root):
    upper = tar_of(d("usr"), entry("usr/.wh.foo", b""), d("usr/lib"),
                   entry("usr/lib/.wh..wh..opq", b""), d("a"), d("a/b"), entry("a/b/.wh.c", b""))
    tree = extract(root, upper, overlay=True)
    for path in ("usr/foo", "a/b/c"):
        st = os.lstat(root / path)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, path
    assert not (root / "b").exists()  # not the old 'name minus 4 characters' bug
    assert os.getxattr(root / "usr" / "lib", "trusted.overlay.opaque") == b"y"
    assert tree.verify() == []


def test_verify_notices_tampering(root):
    tree = extract(root, tar_of(entry("a", b"data"), entry("b", b"more")))
    (root / "a").write_bytes(b"DATA")
    (root / "extra").write_text("x")
    os.unlink(root / "b")
    problems = tree.verify()
    assert any(p.startswith("a: content") for p in problems)
    assert "extra: not from any layer" in problems and "b: missing" in problems
