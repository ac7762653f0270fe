"""Progress of a run on stderr: bars on a terminal, plain periodic lines otherwise.

The pipeline drives the run's reporter, ``ctx.progress``, and plugins may too::

    with ctx.progress.image(image.layers):       # overall totals; bars live inside
        ctx.progress.skipped(layer)               # the output already has it
        with ctx.progress.layer(layer) as advance:
            advance(len(chunk))                   # bytes read; layers may be in threads
    ctx.progress.write("copied app:1.0")          # a line that leaves the bars whole

The default :class:`Progress` shows no progress (library use, ``info``, ``check``);
``occystrap process`` installs the one :func:`create` picks. Importing this module
is cheap: the bar library is imported only when bars are shown.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TextIO

if TYPE_CHECKING:
    from .api import Layer
    from .context import Settings


def _ignore(n: int) -> None:
    pass


class Progress:
    """The reporter interface, and the silent default."""

    @contextlib.contextmanager
    def image(self, layers: Sequence[Layer]) -> Iterator[None]:
        """Around one image's layers; images may overlap (their totals add up)."""
        yield

    @contextlib.contextmanager
    def layer(self, layer: Layer) -> Iterator[Callable[[int], None]]:
        """A layer in flight; yields ``advance(n)`` for bytes read. Done unless it raises."""
        yield _ignore

    def skipped(self, layer: Layer) -> None:
        """A layer the output already holds: it counts as done and is not read."""

    def mounted(self, layer: Layer, source: str | None) -> None:
        """A layer the output got by a mount (from repository ``source``, when known):
        shown as :meth:`skipped` unless a reporter tells them apart."""
        self.skipped(layer)

    def cached(self, layer: Layer) -> None:
        """A layer of an image the layer cache let the output take whole, unread."""
        self.skipped(layer)

    def write(self, line: str) -> None:
        """Print ``line`` on stderr; above the bars, so they are not torn."""
        print(line, file=sys.stderr, flush=True)


def create(settings: Settings, stream: TextIO | None = None) -> Progress:
    """Bars when ``stream`` (default stderr) is a terminal and no log output competes
    for it (``--verbose``/``--debug`` log lines would tear bars apart); else lines."""
    stream = stream or sys.stderr
    loud = settings.verbose or settings.debug
    if settings.progress_bars and not loud and _is_terminal(stream):
        return BarProgress(stream)
    return LineProgress(stream, settings.progress_interval, verbose=loud)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or already closed
        return False


def _short(layer: Layer) -> str:
    name = f"layer {layer.index + 1}"
    return f"{name} {layer.digest[:19]}" if layer.digest else name


class _Reporter(Progress):
    """Counts shared by both renderings; every change happens under one lock.

    ``bytes_total`` is None while any wanted layer's size is unknown.
    """

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._lock = threading.Lock()
        self._images = 0  # images in flight; the display lives while this is > 0
        self.layers_total = self.layers_done = self.bytes_done = 0
        self.bytes_total: int | None = 0

    def _reset(self) -> None:
        self.layers_total = self.layers_done = self.bytes_done = 0
        self.bytes_total = 0

    @contextlib.contextmanager
    def image(self, layers: Sequence[Layer]) -> Iterator[None]:
        with self._lock:
            if not self._images:
                self._reset()
            self._images += 1
            self.layers_total += len(layers)
            sizes = [layer.size for layer in layers if layer.size is not None]
            if self.bytes_total is not None and len(sizes) == len(layers):
                self.bytes_total += sum(sizes)
            else:
                self.bytes_total = None
            if self._images == 1:
                self._opened()
            else:
                self._totals_changed()
        try:
            yield
        finally:
            with self._lock:
                self._images -= 1
                if not self._images:
                    self._closed()

    @contextlib.contextmanager
    def layer(self, layer: Layer) -> Iterator[Callable[[int], None]]:
        started = time.monotonic()
        read = 0
        with self._lock:
            handle = self._layer_started(layer)

        def advance(n: int) -> None:
            nonlocal read
            read += n
            with self._lock:
                self.bytes_done += n
                self._advanced(handle, n)

        ok = False
        try:
            yield advance
            ok = True
        finally:
            with self._lock:
                if ok:
                    self.layers_done += 1
                self._layer_ended(handle, layer, ok, read, time.monotonic() - started)

    def skipped(self, layer: Layer) -> None:
        with self._lock:
            self.layers_done += 1
            if self.bytes_total is not None and layer.size is not None:
                self.bytes_total -= layer.size  # never read, so not part of the work
            self._layer_skipped(layer)

    # Rendering, always called with the lock held.
    def _opened(self) -> None: ...
    def _totals_changed(self) -> None: ...
    def _closed(self) -> None: ...
    def _layer_started(self, layer: Layer) -> Any: ...
    def _advanced(self, handle: Any, n: int) -> None: ...
    def _layer_ended(self, handle: Any, layer: Layer, ok: bool, read: int,
                     seconds: float) -> None: ...
    def _layer_skipped(self, layer: Layer) -> None: ...


class LineProgress(_Reporter):
    """A plain ``progress:`` line every ``interval`` seconds (none if 0), and with
    ``verbose`` one per finished or skipped layer. No ANSI codes, no carriage returns."""

    def __init__(self, stream: TextIO, interval: float, verbose: bool = False):
        super().__init__(stream)
        self.interval = interval
        self.verbose = verbose
        self._stop: threading.Event | None = None  # of the running ticker
        self._last = (0.0, 0)  # (monotonic time, bytes_done) of the previous line

    def _write(self, line: str) -> None:
        self.stream.write(f"progress: {line}\n")
        self.stream.flush()

    def write(self, line: str) -> None:
        with self._lock:
            self.stream.write(f"{line}\n")
            self.stream.flush()

    def _opened(self) -> None:
        self._last = (time.monotonic(), 0)
        if self.interval > 0:
            # a fresh event per ticker, so one still winding down never revives
            self._stop = threading.Event()
            threading.Thread(target=self._tick, args=(self._stop,), name="progress",
                             daemon=True).start()

    def _closed(self) -> None:
        if self._stop is not None:
            self._stop.set()  # under the lock: the ticker writes nothing after this
            self._stop = None

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            with self._lock:
                if not stop.is_set():
                    self._write(self.status())

    def status(self) -> str:
        """``3/8 layers, 120.5 MiB of 512.0 MiB, 45.2 MiB/s`` (rate since the last line)."""
        from .info import human_size

        now = time.monotonic()
        then, before = self._last
        self._last = (now, self.bytes_done)
        rate = (self.bytes_done - before) / (now - then) if now > then else 0.0
        size = human_size(self.bytes_done)
        if self.bytes_total is not None:
            size += f" of {human_size(self.bytes_total)}"
        return (f"{self.layers_done}/{self.layers_total} layers, {size}, "
                f"{human_size(int(rate))}/s")

    def _layer_ended(self, handle: Any, layer: Layer, ok: bool, read: int,
                     seconds: float) -> None:
        if ok and self.verbose:
            from .info import human_size

            self._write(f"{_short(layer)} done, {human_size(read)} in {seconds:.1f} s")

    def _layer_skipped(self, layer: Layer) -> None:
        if self.verbose:
            self._write(f"{_short(layer)} skipped, already at the destination")


class BarProgress(_Reporter):
    """tqdm bars: one overall (bytes of the wanted layers, layers done in its label)
    and one per layer in flight, removed when the layer ends."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self._overall: Any = None

    def _bar(self, **options: Any) -> Any:
        from tqdm import tqdm

        return tqdm(file=self.stream, unit="iB", unit_scale=True, unit_divisor=1024,
                    dynamic_ncols=True, leave=False, **options)

    def write(self, line: str) -> None:
        from tqdm import tqdm

        with self._lock:
            tqdm.write(line, file=self.stream)

    def _label(self) -> str:
        return f"{self.layers_done}/{self.layers_total} layers"

    def _opened(self) -> None:
        self._overall = self._bar(total=self.bytes_total, desc=self._label(), position=0)

    def _totals_changed(self) -> None:
        if self._overall is not None:
            self._overall.total = self.bytes_total
            self._overall.set_description_str(self._label())  # refreshes

    def _closed(self) -> None:
        if self._overall is not None:
            self._overall.close()
            self._overall = None

    def _layer_started(self, layer: Layer) -> Any:
        return self._bar(total=layer.size, desc=_short(layer))

    def _advanced(self, handle: Any, n: int) -> None:
        handle.update(n)
        if self._overall is not None:
            self._overall.update(n)

    def _layer_ended(self, handle: Any, layer: Layer, ok: bool, read: int,
                     seconds: float) -> None:
        handle.close()
        self._totals_changed()

    def _layer_skipped(self, layer: Layer) -> None:
        self._totals_changed()
