"""Parallel range downloads and their partial files, on a mock network (transport logic).

The real registry behind a capped front, kill -9 included, is in
tests/test_range_downloads.py; here each answer is chosen exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading

import httpx
import pytest

from occystrap_core import partials
from occystrap_core.errors import ImageNotFoundError, TransportError, UsageError
from occystrap_core.testing.http import FakeClock, MockHTTP, client_factory_plugin, make_context
from occystrap_core.transport import ranged
from occystrap_core.transport.blobs import open_blob

BLOB = os.urandom(1 << 20)
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
CHUNK = 64 << 10
RANGE = re.compile(r"bytes=(\d+)-(\d+)")


class RangeServer:
    """Serves BLOB with byte ranges; ``breaks`` cuts the first answer for a range start
    after that many bytes, ``missing`` answers 404 for those range starts."""

    def __init__(self, breaks: dict[int, int] | None = None, honour_range: bool = True,
                 missing: set[int] | frozenset[int] = frozenset(), content_range: str = ""):
        self.breaks = dict(breaks or {})
        self.honour_range, self.missing = honour_range, missing
        self.content_range = content_range
        self.ranges: list[str | None] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        asked = request.headers.get("range")
        with self._lock:
            self.ranges.append(asked)
        match = RANGE.fullmatch(asked or "")
        if not (self.honour_range and match):
            return httpx.Response(200, content=BLOB)
        first, last = int(match.group(1)), int(match.group(2))
        if first in self.missing:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
        body = BLOB[first:last + 1]
        with self._lock:
            cut = self.breaks.pop(first, None)
        headers = {"Content-Range": self.content_range or f"bytes {first}-{last}/{len(BLOB)}"}

        def stream():
            yield body[:cut] if cut is not None else body
            if cut is not None:
                raise httpx.ReadError("connection reset")

        return httpx.Response(206, headers=headers, stream=_Stream(stream))


class _Stream(httpx.SyncByteStream):
    def __init__(self, make):
        self.make = make

    def __iter__(self):
        yield from self.make()


def fetcher(server, tmp_path, keep=True, spare=8):
    ctx = make_context(MockHTTP(server), client_factory_plugin(), clock=FakeClock(), retries=3)
    client = ctx.http_client("test", "reg.example")
    plan = ranged.RangePlan(threshold=CHUNK, chunk=CHUNK, connections=3,
                            directory=str(tmp_path / "partial") if keep else None,
                            temp_dir=str(tmp_path), spare=threading.BoundedSemaphore(spare))
    if keep:
        os.makedirs(plan.directory, exist_ok=True)

    def fetch():
        with open_blob(client, "/v2/app/blobs/x", policy=ctx.retry, size=len(BLOB),
                       digest=DIGEST, ranges=plan) as f:
            return f.read()

    return fetch, plan


def test_chunks_come_in_ranges_and_a_broken_one_resumes_inside_its_range(tmp_path):
    server = RangeServer(breaks={3 * CHUNK: 1000})
    fetch, plan = fetcher(server, tmp_path)
    assert fetch() == BLOB
    assert sorted(filter(None, server.ranges)) == sorted(
        [f"bytes={i}-{i + CHUNK - 1}" for i in range(0, len(BLOB), CHUNK)]
        + [f"bytes={3 * CHUNK + 1000}-{4 * CHUNK - 1}"])
    assert os.listdir(plan.directory) == []


def test_without_spare_connections_a_blob_has_one(tmp_path, monkeypatch):
    server = RangeServer()
    fetch, plan = fetcher(server, tmp_path, spare=0)
    started = []
    real_start = ranged.RangedReader._start

    def start(self, first, spare):
        started.append(spare)
        real_start(self, first, spare)

    monkeypatch.setattr(ranged.RangedReader, "_start", start)
    assert fetch() == BLOB
    assert started == [False]  # one worker, taking every chunk in turn
    assert len(server.ranges) == len(BLOB) // CHUNK


def test_a_server_ignoring_ranges_gets_one_stream(tmp_path):
    server = RangeServer(honour_range=False)
    fetch, plan = fetcher(server, tmp_path)
    assert fetch() == BLOB
    assert server.ranges == [f"bytes=0-{CHUNK - 1}", None]


def test_a_wrong_content_range_is_an_error(tmp_path):
    fetch, _ = fetcher(RangeServer(content_range="bytes 5-9/10"), tmp_path)
    with pytest.raises(TransportError, match="Content-Range"):
        fetch()


def test_a_failed_run_leaves_a_partial_the_next_run_resumes(tmp_path):
    fetch, plan = fetcher(RangeServer(missing={10 * CHUNK}), tmp_path)
    with pytest.raises(ImageNotFoundError):
        fetch()
    [data] = [n for n in os.listdir(plan.directory) if n.endswith(partials.SUFFIX)]
    record = json.loads((tmp_path / "partial" / (data + ".json")).read_bytes())
    assert record["size"] == len(BLOB) and record["chunk"] == CHUNK and record["done"]
    server = RangeServer()
    fetch, _ = fetcher(server, tmp_path)
    assert fetch() == BLOB
    asked = {int(RANGE.fullmatch(r).group(1)) for r in server.ranges if r}
    assert not asked & {i * CHUNK for i in record["done"]}  # kept chunks are not fetched
    assert 10 * CHUNK in asked
    assert os.listdir(plan.directory) == []


def test_a_blob_that_cannot_be_had_leaves_no_partial(tmp_path):
    fetch, plan = fetcher(RangeServer(missing={0}), tmp_path)
    with pytest.raises(ImageNotFoundError):
        fetch()
    assert os.listdir(plan.directory) == []


def test_without_a_kept_partial_the_file_is_the_runs_own(tmp_path):
    fetch, _ = fetcher(RangeServer(), tmp_path, keep=False)
    assert fetch() == BLOB
    assert os.listdir(tmp_path) == []


# -- the partial files --------------------------------------------------------


def write_partial(where, chunk=CHUNK, done=(0, 1), filled=None, size=None, data=BLOB):
    path = where / (DIGEST.replace(":", "-") + partials.SUFFIX)
    end = max([(i + 1) * chunk for i in done] + [i * chunk + n for i, n in
                                                 (filled or {}).items()])
    path.write_bytes(data[:end])
    record = {"size": len(BLOB) if size is None else size, "chunk": chunk, "done": list(done),
              "filled": {str(i): n for i, n in (filled or {}).items()}}
    (where / (path.name + ".json")).write_text(json.dumps(record))
    return path


def test_a_recorded_partial_is_resumed_with_its_own_chunk_size(tmp_path):
    write_partial(tmp_path, chunk=2 * CHUNK, done=(0,), filled={2: 500})
    partial = partials.Partial.open(str(tmp_path), DIGEST, len(BLOB), CHUNK, str(tmp_path))
    try:
        assert (partial.chunk, partial.done, partial.filled) == (2 * CHUNK, {0}, {2: 500})
        assert partial.kept == 2 * CHUNK + 500
    finally:
        partial.close(finished=False)
    assert len(os.listdir(tmp_path)) == 2  # kept for the next run


@pytest.mark.parametrize("change", [
    {"size": len(BLOB) + 1},  # another blob's record
    {"done": (20,)},  # chunks past the end of the file
    {"filled": {3: CHUNK}},  # a "partly filled" chunk that is whole
])
def test_a_record_that_does_not_fit_starts_afresh(tmp_path, change):
    path = write_partial(tmp_path, **change)
    partial = partials.Partial.open(str(tmp_path), DIGEST, len(BLOB), CHUNK, str(tmp_path))
    try:
        assert (partial.done, partial.filled) == (set(), {})
        assert os.path.getsize(path) == 0
    finally:
        partial.close(finished=True)
    assert os.listdir(tmp_path) == []


def test_a_partial_held_by_a_live_run_is_left_to_it(tmp_path):
    first = partials.Partial.open(str(tmp_path), DIGEST, len(BLOB), CHUNK, str(tmp_path))
    second = partials.Partial.open(str(tmp_path), DIGEST, len(BLOB), CHUNK, str(tmp_path))
    try:
        assert first.path is not None and second.path is None  # an anonymous file
        assert partials.sweep(str(tmp_path), max_age=0) == 0  # locked: not swept
    finally:
        second.close(finished=True)
        first.complete(0)
        first.close(finished=False)
    assert partials.sweep(str(tmp_path), max_age=3600) == 0  # too young
    assert partials.sweep(str(tmp_path), max_age=0) == 1
    assert os.listdir(tmp_path) == []


def test_the_partial_directory(tmp_path, monkeypatch):
    ctx = make_context(MockHTTP(RangeServer()), client_factory_plugin(), clock=FakeClock(),
                       layer_cache=str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert partials.directory(ctx) == str(tmp_path / "cache" / "partial")
    monkeypatch.setenv("OCCYSTRAP_PARTIAL_DIR", str(tmp_path / "env"))
    assert partials.directory(ctx) == str(tmp_path / "env")
    monkeypatch.delenv("OCCYSTRAP_PARTIAL_DIR")
    ctx.settings.layer_cache = None
    assert partials.directory(ctx) == str(tmp_path / "xdg" / "occystrap" / "partial")
    # a cache that cannot be used: its directory is not used either (one warning)
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    broken = make_context(MockHTTP(RangeServer()), client_factory_plugin(), clock=FakeClock(),
                          layer_cache=str(tmp_path / "link"))
    assert partials.directory(broken) == str(tmp_path / "xdg" / "occystrap" / "partial")


def test_the_plan_comes_from_the_environment(tmp_path, monkeypatch):
    ctx = make_context(MockHTTP(RangeServer()), client_factory_plugin(), clock=FakeClock(),
                       parallel=6, temp_dir=str(tmp_path))
    monkeypatch.setenv("OCCYSTRAP_PARTIAL_DIR", str(tmp_path / "p"))
    assert ranged.plan(ctx, 255 << 20) is None  # below the default threshold
    plan = ranged.plan(ctx, 256 << 20)
    assert plan is not None and (plan.chunk, plan.connections) == (16 << 20, 8)
    monkeypatch.setenv("OCCYSTRAP_RANGE_CHUNK", "0")
    assert ranged.plan(ctx, 1 << 30) is None  # turned off
    monkeypatch.setenv("OCCYSTRAP_RANGE_CHUNK", "lots")
    with pytest.raises(UsageError, match="OCCYSTRAP_RANGE_CHUNK"):
        ranged.plan(ctx, 1 << 30)
