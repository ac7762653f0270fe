"""The pipeline contract: streaming layers, verification, ordering, filters, abort."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import threading
import types

import pytest
import zstandard

from occystrap_core import hookimpl
from occystrap_core import mediatypes as mt
from occystrap_core.api import (
    Image,
    ImageFilter,
    ImageInput,
    ImageOutput,
    Layer,
    LayerData,
    OutputResult,
)
from occystrap_core.errors import CorruptImageError, DigestMismatchError
from occystrap_core.testing import plugin_module
from occystrap_core.types import FilterSpec, InputSource, OptionSpec, OutputTarget


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


TARS = [f"layer {i} ".encode() * 1000 for i in range(5)]


class MemInput(ImageInput):
    """Five gzip layers held in memory."""

    def __init__(self, corrupt: int | None = None):
        self.blobs = [gzip.compress(t, mtime=0) for t in TARS]
        if corrupt is not None:  # same size, one byte changed in the deflate stream
            blob = bytearray(self.blobs[corrupt])
            blob[len(blob) // 2] ^= 0xFF
            self.blobs[corrupt] = bytes(blob)
        self.opened: list[int] = []
        self.rendezvous: threading.Barrier | None = None

    def image(self) -> Image:
        config = json.dumps({"rootfs": {"type": "layers",
                                        "diff_ids": [sha(t) for t in TARS]}}).encode()
        layers = tuple(Layer(i, mt.OCI_LAYER_GZIP, sha(gzip.compress(t, mtime=0)),
                             len(gzip.compress(t, mtime=0)), sha(t)) for i, t in enumerate(TARS))
        return Image("example.com/mem", "v1", config, layers)

    @contextlib.contextmanager
    def open_layer(self, layer: Layer):
        self.opened.append(layer.index)
        if self.rendezvous and layer.index < 2:  # proves two layers are read at once
            self.rendezvous.wait(timeout=10)
        yield io.BytesIO(self.blobs[layer.index])


class MemOutput(ImageOutput):
    def __init__(self, ordered: bool = False, have: frozenset[int] = frozenset()):
        self.requires_ordered_layers = ordered
        self.have = have
        self.got: dict[int, bytes] = {}
        self.order: list[int] = []
        self.threads: set[str] = set()
        self.aborted = False
        self.finished: Image | None = None

    def wants_layer(self, layer: Layer) -> bool:
        return layer.index not in self.have

    def add_layer(self, data: LayerData) -> None:
        self.threads.add(threading.current_thread().name)
        with data.open_tar() as f:
            self.got[data.layer.index] = f.read()
        self.order.append(data.layer.index)

    def finish(self, image: Image) -> OutputResult:
        self.finished = image
        return OutputResult("memory")

    def abort(self) -> None:
        self.aborted = True


def run(inp, out, parallel=4):
    from occystrap_core.context import Context, Settings
    from occystrap_core.pipeline import run as run_pipeline

    with Context(Settings(parallel=parallel)) as ctx:
        run_pipeline(ctx, inp, out)
        return ctx.stats


def test_layers_stream_decompressed_and_verified_in_parallel():
    inp, out = MemInput(), MemOutput()
    inp.rendezvous = threading.Barrier(2)
    stats = run(inp, out)
    assert out.got == dict(enumerate(TARS))
    assert not inp.rendezvous.broken, "layers 0 and 1 were not read concurrently"
    assert len(out.threads) > 1
    assert stats["layers"] == 5 and stats["bytes"] == sum(len(gzip.compress(t)) for t in TARS)


def test_ordered_output_gets_manifest_order_from_one_thread():
    out = MemOutput(ordered=True)
    run(MemInput(), out)
    assert out.order == [0, 1, 2, 3, 4] and len(out.threads) == 1


def test_layers_the_output_has_are_not_read():
    inp, out = MemInput(), MemOutput(have=frozenset({1, 3}))
    stats = run(inp, out)
    assert sorted(inp.opened) == [0, 2, 4]
    assert stats["skipped"] == 2


def test_blob_digest_mismatch_aborts_output():
    out = MemOutput()
    with pytest.raises(DigestMismatchError, match="layer 2 blob"):
        run(MemInput(corrupt=2), out)
    assert out.aborted and out.finished is None


def test_diff_id_is_verified_when_blob_digest_is_right():
    inp = MemInput()
    bad = gzip.compress(b"other content", mtime=0)
    inp.blobs[1] = bad
    image = inp.image()
    layers = list(image.layers)
    layers[1] = Layer(1, mt.OCI_LAYER_GZIP, sha(bad), len(bad), sha(TARS[1]))
    inp.image = lambda: Image(image.name, image.tag, image.config, tuple(layers))
    with pytest.raises(DigestMismatchError, match="layer 1 diff_id"):
        run(inp, MemOutput())


def _data(blob: bytes, media_type: str, diff_id: str | None,
          digest: str | None = None) -> LayerData:
    layer = Layer(0, media_type, digest or sha(blob), len(blob), diff_id)
    return LayerData(layer, lambda: contextlib.nullcontext(io.BytesIO(blob)))


def test_zstd_and_uncompressed_layers():
    tar = b"x" * 100000
    zstd = zstandard.ZstdCompressor().compress(tar)
    with _data(zstd, mt.OCI_LAYER_ZSTD, sha(tar)).open_tar() as f:
        assert f.read() == tar
    with _data(tar, mt.DOCKER_LAYER_TAR, sha(tar)).open_tar() as f:
        assert f.read() == tar


def test_truncated_gzip_is_a_corrupt_image_error():
    blob = gzip.compress(b"y" * 100000)[:-30]
    with pytest.raises(CorruptImageError, match="cannot decompress"):
        with _data(blob, mt.OCI_LAYER_GZIP, None).open_tar() as f:
            f.read()


def test_size_mismatch_detected():
    layer = Layer(0, mt.OCI_LAYER_TAR, None, 10, None)
    data = LayerData(layer, lambda: contextlib.nullcontext(io.BytesIO(b"12345")))
    with pytest.raises(CorruptImageError, match="size mismatch"):
        with data.open_blob() as f:
            f.read()


# --- the same through the CLI, with throwaway plugins --------------------------------

class Upper(ImageFilter):
    """Records the order filters see layers in."""

    def __init__(self, inner, seen, tag):
        super().__init__(inner)
        self.seen, self.tag = seen, tag

    def add_layer(self, data):
        self.seen.append((self.tag, data.layer.index))
        super().add_layer(data)


def _mem_plugin(state: dict) -> types.ModuleType:
    @hookimpl
    def occystrap_input_sources():
        yield InputSource(name="mem", schemes=("mem",), summary="In-memory test images",
                          factory=lambda uri, ctx: MemInput(uri.options["corrupt"]),
                          options=(OptionSpec("corrupt", int),))

    @hookimpl
    def occystrap_output_targets():
        def factory(uri, ctx):
            state["out"] = MemOutput(ordered=True)
            return state["out"]
        yield OutputTarget(name="mem", schemes=("mem",), summary="In-memory sink", factory=factory)

    @hookimpl
    def occystrap_filters():
        yield FilterSpec(name="record", summary="Record layer order",
                         factory=lambda inner, opts, ctx: Upper(inner, state["seen"], opts["tag"]),
                         options=(OptionSpec("tag", required=True),))

    return plugin_module(occystrap_input_sources, occystrap_output_targets, occystrap_filters)


def test_cli_process_with_filters_first_sees_layers_first(run_cli, register_plugin):
    state: dict = {"seen": []}
    register_plugin(_mem_plugin(state), name="occystrap-mem")
    result = run_cli("process", "mem://a", "mem://b", "-f", "record:tag=outer",
                     "-f", "record:tag=inner")
    assert result.exit_code == 0, result.output
    assert state["seen"][:2] == [("outer", 0), ("inner", 0)]
    assert state["out"].got == dict(enumerate(TARS))
    assert "Summary: 5 layers" in result.stderr


def test_cli_process_help_lists_plugin_schemes(run_cli, register_plugin):
    register_plugin(_mem_plugin({}), name="occystrap-mem")
    result = run_cli("process", "--help")
    assert result.exit_code == 0
    assert "mem://" in result.stdout and "In-memory test images [occystrap-mem]" in result.stdout
    assert "record" in result.stdout


def test_cli_corrupt_layer_is_one_error_line(run_cli, register_plugin):
    register_plugin(_mem_plugin({}), name="occystrap-mem")
    result = run_cli("process", "mem://a?corrupt=3", "mem://b")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: layer 3 blob: digest mismatch")
    assert "Traceback" not in result.output


def test_cli_unexpected_exception_names_the_plugin(run_cli, register_plugin):
    @hookimpl
    def occystrap_input_sources():
        def factory(uri, ctx):
            raise ZeroDivisionError("oops")
        yield InputSource(name="crash", schemes=("crash",), summary="", factory=factory)

    register_plugin(plugin_module(occystrap_input_sources), name="occystrap-crash",
                    version="0.1")
    result = run_cli("info", "crash://x")
    assert result.exit_code == 1
    assert "Error: unexpected ZeroDivisionError: oops" in result.stderr
    assert "occystrap-crash 0.1" in result.stderr
    assert "--disable-plugin occystrap-crash" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args,message", [
    (("info", "nope://x"), "Error: unknown input scheme 'nope'"),
    (("info", "busybox:latest"), "Error: 'busybox:latest' is not a URI"),
    (("process", "mem://a?corrupt=x", "mem://b"), "Error: mem://: option 'corrupt' expects int"),
    (("process", "mem://a", "mem://b", "-f", "nofilter"), "Error: unknown filter 'nofilter'"),
    (("process", "mem://a", "mem://b", "-f", "record"),
     "Error: filter 'record': option 'tag' is required"),
])
def test_cli_bad_input_errors(run_cli, register_plugin, args, message):
    register_plugin(_mem_plugin({"seen": []}), name="occystrap-mem")
    result = run_cli(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.output
