"""The layer cache's store: facts recorded and found, LRU upkeep, damage tolerated,
several processes writing at once."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from click.testing import Result

from occystrap_core import digest as digests
from occystrap_core.errors import UsageError
from occystrap_core.layercache import (
    FILENAME,
    SCHEMA_VERSION,
    TOUCH_AFTER,
    CacheError,
    LayerCache,
    filter_step,
    open_for_run,
    parse_duration,
    parse_size,
)
from occystrap_core.plugins import PluginRecord

D1, D2, D3 = (digests.of_bytes(bytes([i])) for i in range(3))


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(tmp_path: Path, clock: Clock) -> LayerCache:
    store = LayerCache(str(tmp_path / "cache"), now=clock)
    yield store
    store.close()


def _used(cache: LayerCache, table: str) -> list[float]:
    with sqlite3.connect(cache.path) as db:
        return [r[0] for r in db.execute(f"SELECT used FROM {table} ORDER BY used")]


def test_records_and_finds_facts(cache: LayerCache) -> None:
    assert cache.transform(D1, "step a") is None
    cache.record_transform(D1, "step a", D2, 123)
    assert cache.transform(D1, "step a") == (D2, 123)
    assert cache.transform(D1, "step b") is None  # another step is another fact
    cache.record_location("reg:5000", D2, "team/a")
    cache.record_location("reg:5000", D2, "team/b")
    assert set(cache.locations("reg:5000", D2)) == {"team/a", "team/b"}
    assert cache.locations("other:5000", D2) == []
    cache.forget_location("reg:5000", D2, "team/a")
    assert cache.locations("reg:5000", D2) == ["team/b"]
    manifest = b'{"schemaVersion":2}'
    cache.record_image(D1, "chain", manifest, "application/vnd.oci.image.manifest.v1+json")
    assert cache.image(D1, "chain") == (manifest, "application/vnd.oci.image.manifest.v1+json")
    assert cache.image(D1, "other chain") is None


def test_directory_created_and_schema_versioned(tmp_path: Path) -> None:
    where = tmp_path / "deep" / "cache"
    LayerCache(str(where)).close()
    with sqlite3.connect(where / FILENAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_hit_refreshes_used_at_most_once_per_period(cache: LayerCache, clock: Clock) -> None:
    cache.record_transform(D1, "s", D2, 1)
    start = clock.now
    clock.now += TOUCH_AFTER / 2
    assert cache.transform(D1, "s")
    assert _used(cache, "transforms") == [start]  # recent enough: no write
    clock.now += TOUCH_AFTER
    assert cache.transform(D1, "s")
    assert _used(cache, "transforms") == [clock.now]


def test_most_recent_location_first(cache: LayerCache, clock: Clock) -> None:
    cache.record_location("r", D1, "old")
    clock.now += 10
    cache.record_location("r", D1, "new")
    assert cache.locations("r", D1) == ["new", "old"]


def test_locations_up_to_a_limit_most_recent_first(cache: LayerCache, clock: Clock) -> None:
    for n in range(10):
        clock.now += 1
        cache.record_location("r", D1, f"repo-{n}")
    assert cache.locations("r", D1, 3) == ["repo-9", "repo-8", "repo-7"]
    assert len(cache.locations("r", D1)) == 10


def test_prune_by_age(cache: LayerCache, clock: Clock) -> None:
    cache.record_transform(D1, "s", D2, 1)
    cache.record_image(D1, "c", b"{}", "t")
    clock.now += 40 * 86400
    cache.record_transform(D2, "s", D3, 1)
    cache.record_location("r", D3, "repo")
    done = cache.prune(max_age=parse_duration("30d"))
    assert done["deleted"] == 2
    assert cache.transform(D1, "s") is None and cache.image(D1, "c") is None
    assert cache.transform(D2, "s") == (D3, 1) and cache.locations("r", D3) == ["repo"]


def test_prune_by_size_keeps_the_most_recently_used(cache: LayerCache, clock: Clock) -> None:
    filler = os.urandom(20_000)
    for i in range(100):  # about 2 MB of manifests, each newer than the one before
        clock.now += 1
        cache.record_image(digests.of_bytes(str(i).encode()), "c", filler, "t")
    assert cache.size() > 1_500_000
    done = cache.prune(max_size=parse_size("512K"))
    assert done["size_after"] == cache.size() <= 512 * 1024
    assert 0 < done["deleted"] < 100
    kept = [i for i in range(100) if cache.image(digests.of_bytes(str(i).encode()), "c")]
    assert kept == list(range(100 - len(kept), 100))  # the newest survive
    assert cache.info()["images"] == len(kept)


def test_stored_manifest_that_does_not_hash_is_ignored(cache: LayerCache,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    cache.record_image(D1, "c", b'{"a":1}', "t")
    with sqlite3.connect(cache.path) as db:
        db.execute("UPDATE images SET manifest = ?", (b'{"a":2}',))
    with caplog.at_level(logging.WARNING, "occystrap"):
        assert cache.image(D1, "c") is None
    assert "does not hash to its digest" in caplog.text


def test_corrupt_file_is_a_warning_and_no_cache(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / FILENAME).write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, "occystrap"):
        assert open_for_run(str(tmp_path)) is None
    assert "going on without the cache" in caplog.text


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_another_programs_database_is_left_as_it_was(
        tmp_path: Path, run_cli: Callable[..., Result], expect_error: Callable[..., None],
        caplog: pytest.LogCaptureFixture) -> None:
    """A database that is not a layer cache gets no tables, no WAL mode, no version:
    neither a copy (a warning) nor ``cache prune`` (an error) changes a byte of it."""
    db = sqlite3.connect(tmp_path / FILENAME)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.execute("INSERT INTO notes VALUES ('keep me')")
    db.commit()
    db.close()
    before = _files(tmp_path)
    with caplog.at_level(logging.WARNING, "occystrap"):
        assert open_for_run(str(tmp_path)) is None
    assert "not a layer cache" in caplog.text
    assert "remove it" not in caplog.text  # it is not occystrap's to remove
    assert _files(tmp_path) == before
    for command in (("cache", "info"), ("cache", "prune", "--max-size", "1K")):
        result = run_cli("--layer-cache", str(tmp_path), *command)
        expect_error(result, "not a layer cache", "another directory")
        assert "remove it" not in result.stderr
        assert _files(tmp_path) == before


def test_a_device_where_the_database_should_be_is_not_opened(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite would take a device (here a null device, made as root) for an empty
    database and litter its directory with journals."""
    os.mknod(tmp_path / FILENAME, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with caplog.at_level(logging.WARNING, "occystrap"):
        assert open_for_run(str(tmp_path)) is None
    assert "not a regular file" in caplog.text and "remove it" not in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == [FILENAME]


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_symbolic_link_to_nothing_as_the_directory_is_named(
        tmp_path: Path, below: str, caplog: pytest.LogCaptureFixture) -> None:
    """``DIR`` (or a directory above it) a symbolic link whose target is gone: the
    warning names the link, not makedirs' 'File exists'; nothing is made."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    with caplog.at_level(logging.WARNING, "occystrap"):
        assert open_for_run(str(link / below)) is None
    assert f"{link} is a symbolic link to {tmp_path / 'gone'}, which does not exist" \
        in caplog.text, caplog.text
    assert "File exists" not in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["link"]


def test_a_file_as_the_directory_is_named(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """The library takes any path (the CLI's option refuses a file itself): a file
    where DIR should be is named so, not with makedirs' 'File exists'; it is kept."""
    (tmp_path / "file").write_bytes(b"keep me")
    with caplog.at_level(logging.WARNING, "occystrap"):
        assert open_for_run(str(tmp_path / "file")) is None
    assert f"{tmp_path / 'file'} is not a directory" in caplog.text, caplog.text
    assert "File exists" not in caplog.text
    assert (tmp_path / "file").read_bytes() == b"keep me"


def test_a_full_disk_is_named_as_such(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Tiny file systems (we run as root) that fill while the schema is created: the
    error says the disk is full, not that the rollback after it failed."""
    said = []
    for size in ("44k", "52k", "60k"):
        mount = tmp_path / size
        mount.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                       check=True, capture_output=True)
        request.addfinalizer(lambda m=mount: subprocess.run(["umount", "-l", str(m)],
                                                            check=False, capture_output=True))
        try:
            LayerCache(str(mount / "cache")).close()
        except CacheError as e:
            said.append(str(e))
    assert said and all("full" in e and "rollback" not in e for e in said), said
    # the disk is full, not the cache broken: removing it is no remedy
    assert all("free space" in e and "remove it" not in e for e in said), said


def test_newer_schema_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with sqlite3.connect(tmp_path / FILENAME) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with caplog.at_level(logging.WARNING, "occystrap"):
        assert open_for_run(str(tmp_path)) is None
    assert "newer" in caplog.text
    # a newer occystrap's cache, sound: removing it would lose that occystrap's entries
    assert "remove it" not in caplog.text and "the newer occystrap" in caplog.text


def _mount_tmpfs(mount: Path, request: pytest.FixtureRequest, *options: str) -> None:
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=200k", *options)), "tmpfs",
                    str(mount)], check=True, capture_output=True)
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(mount)], check=False,
                                                capture_output=True))


def test_a_sound_cache_on_a_full_disk_is_not_called_damaged(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A cache made before its disk filled: SQLite cannot size the WAL's shared memory
    file and answers an I/O error. The cache is sound, as it is once space is freed."""
    mount = tmp_path / "m"
    _mount_tmpfs(mount, request)
    cache = LayerCache(str(mount / "c"))
    cache.record_transform(D1, "s", D2, 1)
    cache.close()  # the last connection: SQLite removes the WAL's files
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 4096)
    with pytest.raises(CacheError) as refused:
        LayerCache(str(mount / "c"))
    assert "full" in str(refused.value) and "free space" in str(refused.value)
    assert "remove it" not in str(refused.value)
    filler.unlink()
    cache = LayerCache(str(mount / "c"))
    assert cache.transform(D1, "s") == (D2, 1)
    cache.close()


def test_a_prune_on_a_full_disk_deletes_and_says_it_could_not_compact(
        tmp_path: Path, request: pytest.FixtureRequest, run_cli: Callable[..., Result]) -> None:
    """A cache is pruned when its disk is full. Deleting the old tenth of a 1.2 MB cache
    needs little room; VACUUM needs room for a copy of what is kept. Without it the
    entries are still pruned (SQLite reuses their pages), which the command says."""
    mount = tmp_path / "m"
    _mount_tmpfs(mount, request, "size=16m")
    cache = LayerCache(str(mount / "c"), now=lambda: 1_000.0)
    for i in range(500):
        cache.record_location("reg", f"sha256:{i:064x}", f"team/old-{i}")
    cache.close()
    cache = LayerCache(str(mount / "c"))  # now: the rest is recent
    for i in range(500, 5000):
        cache.record_location("reg", f"sha256:{i:064x}", f"team/repository-{i}")
    cache.close()
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    (mount / "filler").write_bytes(b"\0" * (free - 400 * 1024))
    result = run_cli("--layer-cache", str(mount / "c"), "cache", "prune", "--max-age", "1d")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Pruned 500 entries"), result.stdout
    assert result.stderr.startswith("Warning: ") and "file system is full" in result.stderr
    cache = LayerCache(str(mount / "c"))
    assert cache.info()["locations"] == 4500
    cache.record_location("reg", D1, "team/new")  # the freed pages take new entries
    assert cache.locations("reg", D1) == ["team/new"]
    cache.close()
    (mount / "filler").unlink()  # room again: the next prune shrinks the file
    shrunk = run_cli("--layer-cache", str(mount / "c"), "cache", "prune", "--max-age", "1d")
    assert shrunk.exit_code == 0 and shrunk.stderr == "", shrunk.output


def test_a_cache_on_a_read_only_disk_is_not_called_damaged(
        tmp_path: Path, request: pytest.FixtureRequest, run_cli: Callable[..., Result],
        expect_error: Callable[..., None], caplog: pytest.LogCaptureFixture) -> None:
    """SQLite cannot make the WAL's files beside a cache on a read-only file system:
    the warning (and the ``cache`` commands' error) says so, and nothing changes."""
    mount = tmp_path / "m"
    _mount_tmpfs(mount, request)
    cache = LayerCache(str(mount / "c"))
    cache.record_transform(D1, "s", D2, 1)
    cache.close()
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)
    before = _files(mount / "c")
    with caplog.at_level(logging.WARNING, "occystrap"):
        assert open_for_run(str(mount / "c")) is None
        assert open_for_run(str(mount)) is None  # SQLite cannot make a database there
    assert "cannot write" in caplog.text and "remove it" not in caplog.text, caplog.text
    assert f"occystrap cannot write in {mount} " in caplog.text, caplog.text
    result = run_cli("--layer-cache", str(mount / "c"), "cache", "info")
    expect_error(result, "cannot write")
    assert "remove it" not in result.stderr
    assert _files(mount / "c") == before


def test_error_while_running_turns_the_cache_off(cache: LayerCache,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    cache.record_transform(D1, "s", D2, 1)
    with sqlite3.connect(cache.path) as db:
        db.execute("DROP TABLE transforms")  # damage behind the store's back
    with caplog.at_level(logging.WARNING, "occystrap"):
        assert cache.transform(D1, "s") is None
        cache.record_location("r", D1, "repo")  # off now: ignored, no second warning
    assert caplog.text.count("going on without the cache") == 1
    assert cache.locations("r", D1) == []


_WRITER = """
import sys
from occystrap_core.layercache import LayerCache
cache = LayerCache(sys.argv[1])
n = int(sys.argv[2])
for i in range(200):
    cache.record_transform(f"sha256:{n}-{i}", "step", f"sha256:out-{n}-{i}", i)
    cache.record_location("reg", f"sha256:{i}", f"repo-{n}")
    assert cache.transform(f"sha256:{n}-{i}", "step") == (f"sha256:out-{n}-{i}", i)
cache.close()
"""


def test_several_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    where = str(tmp_path / "shared")  # created by whichever process comes first
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, where, str(n)],
                              stderr=subprocess.PIPE, text=True) for n in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    cache = LayerCache(where)
    try:
        info = cache.info()
        assert (info["transforms"], info["locations"]) == (800, 800)
        assert cache.transform("sha256:3-199", "step") == ("sha256:out-3-199", 199)
        assert sorted(cache.locations("reg", "sha256:7")) == [f"repo-{n}" for n in range(4)]
    finally:
        cache.close()


def _busy() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorname = "SQLITE_BUSY"
    return error


def test_a_set_up_answered_busy_at_once_starts_over(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite answers BUSY without waiting where waiting could deadlock (processes
    setting up one new cache together, seen once in the 4-process test above): the
    set-up starts over; any other error fails at once."""
    from occystrap_core import layercache

    real = layercache.LayerCache._setup
    answers = [_busy(), _busy()]

    def setup(self: LayerCache) -> None:
        if answers:
            raise answers.pop(0)
        real(self)

    monkeypatch.setattr(layercache.LayerCache, "_setup", setup)
    monkeypatch.setattr(layercache.time, "sleep", lambda _: None)
    cache = LayerCache(str(tmp_path / "c"))
    try:
        cache.record_location("reg", "sha256:1", "repo")
        assert cache.locations("reg", "sha256:1") == ["repo"]
    finally:
        cache.close()
    assert not answers

    other = sqlite3.OperationalError("disk I/O error")
    other.sqlite_errorname = "SQLITE_IOERR"
    answers[:] = [other, _busy()]
    with pytest.raises(layercache.CacheError, match="disk I/O error"):
        LayerCache(str(tmp_path / "d"))
    assert len(answers) == 1


def test_cache_commands_make_no_cache(run_cli: Callable[..., Result], tmp_path: Path,
                                     expect_error: Callable[..., None]) -> None:
    """``cache info`` and ``cache prune`` read a cache that a copy made: a mistyped
    DIR is an error, not an empty cache made there (directories and all)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for where in (tmp_path / "typo" / "c", empty):
        for command in (("info",), ("prune", "--max-age", "1d")):
            expect_error(run_cli("--layer-cache", str(where), "cache", *command),
                         "no layer cache", str(where))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    assert list(empty.iterdir()) == []


def test_a_cache_another_process_holds_is_not_called_damaged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new cache another connection holds an exclusive lock on for longer than the
    busy timeout (here 0.2 s, not 30): busy, not damaged; nothing to remove."""
    from occystrap_core import layercache

    monkeypatch.setattr(layercache, "BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(tmp_path / FILENAME, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(CacheError) as refused:
            LayerCache(str(tmp_path))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "locked" in str(refused.value) and "another process" in str(refused.value)
    assert "remove it" not in str(refused.value)
    LayerCache(str(tmp_path)).close()  # free again: set up as usual


def test_filter_step_names_options_and_plugin_version() -> None:
    core = PluginRecord("occystrap-core.filters", "occystrap-core", "0.5.0")
    newer = PluginRecord("occystrap-core.filters", "occystrap-core", "0.5.1")
    other = PluginRecord("x", "acme-filters", "0.5.0")
    base = filter_step("exclude", {"pattern": ("a", "b")}, core)
    assert base == filter_step("exclude", {"pattern": ["a", "b"]}, core)
    assert base != filter_step("exclude", {"pattern": ("b", "a")}, core)
    assert base != filter_step("exclude", {"pattern": ("a", "b")}, newer)
    assert base != filter_step("exclude", {"pattern": ("a", "b")}, other)
    assert base != filter_step("normalize", {"pattern": ("a", "b")}, core)
    one = filter_step("normalize-timestamps", {"ts": 0, "config": True}, core)
    assert one == filter_step("normalize-timestamps", {"config": True, "ts": 0}, core)
    assert one != filter_step("normalize-timestamps", {"ts": 1, "config": True}, core)


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200),
                                               ("45m", 2700), ("90s", 90), ("2w", 1209600),
                                               ("1.5h", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "size"), [("64M", 64 << 20), ("1G", 1 << 30), ("512k", 512 << 10),
                                            ("4096", 4096), ("2MiB", 2 << 20)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "3x", "\u00b2d", "\u0661\u0662d",
                                  "\uff11d", "1e3d", "inf"])
def test_bad_duration(text: str) -> None:
    """ASCII digits only: Python's ``\\d`` and ``float()`` would read Arabic-Indic and
    full-width digits, which no other number occystrap reads takes."""
    with pytest.raises(UsageError, match="--max-age"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["", "-5", "10XB", "lots", "\u00b2", "\u0661\u0662",
                                  "\uff16\uff14M", "1e3", "nan"])
def test_bad_size(text: str) -> None:
    with pytest.raises(UsageError, match="--max-size"):
        parse_size(text)


def test_a_size_or_age_beyond_any_disk_or_clock_is_no_limit(
        cache: LayerCache, run_cli: Callable[..., Result]) -> None:
    """More digits than a float holds (``inf``) is no limit, as 10**30 is: no overflow."""
    huge = "9" * 400
    assert parse_size(huge) == parse_size(huge + "G") == parse_size(str(10**30)) >= 2**63
    assert parse_duration(huge + "w") >= 10**30
    cache.record_transform(D1, "s", D2, 1)
    assert cache.prune(parse_duration(huge + "d"), parse_size(huge))["deleted"] == 0
    result = run_cli("--layer-cache", cache.directory, "cache", "prune", "--max-age",
                     huge + "d", "--max-size", huge)
    assert result.exit_code == 0 and result.stdout.startswith("Pruned 0 entries"), result.output
    assert cache.transform(D1, "s") == (D2, 1)


def test_cache_commands(run_cli: Callable[..., Result], tmp_path: Path, clock: Clock,
                        expect_error: Callable[..., None]) -> None:
    where = tmp_path / "c"
    cache = LayerCache(str(where), now=clock)
    cache.record_transform(D1, "s", D2, 1)
    cache.record_location("r", D2, "repo")
    cache.close()
    result = run_cli("--layer-cache", str(where), "cache", "info", "-O", "json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["transforms"], info["locations"], info["images"]) == (1, 1, 0)
    assert info["oldest_used"] == clock.now

    text = run_cli("--layer-cache", str(where), "cache", "info")
    assert "Transforms:  1" in text.stdout

    # entries used a million seconds ago (the fake clock) are older than a day
    pruned = run_cli("--layer-cache", str(where), "cache", "prune", "--max-age", "1d")
    assert pruned.exit_code == 0, pruned.output
    assert pruned.stdout.startswith("Pruned 2 entries")
    result = run_cli("cache", "info", "-O", "json", env={"OCCYSTRAP_LAYER_CACHE": str(where)})
    assert json.loads(result.stdout)["transforms"] == 0

    expect_error(run_cli("--layer-cache", str(where), "cache", "prune"), "--max-age")
    expect_error(run_cli("--layer-cache", str(where), "cache", "prune", "--max-size", "lots"),
                 "--max-size")
    expect_error(run_cli("cache", "info"), "--layer-cache DIR")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / FILENAME).write_bytes(b"garbage" * 1000)
    expect_error(run_cli("--layer-cache", str(tmp_path / "bad"), "cache", "info"), "unusable")
