"""Hostile layers against every local output, every filter, ``search`` and ``check``.

Each payload of :mod:`occystrap_core.testing.hostile` is wrapped in a docker-save
archive once per module. Every run happens in a fresh sandbox holding the
``outside`` canaries the payloads aim at and the output path; after the run:

1. nothing outside the output changed: a snapshot (type, mode, owner, links,
   size, times, sha256, symlink target, device, xattrs) of the sandbox without the
   output, of the archive read, of this test's tmp_path (``--temp-dir`` included)
   and the names beside the archive, in the pytest base directory and in the
   current directory are the same before and after;
2. no traceback (an "Exception ignored" one from an object the run left open
   counts: the real CLI prints it on stderr), no ``Error: unexpected``, no
   exception escaping the CLI, exit 0 or 1, and no blocking on a FIFO from a layer
   (a watchdog unblocks it after a while, and says so);
3. on exit 1: one ``Error:`` line on stderr (``Warning:``/``WARNING`` log lines
   aside) and no output left behind (``check`` may instead exit 1 with its report);
4. on exit 0: the output exists.

The runs are in-process (``run_cli``); archives are built once per module. Nothing
is skipped or marked xfail: a failure names the payload, the output and every rule
broken.
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest
from click.testing import Result

from occystrap_core.testing.hostile import fill_outside, payloads, write_archive

PAYLOAD_NAMES = [p.name for p in payloads("/hostile-names-only/outside")]

OUTPUTS = {
    "dir": "dir://{out}",
    "dir-expand": "dir://{out}?expand=true",
    "dir-unique-expand": "dir://{out}?unique_names=true&expand=true",
    "oci-bundle": "oci-bundle://{out}",
    "mounts": "mounts://{out}",
    "tar": "tar://{out}.tar",
    "oci-layout": "oci-layout://{out}",
}
FILTERS = {
    "normalize-timestamps": "normalize-timestamps",
    "exclude": "exclude:pattern=zzz",
    "search": "search:pattern=*",
    "inspect": "inspect:file={sandbox}/history.jsonl",
}
FILTER_DESTS = ("dir-expand", "tar")
HANG_SECONDS = 2.0  # a run takes well under a second


@dataclass(frozen=True)
class Env:
    base: Path  # holds archives/ and sandbox/
    sandbox: Path  # recreated for every test: outside/ and the output
    outside: Path
    archives: dict[str, Path]

    @property
    def out(self) -> Path:
        return self.sandbox / "out"

    @property
    def produced(self) -> tuple[Path, ...]:
        """What a run may create in the sandbox: the outputs and inspect's history."""
        return (self.out, self.sandbox / "out.tar", self.sandbox / "history.jsonl")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("hostile")
    sandbox = base / "sandbox"
    (base / "archives").mkdir()
    archives = {}
    for payload in payloads(str(sandbox / "outside")):
        archives[payload.name] = base / "archives" / f"{payload.name}.tar"
        write_archive(payload, str(archives[payload.name]))
    gc.collect()
    gc.freeze()  # pytest's own objects: every run's gc.collect() skips them (10x faster)
    yield Env(base, sandbox, sandbox / "outside", archives)
    gc.unfreeze()


@pytest.fixture
def env(hostile: Env) -> Iterator[Env]:
    """A fresh sandbox at the path the payloads aim at; removed afterwards (it may
    hold world-writable device nodes)."""
    _wipe(hostile.sandbox)
    hostile.sandbox.mkdir()
    fill_outside(str(hostile.outside))
    yield hostile
    _wipe(hostile.sandbox)


def _wipe(path: Path) -> None:
    if os.path.lexists(path):
        shutil.rmtree(path)


# ---- snapshots ----------------------------------------------------------------

def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    values = []
    for name in sorted(names):
        try:
            values.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError as e:
            values.append((name, f"<{e.strerror}>".encode()))
    return tuple(values)


def _describe(path: str) -> tuple[Any, ...]:
    st = os.lstat(path)
    mode = st.st_mode
    content: Any = None
    if stat.S_ISREG(mode):  # never opens a FIFO or a device
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        content = digest.hexdigest()
    elif stat.S_ISLNK(mode):
        content = os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        content = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return (stat.filemode(mode), oct(stat.S_IMODE(mode)), st.st_uid, st.st_gid, st.st_nlink,
            st.st_size, st.st_mtime_ns, st.st_ctime_ns, content, _xattrs(path))


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[Any, ...]]:
    """Everything below ``root`` (not ``root`` itself), symlinks not followed."""
    skipped = {str(p) for p in skip}
    found: dict[str, tuple[Any, ...]] = {}

    def visit(directory: str) -> None:
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if path in skipped:
                continue
            found[path] = _describe(path)
            if stat.S_ISDIR(os.lstat(path).st_mode):
                visit(path)

    if os.path.isdir(root):
        visit(str(root))
    return found


def names(directory: Path) -> dict[str, tuple[Any, ...]]:
    """The entries of ``directory``, by name only (cheap for a big directory)."""
    prefix = str(directory) + os.sep
    return dict.fromkeys((prefix + n for n in os.listdir(directory)), ())


def world(env: Env, tmp_path: Path, archive: Path) -> dict[str, tuple[Any, ...]]:
    """What a run must not change: everything we can see outside the output (the
    archive read in full, its siblings and the test directories by name)."""
    return {**snapshot(env.sandbox, env.produced), str(archive): _describe(str(archive)),
            **snapshot(tmp_path, (tmp_path / "temp",)), **snapshot(tmp_path / "temp"),
            **names(archive.parent), **names(env.base), **names(env.base.parent),
            **names(Path.cwd())}


def differences(before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]) -> list[str]:
    fields = ("type", "mode", "uid", "gid", "nlink", "size", "mtime", "ctime", "content",
              "xattrs")
    out = [f"appeared: {p} {after[p][:1]}" for p in sorted(after.keys() - before.keys())]
    out += [f"vanished: {p}" for p in sorted(before.keys() - after.keys())]
    for path in sorted(before.keys() & after.keys()):
        if before[path] != after[path]:
            changed = [f"{f} {b!r} -> {a!r}" for f, b, a in
                       zip(fields, before[path], after[path], strict=True) if a != b]
            out.append(f"changed: {path}: {', '.join(changed)}")
    return out


# ---- running and judging -----------------------------------------------------------

def _noise(line: str) -> bool:
    return not line.strip() or line.startswith(("Warning:", "WARNING "))


@dataclass(frozen=True)
class Outcome:
    """What judging needs from a CliRunner result (which keeps the run's frames alive)."""

    exit_code: int
    stdout: str
    stderr: str
    escaped: str | None  # an exception that escaped the CLI (not SystemExit)


def judge(payload: str, target: str, result: Outcome, before: dict[str, tuple[Any, ...]],
          after: dict[str, tuple[Any, ...]], outputs: tuple[Path, ...],
          command: str = "process", extra: list[str] | None = None) -> None:
    """Fail, naming the payload/output pair and every rule broken, if any is."""
    problems = [f"escaped or changed outside the output: {d}"
                for d in differences(before, after)] + list(extra or ())
    stderr = result.stderr
    if "Traceback" in stderr:
        problems.append("a traceback on stderr")
    unexpected = [line for line in stderr.splitlines() if line.startswith("Error: unexpected")]
    if unexpected:
        problems.append(f"{unexpected[0]!r} on stderr (an exception that is not an "
                        f"OccystrapError)")
    if result.escaped is not None:
        problems.append(f"exception escaped the CLI: {result.escaped}")
    if result.exit_code not in (0, 1):
        problems.append(f"exit code {result.exit_code}")
    lines = [line for line in stderr.splitlines() if not _noise(line)]
    if result.exit_code == 1:
        report = command == "check" and not lines and "error(s)" in result.stdout
        if not report and (len(lines) != 1 or not lines[0].startswith("Error: ")):
            problems.append(f"exit 1 without exactly one 'Error:' line ({len(lines)} "
                            f"lines)")
        left = [str(p) for p in outputs if os.path.lexists(p)]
        if left:
            problems.append(f"exit 1 but output left behind: {', '.join(left)}")
    elif result.exit_code == 0 and command == "process" and not os.path.lexists(outputs[0]):
        problems.append(f"exit 0 but no output at {outputs[0]}")
    if problems:
        shown = stderr if len(stderr) < 3000 else stderr[:3000] + "...[truncated]"
        pytest.fail(f"HOSTILE {payload} x {target}: exit {result.exit_code}\n  - "
                    + "\n  - ".join(problems) + f"\n  stderr:\n{shown}", pytrace=False)


Run = Callable[..., Result]


class Watchdog:
    """Unblocks a run stuck opening a FIFO from a layer: after ``seconds``, every 0.2 s
    until the run ends, every FIFO in ``root`` is opened for writing (non-blocking) and
    closed, so a blocked reader gets EOF. ``fired`` says a reader was waiting."""

    def __init__(self, root: Path, seconds: float):
        self.root = root
        self.seconds = seconds
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hostile-watchdog",
                                        daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        if self._done.wait(self.seconds):
            return
        while not self._done.wait(0.2):
            for dirpath, dirnames, filenames in os.walk(self.root):
                for name in dirnames + filenames:
                    path = os.path.join(dirpath, name)
                    try:
                        if stat.S_ISFIFO(os.lstat(path).st_mode):
                            # succeeds only when a reader is waiting: a slow run is no hang
                            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                            self.fired = True
                    except OSError:
                        pass  # no reader waiting, or already gone


def run_in_sandbox(run_cli: Run, env: Env, tmp_path: Path, payload: str, target: str,
                   args: list[str], outputs: tuple[Path, ...], command: str = "process") -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    archive = env.archives[payload]
    before = world(env, tmp_path, archive)
    unraisable: list[str] = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: unraisable.append(
        f"{u.exc_type.__name__}: {u.exc_value} ({u.err_msg or 'Exception ignored in'} "
        f"{u.object!r})")
    try:
        with Watchdog(env.sandbox, HANG_SECONDS) as watchdog:
            result = run_cli("--temp-dir", str(temp), "--progress-interval", "0", command,
                             *args)
        escaped = result.exception
        outcome = Outcome(result.exit_code, result.stdout, result.stderr,
                          None if escaped is None or isinstance(escaped, SystemExit)
                          else f"{type(escaped).__name__}: {escaped}")
        del result, escaped  # their tracebacks hold the run's frames, and what they left open
        gc.collect()  # what the run left unclosed is finalised now, as at process exit
    finally:
        sys.unraisablehook = hook
    after = world(env, tmp_path, archive)
    extra = [f"'Exception ignored' traceback the real CLI prints on stderr: {u}"
             for u in unraisable]
    if watchdog.fired:
        extra.append(f"the run blocked opening a FIFO from the layer for reading (it went on "
                     f"only once the test opened the FIFO for writing, after {HANG_SECONDS} s)")
    judge(payload, target, outcome, before, after, outputs, command, extra)


@pytest.mark.parametrize("output", list(OUTPUTS))
@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
def test_process(run_cli: Run, env: Env, tmp_path: Path, payload: str, output: str) -> None:
    dest = OUTPUTS[output].format(out=env.out)
    produced = (Path(str(env.out) + ".tar"),) if output == "tar" else (env.out,)
    run_in_sandbox(run_cli, env, tmp_path, payload, output,
                   [f"tar://{env.archives[payload]}", dest], produced + env.produced)


@pytest.mark.parametrize("dest", FILTER_DESTS)
@pytest.mark.parametrize("filter_name", list(FILTERS))
@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
def test_filter(run_cli: Run, env: Env, tmp_path: Path, payload: str, filter_name: str,
                dest: str) -> None:
    spec = FILTERS[filter_name].format(sandbox=env.sandbox)
    produced = (Path(str(env.out) + ".tar"),) if dest == "tar" else (env.out,)
    run_in_sandbox(run_cli, env, tmp_path, payload, f"-f {filter_name} -> {dest}",
                   [f"tar://{env.archives[payload]}", OUTPUTS[dest].format(out=env.out),
                    "-f", spec], produced + env.produced)


@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
def test_search(run_cli: Run, env: Env, tmp_path: Path, payload: str) -> None:
    run_in_sandbox(run_cli, env, tmp_path, payload, "search '*'",
                   [f"tar://{env.archives[payload]}", "*"], env.produced, command="search")


@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
def test_check(run_cli: Run, env: Env, tmp_path: Path, payload: str) -> None:
    run_in_sandbox(run_cli, env, tmp_path, payload, "check",
                   [f"tar://{env.archives[payload]}"], env.produced, command="check")


# Payloads that extraction must refuse outright: quietly dropping the rest of a layer,
# or setting what overlayfs would obey, would be worse than stopping.
REFUSED = ("bad-checksum-mid-layer", "wh-dotdot", "wh-dot", "xattr-user-overlay",
           "xattr-overlay-redirect-dotdot", "nul-in-symlink-target", "nul-in-xattr-name",
           "device-huge-major", "pax-mtime-nan", "truncated-member")


@pytest.mark.parametrize("output", ["dir-expand", "oci-bundle", "mounts"])
@pytest.mark.parametrize("payload", REFUSED)
def test_extraction_refuses(run_cli: Run, env: Env, payload: str, output: str,
                            expect_error: Callable[..., None]) -> None:
    result = run_cli("process", f"tar://{env.archives[payload]}",
                     OUTPUTS[output].format(out=env.out))
    expect_error(result)
    assert not env.out.exists()


@pytest.mark.parametrize("payload", ["bad-checksum-mid-layer", "nul-in-symlink-target",
                                     "nul-in-xattr-name", "xattr-user-overlay", "wh-dotdot"])
def test_check_reports_what_extraction_refuses(run_cli: Run, env: Env, payload: str) -> None:
    result = run_cli("check", "-O", "json", f"tar://{env.archives[payload]}")
    assert result.exit_code == 1 and '"errors": 0' not in result.stdout, result.output


def test_search_never_prints_control_characters(run_cli: Run, env: Env) -> None:
    result = run_cli("search", f"tar://{env.archives['newline-in-name']}", "*")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\\n" in result.stdout
    assert all(line.isprintable() for line in result.stdout.splitlines())
