"""Progress on stderr: plain lines off a terminal, bars on one, counts under threads."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import threading
import time
from typing import Callable

import pytest

from occystrap_core import mediatypes as mt
from occystrap_core import pipeline
from occystrap_core.api import Image, ImageInput, ImageOutput, Layer, LayerData, OutputResult
from occystrap_core.context import Context, Settings
from occystrap_core.errors import CorruptImageError
from occystrap_core.progress import BarProgress, LineProgress, Progress, create
from occystrap_core.testing.images import build_docker_archive

LINE = re.compile(r"^progress: \d+/\d+ layers, [\d.]+ \S+( of [\d.]+ \S+)?, [\d.]+ \S+/s$")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ChunkedInput(ImageInput):
    """Uncompressed layers served 1 KiB per read."""

    def __init__(self, n: int = 4, size: int = 4096, known_sizes: bool = True):
        self.blobs = [bytes([i]) * size for i in range(n)]
        self.known_sizes = known_sizes

    def image(self) -> Image:
        layers = tuple(Layer(i, mt.OCI_LAYER_TAR, sha(b), len(b) if self.known_sizes else None,
                             sha(b)) for i, b in enumerate(self.blobs))
        config = json.dumps({"rootfs": {"type": "layers",
                                        "diff_ids": [sha(b) for b in self.blobs]}}).encode()
        return Image("example.com/slow", "v1", config, layers)

    @contextlib.contextmanager
    def open_layer(self, layer: Layer):
        yield _Chunks(self.blobs[layer.index])


class _Chunks(io.RawIOBase):
    def __init__(self, data: bytes):
        self.data = memoryview(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = min(len(buffer), 1024, len(self.data))
        buffer[:n], self.data = self.data[:n], self.data[n:]
        return n


class SinkOutput(ImageOutput):
    """Reads every wanted layer; ``pause_until()`` is awaited halfway through each."""

    def __init__(self, have: frozenset[int] = frozenset(), fail: int | None = None,
                 pause_until: Callable[[], bool] = lambda: True):
        self.have, self.fail, self.pause_until = have, fail, pause_until

    def wants_layer(self, layer: Layer) -> bool:
        return layer.index not in self.have

    def add_layer(self, data: LayerData) -> None:
        with data.open_blob() as blob:
            while blob.count < (data.layer.size or 0) // 2:
                blob.read(1024)
            deadline = time.monotonic() + 5
            while not self.pause_until() and time.monotonic() < deadline:
                time.sleep(0.005)
            blob.read()
        if data.layer.index == self.fail:
            raise CorruptImageError("broken on purpose")

    def finish(self, image: Image) -> OutputResult:
        return OutputResult("sink")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(progress: Progress, source: ImageInput, output: ImageOutput,
         parallel: int = 4) -> Context:
    ctx = Context(Settings(parallel=parallel))
    ctx.progress = progress
    pipeline.run(ctx, source, output)
    return ctx


def test_create_picks_bars_only_for_a_quiet_terminal(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TERM", "xterm")
    assert isinstance(create(Settings(), FakeTTY()), BarProgress)
    assert isinstance(create(Settings(), io.StringIO()), LineProgress)
    for settings in (Settings(progress_bars=False), Settings(verbose=True), Settings(debug=True)):
        assert isinstance(create(settings, FakeTTY()), LineProgress)
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(create(Settings(), FakeTTY()), LineProgress)


def test_plain_lines_are_periodic_and_free_of_ansi():
    out = io.StringIO()
    halfway = "progress: 0/3 layers, 24.0 KiB of 48.0 KiB, "

    def ticked() -> bool:  # every layer waits halfway for three lines, one showing that
        text = out.getvalue()
        return text.count("\n") >= 3 and halfway in text

    _run(LineProgress(out, interval=0.01), ChunkedInput(n=3, size=16384),
         SinkOutput(pause_until=ticked), parallel=3)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and any(line.startswith(halfway) for line in lines), lines
    assert all(LINE.match(line) for line in lines), lines
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_plain_lines_stop_when_the_image_is_done():
    out = io.StringIO()
    _run(LineProgress(out, interval=0.01), ChunkedInput(n=2),
         SinkOutput(pause_until=lambda: "\n" in out.getvalue()))
    written = out.getvalue()
    time.sleep(0.05)
    assert out.getvalue() == written
    assert not [t for t in threading.enumerate() if t.name == "progress"]


def test_verbose_adds_a_line_per_layer_and_no_periodic_line_at_interval_zero():
    out = io.StringIO()
    _run(LineProgress(out, interval=0, verbose=True), ChunkedInput(n=3), SinkOutput(have={1}))
    lines = sorted(out.getvalue().splitlines())
    assert len(lines) == 3
    assert re.fullmatch(r"progress: layer 1 sha256:\w{12} done, 4\.0 KiB in [\d.]+ s", lines[0])
    assert re.fullmatch(r"progress: layer 2 sha256:\w{12} skipped, already at the destination",
                        lines[1])


def test_counts_are_exact_with_parallel_delivery():
    progress = LineProgress(io.StringIO(), interval=0)
    ctx = _run(progress, ChunkedInput(n=16, size=50_000), SinkOutput(have={0, 5}), parallel=8)
    assert (progress.layers_done, progress.layers_total) == (16, 16)
    assert progress.bytes_total == progress.bytes_done == 14 * 50_000  # skipped: not work
    assert ctx.stats["bytes"] == 14 * 50_000


def test_unknown_layer_sizes_leave_the_total_unknown():
    progress = LineProgress(io.StringIO(), interval=0)
    _run(progress, ChunkedInput(n=2, known_sizes=False), SinkOutput())
    assert progress.bytes_total is None
    assert re.fullmatch(r"2/2 layers, 8\.0 KiB, [\d.]+ \S+/s", progress.status())


def test_overlapping_images_add_up():
    progress = LineProgress(io.StringIO(), interval=0)
    a, b = ChunkedInput(n=2).image(), ChunkedInput(n=3).image()
    with progress.image(a.layers):
        with progress.image(b.layers):
            assert (progress.layers_total, progress.bytes_total) == (5, 5 * 4096)
        with progress.layer(a.layers[0]) as advance:
            advance(4096)
        assert progress.layers_done == 1


def _open_bars() -> int:
    from tqdm import tqdm

    return len(tqdm._instances)


def test_a_failed_layer_is_not_counted_and_its_bar_goes():
    bars = _open_bars()
    progress = BarProgress(FakeTTY())
    with pytest.raises(CorruptImageError):
        _run(progress, ChunkedInput(n=3), SinkOutput(fail=1), parallel=1)
    assert progress.layers_done == 1
    assert _open_bars() == bars


def test_bars_render_on_a_terminal_and_end_cleanly():
    bars = _open_bars()
    out = FakeTTY()
    progress = BarProgress(out)
    _run(progress, ChunkedInput(n=4, size=8192), SinkOutput(have={2}), parallel=3)
    text = out.getvalue()
    assert "4/4 layers" in text and "layer 1 sha256:" in text and "iB" in text
    assert "\r" in text
    assert text.rsplit("\r", 1)[1].strip() == ""  # the last bar was wiped, nothing left over
    assert _open_bars() == bars


def test_write_puts_a_line_above_the_bars(capsys: pytest.CaptureFixture[str]):
    out = FakeTTY()
    progress = BarProgress(out)
    with progress.image(ChunkedInput(n=1).image().layers):
        progress.write("copied app:1.0")
    assert "copied app:1.0\n" in out.getvalue() and "0/1 layers" in out.getvalue()
    lines = io.StringIO()
    LineProgress(lines, interval=0).write("copied app:1.0")
    assert lines.getvalue() == "copied app:1.0\n"
    Progress().write("copied app:1.0")
    assert capsys.readouterr().err == "copied app:1.0\n"


def test_cli_process_to_a_pipe_prints_lines_and_the_summary_last(run_cli, tmp_path):
    build_docker_archive(str(tmp_path / "in.tar"), n_layers=3, layer_size=256 * 1024)
    result = run_cli("process", f"tar://{tmp_path / 'in.tar'}", f"tar://{tmp_path / 'out.tar'}",
                     env={"OCCYSTRAP_PROGRESS_INTERVAL": "0.001"})
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "\x1b" not in result.stderr and "\r" not in result.stderr
    assert all(LINE.match(line) for line in lines if line.startswith("progress:")), lines
    assert re.fullmatch(r"Summary: 3 layers \(0 skipped, 0 mounted\), [\d.]+ KiB, [\d.]+ s, "
                        r"verified", lines[-1]), lines


def test_cli_summary_counts_skipped_layers(run_cli, tmp_path):
    build_docker_archive(str(tmp_path / "in.tar"), n_layers=2)
    args = ("process", f"tar://{tmp_path / 'in.tar'}", f"oci-layout://{tmp_path / 'layout'}")
    assert run_cli(*args).exit_code == 0
    second = run_cli(*args)
    assert second.exit_code == 0, second.output
    assert re.search(r"^Summary: 0 layers \(2 skipped, 0 mounted\), 0 B, [\d.]+ s",
                     second.stderr.splitlines()[-1]), second.stderr
