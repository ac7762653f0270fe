"""The flattener behind ``occystrap export``: layers merged top-down into one tar
(the end-to-end tests against registries, the core's extractor and umoci are in
tests/test_ops_commands.py)."""

from __future__ import annotations

import io
import tarfile
from typing import Any

import pytest

from occystrap_core.errors import CorruptImageError
from occystrap_core.export import Flattener


def layer(*entries: tuple[Any, ...]) -> io.BytesIO:
    """A layer tar from ``(name, kind, extra)``: kind file (extra: bytes), dir (extra:
    mode), link (extra: target of a hard link) or symlink."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(extra)
                tar.addfile(info, io.BytesIO(extra))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, extra
            else:
                info.type = tarfile.LNKTYPE if kind == "link" else tarfile.SYMTYPE
                info.linkname = extra
            tar.addfile(info)
    out.seek(0)
    return out


def flatten(*layers: io.BytesIO) -> list[tarfile.TarInfo]:
    """Flatten ``layers`` (bottom first, as an image lists them); the members written."""
    out = io.BytesIO()
    with Flattener(out) as flat:
        for i, data in reversed(list(enumerate(layers))):
            flat.add_layer(data, f"layer {i}")
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        return tar.getmembers()


def test_upper_layers_decide() -> None:
    bottom = layer(("etc", "dir", 0o755), ("etc/conf", "file", b"old"), ("srv", "dir", 0o755),
                   ("srv/data", "file", b"lower"), ("keep", "file", b"k"))
    top = layer(("etc", "dir", 0o700), ("etc/conf", "file", b"new"), ("srv", "file", b"a file"),
                ("keep", "symlink", "/elsewhere"))
    members = {m.name: m for m in flatten(bottom, top)}
    assert sorted(members) == ["etc", "etc/conf", "keep", "srv"]  # srv/data: under a file now
    assert members["etc"].mode == 0o700 and members["etc/conf"].size == 3
    assert members["srv"].isreg() and members["keep"].issym()


def test_whiteouts_act_on_lower_layers_only() -> None:
    def bottom() -> io.BytesIO:
        return layer(("a/x", "file", b"1"), ("a/y", "file", b"2"), ("b/z", "file", b"3"),
                     ("c", "file", b"4"))

    middle = layer(("a/.wh..wh..opq", "file", b""), ("a/new", "file", b"5"),
                   (".wh.b", "file", b""), (".wh.c", "file", b""), ("c", "file", b"again"))
    names = [m.name for m in flatten(bottom(), middle)]
    assert sorted(names) == ["a/new", "c"]
    everything = layer((".wh..wh..opq", "file", b""), ("only", "file", b"o"))
    assert [m.name for m in flatten(bottom(), everything)] == ["only"]


def test_hard_links_follow_their_targets() -> None:
    bottom = layer(("bin/tool", "file", b"elf"))
    top = layer(("bin/alias", "link", "./bin/tool"), ("gone", "link", "missing"))
    members = flatten(bottom, top)
    assert [m.name for m in members] == ["bin/tool", "bin/alias"]
    assert members[1].islnk() and members[1].linkname == "bin/tool"


@pytest.mark.parametrize("entry", [("../escape", "file", b"x"), ("/abs", "file", b"x"),
                                   ("a/.wh..", "file", b""),
                                   ("link", "link", "../../etc/shadow")])
def test_hostile_names_are_refused(entry: tuple[Any, ...]) -> None:
    with pytest.raises(CorruptImageError, match="refused"):
        flatten(layer(entry))
