"""Temporary files a later run can tell from live ones."""

from __future__ import annotations

import os
import subprocess
import sys

from occystrap_core import tempfiles


def test_sweep_removes_what_no_live_process_holds(tmp_path):
    live_fd, live = tempfiles.mkstemp(str(tmp_path), ".tmp-")
    dead = tmp_path / ".tmp-dead"
    dead.write_bytes(b"left by a killed run")
    live_dir = tempfiles.TempDir(str(tmp_path), ".tmp-dir-")
    other = tmp_path / ".tmp-not-ours"  # a directory without the marker
    other.mkdir()
    # a directory a killed process made and held
    code = (f"import os, sys; from occystrap_core.tempfiles import TempDir; "
            f"t = TempDir({str(tmp_path)!r}, '.tmp-killed-'); print(t.path); "
            f"sys.stdout.flush(); os._exit(0)")
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert os.path.isdir(killed)
    assert tempfiles.sweep(str(tmp_path), ".tmp-") == 2
    assert sorted(os.listdir(tmp_path)) == sorted(
        [os.path.basename(live), os.path.basename(live_dir.path), ".tmp-not-ours"])
    os.close(live_fd)
    live_dir.remove()
    assert tempfiles.sweep(str(tmp_path), ".tmp-") == 1  # the file, unlocked now
    assert os.listdir(tmp_path) == [".tmp-not-ours"]


def test_an_atomic_file_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "final"
    with tempfiles.AtomicFile(str(tmp_path)) as temp:
        temp.file.write(b"abc")
    assert os.listdir(tmp_path) == []  # not committed: gone
    with tempfiles.AtomicFile(str(tmp_path)) as temp:
        temp.file.write(b"abc")
        temp.commit(str(final), 0o640)
    assert final.read_bytes() == b"abc" and os.listdir(tmp_path) == ["final"]
    assert final.stat().st_mode & 0o777 == 0o640
