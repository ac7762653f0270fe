"""Hostile layer tars, for testing that nothing a layer says escapes the output.

:func:`payloads` returns every attack as a :class:`Payload`: raw, uncompressed
layer tars built byte by byte (so they can hold what :mod:`tarfile` refuses to
write: bad checksums, truncated members, NUL bytes, oversized headers).
``outside`` is the absolute path of a directory outside the output that the test
fills with canaries (:func:`fill_outside`); the payloads aim absolute paths,
``..`` chains, symlinks, hardlinks and whiteouts at it. :func:`write_archive`
wraps one payload in a docker-save archive with a valid config::

    for payload in payloads("/tmp/sandbox/outside"):
        write_archive(payload, f"/tmp/archives/{payload.name}.tar")

Nothing here aims at a path that is not under ``outside`` (a ``..`` chain goes
up to ``/`` and back down into ``outside``), so a broken extractor damages the
sandbox only. Payload names are the same whatever ``outside`` is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import digest as digests
from .images import CREATED, MTIME, SampleImage, write_docker_archive

BLOCK = 512
END = b"\0" * (2 * BLOCK)
USTAR_MAGIC = b"ustar\x0000"
GNU_MAGIC = b"ustar  \x00"

#: The canaries :func:`fill_outside` writes, relative to ``outside``.
CANARY = "canary.txt"
INNER = "dir/inner.txt"
CANARIES = {CANARY: b"canary: must never change\n", INNER: b"inner canary\n"}

#: Enough ``..`` to reach ``/`` from any extraction root, then back down to ``outside``.
UP = "../" * 30

Name = str | bytes


@dataclass(frozen=True)
class Payload:
    """One attack: ``layers`` are raw uncompressed layer tars, lowest first."""

    name: str
    description: str
    layers: tuple[bytes, ...]


def fill_outside(outside: str) -> None:
    """Create ``outside`` and its canaries (``canary.txt``, ``dir/inner.txt``)."""
    os.makedirs(os.path.join(outside, "dir"), exist_ok=True)
    for rel, data in CANARIES.items():
        with open(os.path.join(outside, rel), "wb") as f:
            f.write(data)
        os.chmod(os.path.join(outside, rel), 0o644)


# ---- tar, byte by byte ------------------------------------------------------

def _b(value: Name) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _num(value: int, width: int) -> bytes:
    """An octal field, or GNU base-256 when the value does not fit one."""
    if value >= 8 ** (width - 1):
        return b"\x80" + value.to_bytes(width - 1, "big")
    return b"%0*o\0" % (width - 1, value)


def _field(value: bytes, width: int) -> bytes:
    if len(value) > width:
        raise ValueError(f"{value[:40]!r}... does not fit {width} bytes")
    return value.ljust(width, b"\0")


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def header(name: Name, *, type: bytes = b"0", size: int = 0, linkname: Name = b"",
           mode: int = 0o644, uid: int = 0, gid: int = 0, mtime: int = MTIME,
           devmajor: int = 0, devminor: int = 0, magic: bytes = USTAR_MAGIC,
           bad_checksum: bool = False) -> bytes:
    """One header; ``bad_checksum`` stores a checksum off by one.

    A name longer than 100 bytes goes in the ustar prefix field when it can be
    split at a ``/``, else (like a link name of more than 100 bytes) in a PAX record.
    """
    raw, prefix, extra = _b(name), b"", dict[str, Name]()
    if len(raw) > 100:
        cut = raw.rfind(b"/", 0, 156)
        if cut > 0 and len(raw) - cut - 1 <= 100:
            prefix, raw = raw[:cut], raw[cut + 1:]
        else:
            extra["path"], raw = raw, raw[:100]
    if len(_b(linkname)) > 100:
        extra["linkpath"], linkname = _b(linkname), _b(linkname)[:100]
    block = b"".join([
        _field(raw, 100), _num(mode, 8), _num(uid, 8), _num(gid, 8), _num(size, 12),
        _num(mtime, 12), b" " * 8, type, _field(_b(linkname), 100), magic,
        _field(b"root", 32), _field(b"root", 32), _num(devmajor, 8), _num(devminor, 8),
        _field(prefix, 155), b"\0" * 12])
    assert len(block) == BLOCK
    checksum = sum(block) + (1 if bad_checksum else 0)
    block = block[:148] + b"%06o\0 " % checksum + block[156:]
    return (pax(extra) if extra else b"") + block


def file(name: Name, data: bytes = b"pwned\n", **kw: Any) -> bytes:
    return header(name, size=len(data), **kw) + _pad(data)


def directory(name: Name, mode: int = 0o755, **kw: Any) -> bytes:
    return header(name, type=b"5", mode=mode, **kw)


def symlink(name: Name, target: Name, **kw: Any) -> bytes:
    return header(name, type=b"2", linkname=target, mode=0o777, **kw)


def hardlink(name: Name, target: Name, **kw: Any) -> bytes:
    return header(name, type=b"1", linkname=target, **kw)


def _pax_record(key: Name, value: Name) -> bytes:
    body = b" " + _b(key) + b"=" + _b(value) + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def pax(records: Mapping[str, Name], *, glob: bool = False) -> bytes:
    """A PAX extended header (``g``lobal with ``glob``) applying to the next member."""
    body = b"".join(_pax_record(k, v) for k, v in records.items())
    return header("PaxHeader/entry", type=b"g" if glob else b"x", size=len(body)) + _pad(body)


def gnu_long(kind: bytes, value: Name) -> bytes:
    """A GNU ``L`` (long name) or ``K`` (long link name) record for the next member."""
    data = _b(value) + b"\0"
    return header("././@LongLink", type=kind, size=len(data), magic=GNU_MAGIC) + _pad(data)


def layer(*members: bytes) -> bytes:
    """A complete layer: the members, then the two zero blocks."""
    return b"".join(members) + END


# ---- the payloads -----------------------------------------------------------

def payloads(outside: str) -> list[Payload]:
    """Every attack, aimed at ``outside`` (an absolute path outside the output)."""
    if not os.path.isabs(outside):
        raise ValueError(f"outside must be an absolute path, not {outside!r}")
    o = outside.rstrip("/")
    canary = f"{o}/{CANARY}"
    deep = UP + o.lstrip("/")  # "../../..(30)/<outside>": outside, from any root
    keep = file("keep.txt", b"lower layer\n")
    link_out = symlink("link", o)
    found: list[Payload] = []

    def add(name: str, description: str, *layers: bytes) -> None:
        found.append(Payload(name, description, tuple(layers)))

    # -- whiteouts whose target is ".", "..", the root or outside
    add("wh-dot", "'.wh..' whites out '.', the extraction root itself",
        layer(keep), layer(file(".wh..", b"")))
    add("wh-dotdot", "'.wh...' whites out '..', the parent of the extraction root",
        layer(keep), layer(file(".wh...", b"")))
    add("wh-dir-dot", "'dir/.wh..' whites out 'dir/.'",
        layer(directory("dir"), file("dir/keep.txt")), layer(file("dir/.wh..", b"")))
    add("wh-dir-dotdot", "'dir/.wh...' whites out 'dir/..', i.e. the root",
        layer(directory("dir"), file("dir/keep.txt")), layer(file("dir/.wh...", b"")))
    add("wh-empty", "'.wh.' names nothing (the empty name: the root directory)",
        layer(keep), layer(file(".wh.", b"")))
    add("wh-parent", "'../.wh.keep.txt': a whiteout in the parent of the root",
        layer(keep), layer(file("../.wh.keep.txt", b"")))
    add("wh-dotdot-chain", "a '..' chain to a whiteout of outside/canary.txt",
        layer(keep), layer(file(f"{deep}/.wh.{CANARY}", b"")))
    add("wh-absolute", "an absolute whiteout of outside/canary.txt",
        layer(keep), layer(file(f"{o}/.wh.{CANARY}", b"")))
    add("wh-opaque-absolute", "an absolute opaque marker in outside (would empty it)",
        layer(keep), layer(file(f"{o}/.wh..wh..opq", b"")))
    add("wh-opaque-under-symlink", "layer 1 'link -> outside', layer 2 'link/.wh..wh..opq'",
        layer(link_out), layer(file("link/.wh..wh..opq", b"")))
    add("wh-file-under-symlink", "layer 1 'link -> outside', layer 2 'link/.wh.canary.txt'",
        layer(link_out), layer(file(f"link/.wh.{CANARY}", b"")))
    add("wh-dir-under-symlink", "layer 1 'link -> outside', layer 2 'link/.wh.dir' "
        "(would delete outside/dir)", layer(link_out), layer(file("link/.wh.dir", b"")))
    add("wh-symlink-to-outside-dir", "layer 1 'link -> outside', layer 2 '.wh.link': the "
        "link must be unlinked, never the directory it points to removed",
        layer(link_out), layer(file(".wh.link", b"")))

    # -- member paths that are absolute or climb out
    add("dotdot-short", "'../../dotdot-escape': two levels above the extraction root",
        layer(file("../../dotdot-escape")))
    add("dotdot-deep", "a '..' chain down into outside: outside/dotdot-evil",
        layer(file(f"{deep}/dotdot-evil")))
    add("absolute-member", "an absolute member path: outside/abs-evil",
        layer(file(f"{o}/abs-evil")))
    add("absolute-overwrite", "an absolute member path overwriting outside/canary.txt",
        layer(file(canary)))
    add("a-dotdot", "'a/../../x': a '..' after a real directory",
        layer(directory("a"), file("a/../../x")))
    add("pax-path-dotdot", "a PAX 'path=' record with a '..' chain into outside "
        "(the ustar name is harmless)",
        layer(pax({"path": f"{deep}/pax-evil"}), file("innocent")))
    add("pax-path-absolute", "a PAX 'path=' record with an absolute path into outside",
        layer(pax({"path": f"{o}/pax-abs-evil"}), file("innocent")))
    add("pax-global-path", "a PAX global header 'path=' aiming into outside, applied to "
        "a later member with its own extended header",
        layer(pax({"path": f"{deep}/pax-global-evil"}, glob=True),
              pax({"mtime": str(MTIME)}), file("innocent")))
    add("gnu-longname-dotdot", "a GNU long-name record with a '..' chain into outside",
        layer(gnu_long(b"L", f"{deep}/gnu-evil"), file("innocent", magic=GNU_MAGIC)))
    add("gnu-longname-absolute", "a GNU long-name record with an absolute path",
        layer(gnu_long(b"L", f"{o}/gnu-abs-evil"), file("innocent", magic=GNU_MAGIC)))
    add("root-as-symlink", "'./' as a symlink to outside, then a file 'evil' in the root",
        layer(symlink("./", o), file("evil")))

    # -- symlinks written through
    add("symlink-write-across-layers", "layer 1 'link -> outside', layer 2 writes "
        "'link/canary.txt'", layer(link_out), layer(file(f"link/{CANARY}")))
    add("symlink-chain", "layer 1 'a -> b', 'b -> outside', layer 2 writes 'a/chain-evil'",
        layer(symlink("a", "b"), symlink("b", o)), layer(file("a/chain-evil")))
    add("symlink-write-same-layer", "'link -> outside' then 'link/evil' in one layer",
        layer(link_out, file("link/evil")))
    add("symlink-relative-write", "'link -> ../../..(30)/outside' (relative), then "
        "'link/dir/inner.txt'", layer(symlink("link", deep), file(f"link/{INNER}")))
    add("dir-under-symlink", "layer 1 'link -> outside', layer 2 a directory "
        "'link/evildir' (mode 0777)", layer(link_out), layer(directory("link/evildir", 0o777)))
    add("dir-over-symlink", "layer 1 'link -> outside', layer 2 a directory 'link' of "
        "mode 0777 (merging into it must not chmod outside)",
        layer(link_out), layer(directory("link", 0o777, mtime=0)))
    add("symlink-under-symlink", "'link -> outside', then a symlink 'link/planted -> "
        "/etc/shadow' (planted in outside)",
        layer(link_out, symlink("link/planted", "/etc/shadow")))
    add("symlink-then-file-across-layers", "layer 1 'victim -> outside/canary.txt', "
        "layer 2 a regular file 'victim'",
        layer(symlink("victim", canary)), layer(file("victim")))
    add("symlink-then-file-same-layer", "'victim -> outside/canary.txt' then a regular "
        "file 'victim' (mode 04777) in one layer",
        layer(symlink("victim", canary), file("victim", mode=0o4777)))

    # -- hardlinks to outside
    add("hardlink-absolute", "a hardlink to the absolute outside/canary.txt",
        layer(hardlink("hl", canary)))
    add("hardlink-dotdot", "a hardlink to a '..' chain reaching outside/canary.txt",
        layer(hardlink("hl", f"{deep}/{CANARY}")))
    add("hardlink-via-symlink-parent", "layer 1 'link -> outside', layer 2 a hardlink to "
        "'link/canary.txt'", layer(link_out), layer(hardlink("hl", f"link/{CANARY}")))
    add("hardlink-to-symlink-then-write", "'sym -> outside/canary.txt', a hardlink 'hl' "
        "to 'sym', then layer 2 writes the file 'hl'",
        layer(symlink("sym", canary), hardlink("hl", "sym")), layer(file("hl")))
    add("hardlink-to-directory", "a hardlink to the directory 'd'",
        layer(directory("d"), file("d/f"), hardlink("hl", "d")))
    add("hardlink-to-root", "a hardlink to '.', the extraction root",
        layer(keep, hardlink("hl", ".")))
    add("hardlink-name-under-symlink", "'link -> outside', then a hardlink "
        "'link/hl' to a file of the layer (created in outside)",
        layer(keep, link_out, hardlink("link/hl", "keep.txt")))
    add("gnu-longlink-hardlink", "a GNU long-link record: a hardlink to a '..' chain "
        "reaching outside/canary.txt",
        layer(keep, gnu_long(b"K", f"{deep}/{CANARY}"),
              hardlink("hl", "keep.txt", magic=GNU_MAGIC)))
    add("pax-linkpath-hardlink", "a PAX 'linkpath=' record: a hardlink to the absolute "
        "outside/canary.txt (the ustar link name is harmless)",
        layer(keep, pax({"linkpath": canary}), hardlink("hl", "keep.txt")))

    # -- special files and permissions
    add("chardev-1-3", "a character device 1:3 (/dev/null), mode 0666",
        layer(directory("dev"), header("dev/null-evil", type=b"3", mode=0o666,
                                       devmajor=1, devminor=3)))
    add("blockdev-8-0", "a block device 8:0 (the first disk), mode 0666",
        layer(directory("dev"), header("dev/sda-evil", type=b"4", mode=0o666,
                                       devmajor=8, devminor=0)))
    add("fifo", "a FIFO, mode 0666",
        layer(header("evil.fifo", type=b"6", mode=0o666)))
    add("fifo-then-file", "layer 1 a FIFO 'f', layer 2 a regular file 'f' (opening the "
        "FIFO to write it would block)",
        layer(header("f", type=b"6", mode=0o666)), layer(file("f")))
    add("fifo-etc-passwd", "'etc/passwd' and 'etc/group' are FIFOs (reading them for the "
        "bundle's user would block)",
        layer(directory("etc"), header("etc/passwd", type=b"6", mode=0o644),
              header("etc/group", type=b"6", mode=0o644)))
    add("device-huge-major", "a character device whose major (base-256) does not fit a C int",
        layer(header("dev-huge", type=b"3", mode=0o600, devmajor=1 << 40)))
    add("pax-mtime-huge", "a file whose PAX mtime is 1e300 (no time_t holds it)",
        layer(pax({"mtime": "1e300"}), file("mtime-huge")))
    add("pax-mtime-nan", "a directory whose PAX mtime is NaN (applied last, at close)",
        layer(pax({"mtime": "nan"}), directory("mtime-nan")))
    add("pax-uid-huge", "a file whose PAX uid is 2**40 (no uid_t holds it)",
        layer(pax({"uid": str(1 << 40), "gid": str(1 << 40)}), file("uid-huge")))
    add("setuid-world-writable", "a setuid+setgid, world-writable root-owned file (06777)",
        layer(directory("bin"), file("bin/evil", b"#!/bin/sh\nid\n", mode=0o6777)))

    # -- xattrs from the layer
    add("xattr-overlay-redirect-dotdot", "a directory with trusted.overlay.redirect=../../..",
        layer(pax({"SCHILY.xattr.trusted.overlay.redirect": "../../.."}), directory("redir")))
    add("xattr-overlay-redirect-root", "a directory with trusted.overlay.redirect=/",
        layer(pax({"SCHILY.xattr.trusted.overlay.redirect": "/"}), directory("redir")))
    add("xattr-overlay-opaque", "layer 2 marks a lower directory opaque with "
        "trusted.overlay.opaque=y instead of a whiteout",
        layer(directory("opaque"), file("opaque/lower.txt")),
        layer(pax({"SCHILY.xattr.trusted.overlay.opaque": "y"}), directory("opaque")))
    add("xattr-overlay-origin", "a file with a forged trusted.overlay.origin file handle",
        layer(pax({"SCHILY.xattr.trusted.overlay.origin":
                   b"\x00\xfb\x21\x01\x00" + bytes(range(1, 21))}), file("origin")))
    add("xattr-user-overlay", "a directory with user.overlay.redirect=/ and "
        "user.overlay.opaque=y (what overlayfs mounted with userxattr acts on)",
        layer(pax({"SCHILY.xattr.user.overlay.redirect": "/",
                   "SCHILY.xattr.user.overlay.opaque": "y"}), directory("redir")))
    add("xattr-on-symlink-outside", "symlinks to outside/canary.txt and outside carrying "
        "user.* and trusted.* xattrs (must not land on their targets)",
        layer(pax({"SCHILY.xattr.user.evil": "pwned", "SCHILY.xattr.trusted.evil": "pwned"}),
              symlink("link-file", canary),
              pax({"SCHILY.xattr.user.evil": "pwned", "SCHILY.xattr.trusted.evil": "pwned"}),
              symlink("link-dir", o)))

    # -- malformed tars
    add("pax-oversized", "a PAX header of more than 1 MiB",
        layer(pax({"comment": "x" * (1024 * 1024 + 4096)}), file("after-big-header")))
    add("bad-checksum-mid-layer", "a header with a bad checksum after a good member, then "
        "a member aiming into outside",
        layer(file("before"), file("bad-checksum", b"data\n", bad_checksum=True),
              file(f"{deep}/after-bad-header")))
    add("truncated-member", "a member declaring 1 MB with 1 KiB following: the layer ends",
        file("before") + header("truncated", size=1_000_000) + b"A" * 1024)
    add("nul-in-name", "a PAX path with a NUL byte",
        layer(pax({"path": "nul\0evil"}), file("innocent")))
    add("nul-in-symlink-target", "a symlink whose PAX linkpath holds a NUL byte",
        layer(pax({"linkpath": f"{canary}\0x"}), symlink("sym", "innocent")))
    add("nul-in-xattr-name", "a file with an xattr whose name holds a NUL byte",
        layer(pax({"SCHILY.xattr.user.a\0b": "v"}), file("xattr-nul")))
    add("newline-in-name", "member names with a newline and terminal escapes, refused "
        "for a '..' component (the error must stay one line)",
        layer(file("evil\n\x1b[2J\x1b]0;pwned\x07/../../../nl-escape")))
    pathmax = ("p" * 99 + "/") * 49 + "x" * 100
    add("pathmax-name", "a 5000-byte path (PAX) of 99-byte components, past PATH_MAX",
        layer(pax({"path": pathmax}), file("innocent")))
    add("namemax-component", "a 300-byte path component (PAX), past NAME_MAX",
        layer(pax({"path": "n" * 300}), file("innocent")))
    assert len(pathmax) == 5000 and len({p.name for p in found}) == len(found)
    return found


def write_archive(payload: Payload, path: str) -> None:
    """A docker-save archive holding ``payload`` as ``example.com/hostile/NAME:v1``.

    The config is valid and its ``rootfs.diff_ids`` are the layers' digests.
    """
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [digests.of_bytes(l) for l in payload.layers]},
        "history": [{"created": CREATED, "created_by": f"hostile layer {i}: {payload.name}"}
                    for i in range(len(payload.layers))],
    }
    image = SampleImage("example.com/hostile/" + payload.name, "v1", payload.layers,
                        json.dumps(config, sort_keys=True).encode())
    write_docker_archive(path, [image])
