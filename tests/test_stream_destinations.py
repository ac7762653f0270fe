"""Destinations that are not plain files: pipes, stdout, symlinks; and stdin as a source.

A destination is written through a temporary file that replaces it once whole. That
must not replace what the path merely leads to the data through: a symlink stays,
and the file it names gets the data (as the shell's ``>`` and ``cp`` do); a FIFO,
/dev/stdout or a redirected stdout gets the finished, checked archive copied into
it. ``tar://-`` is stdout as a destination and stdin as a source. Runs that write to
stdout are real processes: their file descriptor 1 is what is being tested.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from occystrap_core.testing import images

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


@pytest.fixture
def layout(tmp_path) -> str:
    path = tmp_path / "layout"
    images.write_oci_layout(str(path), [images.sample_image(name=None, tag=None)], ["v1"])
    return f"oci-layout://{path}?ref=v1"


def occystrap(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess[bytes]:
    """A run in ``cwd``, where an old build's ``tar://-`` would write a file ``-``."""
    return subprocess.run([sys.executable, "-m", "occystrap_core", *args], env=ENV, cwd=cwd,
                          capture_output=True, timeout=120, check=False, **kwargs)


def check_archive(data: bytes) -> str:
    """The manifest digest index.json names, once the archive reads as an image."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert "manifest.json" in names and "oci-layout" in names
    digest = index["manifests"][0]["digest"]
    assert f"blobs/sha256/{digest[7:]}" in names
    return digest


def test_tar_to_stdout_is_the_archive_alone(layout, tmp_path):
    """``tar://-``: stdout holds the archive and nothing else; the report goes to stderr."""
    run = occystrap("process", layout, "tar://-", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    digest = check_archive(run.stdout)
    assert f"tar://-@{digest}".encode() in run.stderr
    assert not (tmp_path / "-").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["layout"]


def test_a_redirected_stdout_is_appended_to_not_replaced(layout, tmp_path):
    """``>> FILE``: what was in FILE stays, the archive follows it; the redirection's
    file is the same one afterwards (not a new file renamed over it)."""
    out = tmp_path / "out.bin"
    out.write_bytes(b"kept\n")
    inode = out.stat().st_ino
    with open(out, "ab") as stdout:
        run = subprocess.run([sys.executable, "-m", "occystrap_core", "process", layout,
                              "tar:///proc/self/fd/1"], env=ENV, stdout=stdout,
                             stderr=subprocess.PIPE, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    data = out.read_bytes()
    assert data.startswith(b"kept\n") and out.stat().st_ino == inode
    check_archive(data[5:])
    assert b"@sha256:" in run.stderr  # the report did not go into the archive


def read_fifo(fifo: Path) -> Callable[[], bytes]:
    """Start reading the FIFO; the returned call waits for all it got."""
    os.mkfifo(fifo)
    received: list[bytes] = []
    # a daemon: it never ends if nothing opens the FIFO to write
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()

    def result() -> bytes:
        reader.join(30)
        assert received, f"nothing was written into {fifo}"
        return received[0]
    return result


def test_a_fifo_gets_the_archive(layout, tmp_path):
    fifo = tmp_path / "pipe"
    received = read_fifo(fifo)
    run = occystrap("process", layout, f"tar://{fifo}", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert fifo.is_fifo()
    check_archive(received())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_symlink_is_written_through_and_kept(layout, tmp_path, run_cli):
    real = tmp_path / "real"
    real.mkdir()
    (real / "image.tar").write_bytes(b"old")
    link = tmp_path / "image.tar"
    link.symlink_to(real / "image.tar")
    (tmp_path / "digest").symlink_to(real / "digest")
    result = run_cli("process", layout, f"tar://{link}", "--digestfile", str(tmp_path / "digest"))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and (tmp_path / "digest").is_symlink()
    digest = check_archive((real / "image.tar").read_bytes())
    assert (real / "digest").read_text() == digest
    assert sorted(p.name for p in real.iterdir()) == ["digest", "image.tar"]  # no temp left


def test_export_to_a_fifo_and_its_json_report_to_stderr(layout, tmp_path):
    fifo = tmp_path / "pipe"
    received = read_fifo(fifo)
    run = occystrap("export", layout, str(fifo), "-O", "json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert fifo.is_fifo()
    with tarfile.open(fileobj=io.BytesIO(received())) as tar:
        assert tar.getnames()
    assert json.loads(run.stdout)["layers"] >= 1  # a FIFO is not stdout: the report is

    run = occystrap("export", layout, "/proc/self/fd/1", "-O", "json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with tarfile.open(fileobj=io.BytesIO(run.stdout)) as tar:
        assert tar.getnames()
    assert json.loads(run.stderr[run.stderr.index(b"{"):])["layers"] >= 1


@pytest.mark.parametrize("args", [("export", "-"), ("process", "tar://-")],
                         ids=["export", "process"])
def test_a_reader_of_stdout_that_stops_ends_the_run_quietly(layout, tmp_path, args):
    """``occystrap export REF - | head``: once the reader is gone, the run stops as any
    Unix tool's does on SIGPIPE (status 141), with no error of its own, and leaves
    nothing behind."""
    run = subprocess.Popen([sys.executable, "-m", "occystrap_core", args[0], layout,
                            *args[1:]], env=ENV, cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    assert run.stdout is not None and run.stderr is not None
    run.stdout.close()  # before anything is written: every write finds the pipe broken
    stderr = run.stderr.read()
    assert run.wait(timeout=120) == 141, stderr
    assert b"Error" not in stderr and b"Traceback" not in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout"]


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
def test_tar_from_stdin(layout, tmp_path, compress):
    archive = occystrap("process", layout, "tar://-", cwd=tmp_path).stdout
    check_archive(archive)
    data = gzip.compress(archive, 1) if compress else archive
    run = occystrap("process", "tar://-", f"oci-layout://{tmp_path}/copy", input=data,
                    cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert b"verified" in run.stderr


def test_a_truncated_stdin_is_one_error_and_leaves_nothing(layout, tmp_path):
    archive = occystrap("process", layout, "tar://-", cwd=tmp_path).stdout
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    run = occystrap("--temp-dir", str(scratch), "process", "tar://-", f"tar://{tmp_path}/out.tar",
                    input=archive[:len(archive) // 2], cwd=tmp_path)
    assert run.returncode == 1
    errors = [line for line in run.stderr.decode().splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "/dev/stdin" in errors[0], run.stderr
    assert b"Traceback" not in run.stderr
    assert not (tmp_path / "out.tar").exists() and not list(scratch.iterdir())


def test_login_writes_through_a_symlinked_config(registry_basic, tmp_path, monkeypatch, run_cli):
    """A dotfile manager's link (config.json -> dotfiles/docker.json) survives a login."""
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "docker.json").write_text(json.dumps({"auths": {}}))
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").symlink_to(dotfiles / "docker.json")
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    server = registry_basic
    result = run_cli("--ca-cert", server.ca_cert, "login", "-u", server.username,
                     "--password-stdin", f"registry://{server.host}", input=server.password)
    assert result.exit_code == 0, result.output
    assert (config / "config.json").is_symlink()
    auth = json.loads((dotfiles / "docker.json").read_text())["auths"][server.host]["auth"]
    assert base64.b64decode(auth).decode() == f"{server.username}:{server.password}"


def test_a_bundle_goes_into_the_empty_directory_a_symlink_names(layout, tmp_path, run_cli):
    (tmp_path / "real").mkdir()
    link = tmp_path / "bundle"
    link.symlink_to(tmp_path / "real")
    result = run_cli("process", layout, f"oci-bundle://{link}")
    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    assert json.loads((tmp_path / "real" / "config.json").read_text())["root"]["path"] == "rootfs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "layout", "real"]


def test_stdin_filling_the_temp_dir_names_it(layout, tmp_path, request):
    """The archive is spooled to --temp-dir: a full one is named, and left empty."""
    archive = occystrap("process", layout, "tar://-", cwd=tmp_path).stdout
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full)], check=True)
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(full)], check=False))
    run = occystrap("--temp-dir", str(full), "process", "tar://-", f"tar://{tmp_path}/out.tar",
                    input=archive, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.decode().startswith(f"Error: No space left on device: {full}/"), run.stderr
    assert not list(full.iterdir()) and not (tmp_path / "out.tar").exists()
