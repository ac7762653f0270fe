"""What podman never sends: Docker's legacy and 25+ archives, compressed blobs, API errors.

A stand-in Engine API on a unix socket (``fake_daemon``) serves prepared answers.
"""

import errno
import gzip
import hashlib
import io
import json
import os
import tarfile
from urllib.parse import parse_qs

import pytest
import requests

from occystrap_core.context import Settings
from occystrap_core.errors import TransportError
from occystrap_core.testing.http import FakeClock
from occystrap_core.testing.images import sample_image, write_docker_archive
from occystrap_core.transport.retry import RetryPolicy
from occystrap_docker.daemon import Daemon, DaemonError

REF = "example.com/demo/app:v1"


def _sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _serve(fake, archive: bytes, ref: str = REF, image_id: str = "sha256:" + "1" * 64):
    fake.json("GET", f"/images/{ref}/json", {"Id": image_id})
    fake.routes[("GET", f"/images/{ref}/get")] = (200, archive)


def _docker25_gzip_archive(image) -> bytes:
    """Docker 25+ with the containerd store: blobs/sha256/ holds gzip-compressed layers."""
    out = io.BytesIO()
    blobs = [gzip.compress(layer, mtime=0) for layer in image.layers]
    members = {f"blobs/sha256/{_sha256(b)[7:]}": b for b in blobs}
    members[f"blobs/sha256/{image.config_digest[7:]}"] = image.config
    members["manifest.json"] = json.dumps([{
        "Config": f"blobs/sha256/{image.config_digest[7:]}", "RepoTags": [REF],
        "Layers": [f"blobs/sha256/{_sha256(b)[7:]}" for b in blobs]}]).encode()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize("layout", ["legacy", "podman", "docker25"])
def test_archive_layouts(tmp_path, fake_daemon, layout, process_ok, info_json):
    image = sample_image("example.com/demo/app", "v1", seed=31)
    write_docker_archive(str(tmp_path / "saved.tar"), [image], layout=layout)
    _serve(fake_daemon, (tmp_path / "saved.tar").read_bytes())
    uri = f"docker://{REF}?socket={fake_daemon.socket}"
    info = info_json(uri)
    assert info["config_digest"] == image.config_digest
    assert [l["diff_id"] for l in info["layers"]] == image.diff_ids

    process_ok(uri, f"tar://{tmp_path / 'out.tar'}")
    with tarfile.open(tmp_path / "out.tar") as tar:
        entry = json.loads(tar.extractfile("manifest.json").read())[0]
        assert [tar.extractfile(p).read() for p in entry["Layers"]] == list(image.layers)


def test_compressed_blobs_in_the_archive(tmp_path, fake_daemon, process_ok, info_json):
    image = sample_image("example.com/demo/app", "v1", seed=32)
    archive = _docker25_gzip_archive(image)
    _serve(fake_daemon, archive)
    uri = f"docker://{REF}?socket={fake_daemon.socket}"
    info = info_json(uri)
    assert {l["compression"] for l in info["layers"]} == {"gzip"}
    assert [l["digest"] for l in info["layers"]] == \
        [_sha256(gzip.compress(l, mtime=0)) for l in image.layers]
    assert [l["diff_id"] for l in info["layers"]] == image.diff_ids

    process_ok(uri, f"tar://{tmp_path / 'out.tar'}")  # decompressed on the way, diff_ids checked
    with tarfile.open(tmp_path / "out.tar") as tar:
        entry = json.loads(tar.extractfile("manifest.json").read())[0]
        assert [tar.extractfile(p).read() for p in entry["Layers"]] == list(image.layers)


def test_daemon_message_is_shown(tmp_path, fake_daemon, run_cli, expect_error):
    fake_daemon.json("GET", f"/images/{REF}/json", {"Id": "sha256:" + "1" * 64})
    fake_daemon.json("GET", f"/images/{REF}/get",
                     {"message": "write /var/tmp/x: no space left on device"}, status=500)
    temp = tmp_path / "scratch"
    temp.mkdir()
    expect_error(run_cli("--temp-dir", str(temp), "process",
                         f"docker://{REF}?socket={fake_daemon.socket}", f"tar://{tmp_path}/o.tar"),
                 f"unix://{fake_daemon.socket} refused GET /images/{REF}/get: "
                 "write /var/tmp/x: no space left on device")
    assert os.listdir(temp) == []  # the run's temp dir is gone
    assert not (tmp_path / "o.tar").exists()


def test_truncated_archive(tmp_path, fake_daemon, run_cli, expect_error):
    image = sample_image("example.com/demo/app", "v1", seed=33)
    write_docker_archive(str(tmp_path / "saved.tar"), [image])
    _serve(fake_daemon, (tmp_path / "saved.tar").read_bytes()[:3000])
    expect_error(run_cli("info", f"docker://{REF}?socket={fake_daemon.socket}"),
                 "sent an unreadable archive of example.com/demo/app:v1")


def test_load_failure_leaves_nothing_behind(tmp_path, fake_daemon, run_cli, expect_error):
    src = tmp_path / "in.tar"
    write_docker_archive(str(src), [sample_image(seed=34)])
    fake_daemon.json("POST", "/images/load", {"message": "archive/tar: invalid tar header"},
                     status=500)
    temp = tmp_path / "scratch"
    temp.mkdir()
    expect_error(run_cli("--temp-dir", str(temp), "process", f"tar://{src}",
                         f"docker://dest/app:v1?socket={fake_daemon.socket}"),
                 "refused POST /images/load: archive/tar: invalid tar header")
    sent = [size for method, path, size in fake_daemon.requests if path == "/images/load"]
    assert sent and sent[0] > src.stat().st_size // 2  # the archive was sent
    assert os.listdir(temp) == []


def test_output_tags_what_the_daemon_named_otherwise(tmp_path, fake_daemon, process_ok):
    src = tmp_path / "in.tar"
    image = sample_image(seed=35)
    write_docker_archive(str(src), [image])
    fake_daemon.routes[("POST", "/images/load")] = (
        200, b'{"stream":"Loaded image: other/name:v1\\n"}\n')
    fake_daemon.routes[("GET", "/images/docker.io/dest/app:v2/json")] = [
        (404, b'{"message":"No such image"}'),
        (200, json.dumps({"Id": image.config_digest}).encode())]
    fake_daemon.routes[("POST", "/images/other/name:v1/tag")] = (201, b"")
    process_ok(f"tar://{src}", f"docker://dest/app:v2?socket={fake_daemon.socket}")
    assert ("POST", "/images/other/name:v1/tag?repo=docker.io%2Fdest%2Fapp&tag=v2",
            0) in fake_daemon.requests


def test_load_progress_stream(fake_daemon):
    daemon = Daemon(fake_daemon.socket, Settings())
    events = (b'{"stream":"Loaded image: other/name:v1\\n"}\n'
              b'{"errorDetail":{"message":"boom"},"error":"boom"}\n')
    fake_daemon.routes[("POST", "/images/load")] = (200, events)
    with pytest.raises(DaemonError, match="boom"):
        daemon.load(io.BytesIO(b"archive"))
    fake_daemon.routes[("POST", "/images/load")] = (
        200, b'{"stream":"Loaded image: other/name:v1\\n"}\n')
    assert daemon.load(io.BytesIO(b"archive")) == ["other/name:v1"]


class _SlowDisk(io.BytesIO):
    """Each write takes ``seconds`` of the clock's time."""

    def __init__(self, clock: FakeClock, seconds: float):
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def write(self, data: bytes) -> int:  # type: ignore[override]  # BytesIO takes any buffer
        self.clock.advance(self.seconds)
        return super().write(data)


@pytest.mark.parametrize("min_speed, ok", [(100, True), (1000, False), (0, True)])
def test_a_save_is_held_to_the_minimum_speed(fake_daemon, min_speed, ok):
    """--min-speed applies to the daemon's save as to a registry's answers: 10000 bytes
    in 60 s of the clock (over --timeout's 30 s window) is 167 bytes/s. Writing is not
    the daemon's time for the stall watch: the clock is not real time."""
    clock = FakeClock()
    policy = RetryPolicy(0, clock, min_speed=min_speed, window=30.0)
    daemon = Daemon(fake_daemon.socket, Settings(read_timeout=30.0), policy)
    fake_daemon.routes[("GET", "/images/slow/app:v1/get")] = (200, b"x" * 10000)
    out = _SlowDisk(clock, 60.0)
    if ok:
        assert daemon.export("slow/app:v1", out) == 10000
        return
    with pytest.raises(TransportError, match=r"at unix://.* sent the save of slow/app:v1 too "
                                             r"slowly, after 10000 bytes: data arrived at 167 "
                                             r"bytes/s, below the minimum of 1000 \(--min-speed\)"):
        daemon.export("slow/app:v1", out)


def test_a_slow_disk_is_not_a_stalled_daemon(fake_daemon, monkeypatch):
    """The stall watch times the daemon's reads, not the writes of what they brought."""
    import time

    daemon = Daemon(fake_daemon.socket, Settings(read_timeout=0.3))
    fake_daemon.routes[("GET", "/images/disk/app:v1/get")] = (200, b"x" * 10000)
    out = io.BytesIO()
    write = out.write
    monkeypatch.setattr(out, "write", lambda data: (time.sleep(0.8), write(data))[1])
    assert daemon.export("disk/app:v1", out) == 10000


def test_permission_denied_is_explained():
    daemon = Daemon("/run/docker.sock", Settings())
    cause = requests.ConnectionError(PermissionError(errno.EACCES, "Permission denied"))
    message = str(daemon._connection_error(cause))
    assert message.startswith("cannot connect to the Docker daemon at unix:///run/docker.sock: "
                              "permission denied")


def test_the_daemon_is_asked_for_the_chosen_platform(tmp_path, fake_daemon, run_cli,
                                                    info_json, expect_error):
    """docker save of a multi-platform store exports what ?platform= asks for (Docker
    Engine API 1.48); the image it sends must be that platform's."""
    image = sample_image(REF.rsplit(":", 1)[0], "v1", architecture="arm64", n_layers=1,
                         seed=44)
    write_docker_archive(str(tmp_path / "saved.tar"), [image], layout="docker25")
    _serve(fake_daemon, (tmp_path / "saved.tar").read_bytes())
    uri = f"docker://{REF}?socket={fake_daemon.socket}"

    result = run_cli("--platform", "linux/arm64/v8", "info", "-O", "json", uri)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config_digest"] == image.config_digest
    saves = [path for method, path, _ in fake_daemon.requests if "/get" in path]
    query = saves[-1].split("?", 1)[1]
    assert json.loads(parse_qs(query)["platform"][0]) == {
        "os": "linux", "architecture": "arm64", "variant": "v8"}

    expect_error(run_cli("--platform", "linux/amd64", "info", uri),
                 "holds example.com/demo/app:v1 for linux/arm64, not linux/amd64")
    # no platform chosen: none is asked for, and what the daemon holds is taken
    fake_daemon.requests.clear()
    assert info_json(uri)["config_digest"] == image.config_digest
    assert all("platform=" not in path for _, path, _ in fake_daemon.requests)


def test_a_save_broken_off_midway(tmp_path, fake_daemon, run_cli, expect_error):
    image = sample_image("example.com/demo/app", "v1", seed=36, layer_size=100_000)
    write_docker_archive(str(tmp_path / "saved.tar"), [image])
    _serve(fake_daemon, (tmp_path / "saved.tar").read_bytes())
    fake_daemon.cut[("GET", f"/images/{REF}/get")] = 65536
    result = run_cli("process", f"docker://{REF}?socket={fake_daemon.socket}",
                     f"tar://{tmp_path / 'out.tar'}")
    # it connected: the daemon stopped sending, and says so in words, not urllib3's repr
    expect_error(result, f"the Docker daemon at unix://{fake_daemon.socket} broke off the "
                         f"save of {REF}: the connection closed early")
    assert "cannot connect" not in result.stderr and "IncompleteRead" not in result.stderr
    assert not (tmp_path / "out.tar").exists()


def test_a_load_broken_off_midway(tmp_path, fake_daemon, run_cli, expect_error):
    write_docker_archive(str(tmp_path / "in.tar"), [sample_image(seed=37)])
    events = b'{"stream":"Loading layer"}\n' * 50
    fake_daemon.routes[("POST", "/images/load")] = (200, events)
    fake_daemon.cut[("POST", "/images/load")] = 100
    result = run_cli("process", f"tar://{tmp_path / 'in.tar'}",
                     f"docker://dest/app:v2?socket={fake_daemon.socket}")
    expect_error(result, "broke off")
    assert "cannot connect" not in result.stderr and "IncompleteRead" not in result.stderr
