"""Sources that expand to many images: templates, the plan, parallel copies, failures, info."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import threading
import time
from typing import Any, BinaryIO, Iterator

import pytest

from occystrap_core import bulk, hookimpl
from occystrap_core import mediatypes as mt
from occystrap_core.api import (
    BulkItem,
    Image,
    ImageInput,
    ImageOutput,
    ImageSet,
    Layer,
    OutputResult,
)
from occystrap_core.errors import ImageNotFoundError, UsageError
from occystrap_core.testing.http import make_context
from occystrap_core.testing.images import make_layer
from occystrap_core.types import InputSource, OptionSpec, OutputTarget, ResolvedURI


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Overlap:
    """The most images being read at the same moment."""

    def __init__(self) -> None:
        self.active = self.peak = 0
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)  # long enough for parallel images to meet
        yield
        with self.lock:
            self.active -= 1


class OneLayer(ImageInput):
    """``mem://NAME:TAG``: a one-layer image; ``mem://missing:TAG`` does not exist."""

    def __init__(self, target: str, overlap: Overlap):
        self.name, _, self.tag = target.partition(":")
        self.tar = make_layer({"name": target})
        self.blob = gzip.compress(self.tar, mtime=0)
        self.overlap = overlap

    def image(self) -> Image:
        with self.overlap.track():
            pass
        if self.name == "missing":
            raise ImageNotFoundError(f"{self.name}:{self.tag}: not found")
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [sha(self.tar)]}}).encode()
        layer = Layer(0, mt.OCI_LAYER_GZIP, sha(self.blob), len(self.blob), sha(self.tar))
        return Image(self.name, self.tag, config, (layer,))

    def open_layer(self, layer: Layer) -> contextlib.AbstractContextManager[BinaryIO]:
        return contextlib.nullcontext(io.BytesIO(self.blob))


class Many(ImageSet):
    """``many://a,b:1,...``: one item per comma-separated ``repo:tag``; ``!x`` is unlisted."""

    def __init__(self, target: str):
        self.target = target

    def images(self) -> Iterator[BulkItem]:
        for entry in self.target.split(","):
            repo, _, tag = entry.lstrip("!").partition(":")
            fields = {"repo": repo, "tag": tag}
            if entry.startswith("!"):
                yield BulkItem(f"mem://{repo}:{tag}", fields, error=f"{repo} could not be listed")
            else:
                yield BulkItem(f"mem://{repo}:{tag}", fields)


class Plugin:
    def __init__(self) -> None:
        self.overlap = Overlap()

    @hookimpl
    def occystrap_input_sources(self) -> list[InputSource]:
        return [InputSource(name="mem", schemes=("mem",), summary="test images",
                            factory=lambda uri, ctx: OneLayer(uri.target, self.overlap)),
                InputSource(name="many", schemes=("many",), summary="test image sets",
                            factory=lambda uri, ctx: Many(uri.target))]


@pytest.fixture
def plugin() -> Plugin:
    return Plugin()


@pytest.fixture
def ctx(plugin: Plugin) -> Any:
    with make_context(plugin, image_parallel=3) as context:
        yield context


def test_template_fields_accepts_plain_names_only() -> None:
    assert bulk.template_fields("registry://h/{namespace}/{repo}:{tag}") == \
        ["namespace", "repo", "tag"]
    assert bulk.template_fields("tar://{{literal}}.tar") == []
    for bad in ("tar://{repo!r}.tar", "tar://{repo:>10}.tar", "tar://{repo.upper}.tar",
                "tar://{0}.tar", "tar://{repo.tar"):
        with pytest.raises(UsageError):
            bulk.template_fields(bad)


def test_plan_formats_each_destination(ctx: Any, tmp_path: Any) -> None:
    jobs = bulk.plan(ctx, Many("a:1,b:2,!c:3"), f"dir://{tmp_path}/{{repo}}-{{tag}}")
    assert [(j.source, j.destination, j.error) for j in jobs] == [
        ("mem://a:1", f"dir://{tmp_path}/a-1", None),
        ("mem://b:2", f"dir://{tmp_path}/b-2", None),
        ("mem://c:3", None, "c could not be listed")]


def test_plan_refuses_destinations_that_collide(ctx: Any, tmp_path: Any) -> None:
    with pytest.raises(UsageError, match=r"would write both mem://a:1 and mem://a:2 .*\{repo\}"):
        bulk.plan(ctx, Many("a:1,a:2"), f"dir://{tmp_path}/{{repo}}")
    with pytest.raises(UsageError, match="would write both"):
        bulk.plan(ctx, Many("a:1,b:1"), f"dir://{tmp_path}/out")
    with pytest.raises(UsageError, match=r"unknown placeholder \{digest\}"):
        bulk.plan(ctx, Many("a:1"), f"dir://{tmp_path}/{{digest}}")
    # one image may go anywhere; a dir:// with unique names is made to hold many
    assert len(bulk.plan(ctx, Many("a:1"), f"dir://{tmp_path}/out")) == 1
    assert len(bulk.plan(ctx, Many("a:1,b:1"), f"dir://{tmp_path}/out?unique_names=true")) == 2


class Sink(ImageOutput):
    """Takes an image and keeps nothing."""

    def add_layer(self, data: Any) -> None:
        with data.open_blob() as blob:
            blob.read()

    def finish(self, image: Image) -> OutputResult:
        return OutputResult(location="sink")


class SinkPlugin:
    """``shared://`` holds many images; ``pick://`` only with ``?many=true``."""

    @hookimpl
    def occystrap_output_targets(self) -> list[OutputTarget]:
        return [OutputTarget(name="shared", schemes=("shared",), summary="",
                             factory=lambda uri, ctx: Sink(), holds_many=True),
                OutputTarget(name="pick", schemes=("pick",), summary="",
                             factory=lambda uri, ctx: Sink(),
                             options=(OptionSpec("many", bool, default=False),),
                             holds_many=lambda uri: uri.options["many"])]


def test_plan_asks_the_output_whether_it_holds_many(plugin: Plugin) -> None:
    with make_context(plugin, SinkPlugin()) as ctx:
        jobs = bulk.plan(ctx, Many("a:1,b:1,c:1"), "shared://one")
        assert [j.place for j in jobs] == [("shared", "one")] * 3  # one at a time
        assert not any(o.failed for o in bulk.run(ctx, jobs))
        assert plugin.overlap.peak == 1
        assert len(bulk.plan(ctx, Many("a:1,b:1"), "pick://one?many=true")) == 2
        with pytest.raises(UsageError, match="would write both mem://a:1 and mem://b:1"):
            bulk.plan(ctx, Many("a:1,b:1"), "pick://one")


def test_output_target_holds_many_is_a_bool_or_a_callable() -> None:
    uri = ResolvedURI(scheme="x", target="t", raw="x://t", options={"n": 2})

    def make(holds_many: Any) -> OutputTarget:
        return OutputTarget(name="x", schemes=("x",), summary="", factory=lambda u, c: None,
                            holds_many=holds_many)

    assert make(False).can_hold_many(uri) is False
    assert make(True).can_hold_many(uri) is True
    assert make(lambda u: u.options["n"] > 1).can_hold_many(uri) is True
    with pytest.raises(ValueError, match="holds_many is neither a bool nor callable"):
        make("yes")


@pytest.mark.parametrize("destination, holds_many", [
    ("dir://{tmp}/out?unique_names=true", True),
    ("dir://{tmp}/out", False),
    ("oci-layout://{tmp}/layout", False),
    ("oci-layout://{tmp}/layout?ref=mirror", False),
    ("registry://127.0.0.1:1/mirror/app:latest", False),
    ("tar://{tmp}/out.tar", False),
    ("docker://mirror/app:latest", False),
])
def test_installed_outputs_say_whether_they_hold_many(
        register_plugin: Any, run_cli: Any, tmp_path: Any, destination: str,
        holds_many: bool) -> None:
    register_plugin(Plugin(), name="occystrap-test-bulk")
    dest = destination.format(tmp=tmp_path)
    dry = run_cli("process", "--dry-run", "many://a:latest,b:latest", dest)
    if holds_many:
        assert dry.exit_code == 0, dry.stderr
        assert dry.stdout.splitlines() == [f"mem://a:latest -> {dest}",
                                           f"mem://b:latest -> {dest}"]
    else:
        assert dry.exit_code == 1
        assert dry.stderr.startswith(f"Error: destination {dest!r} would write both "
                                     f"mem://a:latest and mem://b:latest")


def test_run_copies_images_in_parallel(ctx: Any, plugin: Plugin, tmp_path: Any) -> None:
    jobs = bulk.plan(ctx, Many("a:1,b:1,c:1,d:1"), f"dir://{tmp_path}/{{repo}}")
    assert not any(o.failed for o in bulk.run(ctx, jobs))
    assert plugin.overlap.peak == 3  # --image-parallel


def test_run_records_failures_and_goes_on(ctx: Any, plugin: Plugin, tmp_path: Any) -> None:
    jobs = bulk.plan(ctx, Many("a:1,b:1,missing:1,c:1,!d:1"),
                     f"dir://{tmp_path}/out?unique_names=true")
    lines: list[str] = []
    outcomes = bulk.run(ctx, jobs, progress=lines.append)
    assert [o.failed for o in outcomes] == [False, False, True, False, True]
    assert outcomes[2].reason == "missing:1: not found"
    assert outcomes[4].reason == "d could not be listed"
    assert len(lines) == 5 and sum("FAILED" in line for line in lines) == 2
    catalog = json.loads((tmp_path / "out" / "catalog.json").read_text())
    assert sorted(catalog) == ["a", "b", "c"]
    assert ctx.stats["layers"] == 3  # one Context: the statistics add up
    assert plugin.overlap.peak == 1  # one shared destination: one image at a time


def test_single_input_refuses_a_set(ctx: Any) -> None:
    with pytest.raises(UsageError, match="names several images; search takes one"):
        bulk.single_input(ctx, "many://a:1", "search")


def test_cli_process_dry_run_and_info(register_plugin: Any, run_cli: Any, tmp_path: Any) -> None:
    register_plugin(Plugin(), name="occystrap-test-bulk")
    dest = f"dir://{tmp_path}/{{repo}}-{{tag}}"
    dry = run_cli("process", "--dry-run", "many://a:1,b:2", dest)
    assert dry.exit_code == 0, dry.stderr
    assert dry.stdout.splitlines() == [f"mem://a:1 -> dir://{tmp_path}/a-1",
                                       f"mem://b:2 -> dir://{tmp_path}/b-2"]
    assert not list(tmp_path.iterdir())

    result = run_cli("-J", "2", "process", "many://a:1,missing:2,b:2", dest)
    assert result.exit_code == 1
    assert "2/3 images, 1 failed" in result.stderr
    assert "Failed images:\n  mem://missing:2: missing:2: not found" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-1", "b-2"]

    info = run_cli("info", "-O", "json", "many://a:1,missing:2")
    assert info.exit_code == 1
    entries = json.loads(info.stdout)
    assert entries[0]["source"] == "mem://a:1" and entries[0]["name"] == "a"
    assert entries[1] == {"source": "mem://missing:2", "error": "missing:2: not found"}
