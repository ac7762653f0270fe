"""One large layer in parallel ranges, and pulls that resume after kill -9 (issue 18).

A real registry behind the fault front; the range threshold and chunk are lowered
through the environment so that an 80 MiB layer (gzip of random bytes) is many
chunks. The front's log says what each run asked for and how many body bytes it was
sent; ``tar`` (not occystrap) reads the layer back out of the written archive for the
digest check.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from occystrap_core.testing.faults import Fault, FaultFront, Hit
from occystrap_core.testing.registry import PushedImage, RegistryServer, push_sample_image

SIZE_MIB = 80


@pytest.fixture(scope="module")
def big(registry_plain: RegistryServer) -> tuple[str, PushedImage, int]:
    """A one-layer image of 80 MiB of random bytes: its repository, digests, layer size."""
    repo = f"ranges/{uuid.uuid4().hex[:8]}"
    data = random.Random(18).randbytes(SIZE_MIB << 20)
    pushed = push_sample_image(registry_plain, repo, layers=[{"big.bin": data}])
    size = json.loads(pushed.manifest)["layers"][0]["size"]
    return repo, pushed, size


def ranges_env(tmp_path: Path, chunk: str = "4M") -> dict[str, str]:
    return {"OCCYSTRAP_RANGE_THRESHOLD": "16M", "OCCYSTRAP_RANGE_CHUNK": chunk,
            "OCCYSTRAP_PARTIAL_DIR": str(tmp_path / "partial"),
            "XDG_CACHE_HOME": str(tmp_path / "cache")}


def layer_hits(front: FaultFront, digest: str) -> list[Hit]:
    return [h for h in front.log if h.method == "GET" and h.path.endswith(f"/blobs/{digest}")]


def witnessed_digest(archive: Path, digest: str) -> str:
    """The layer tar ``digest`` as ``tar`` extracts it from the archive, hashed (a
    docker-save archive holds the uncompressed layer, named by its diff_id)."""
    member = f"blobs/sha256/{digest.split(':', 1)[1]}"
    data = subprocess.run(["tar", "-xOf", str(archive), member], capture_output=True,
                          check=True, timeout=60).stdout
    return "sha256:" + hashlib.sha256(data).hexdigest()


def partials_left(tmp_path: Path) -> list[str]:
    directory = tmp_path / "partial"
    return sorted(os.listdir(directory)) if directory.exists() else []


def pull(run_cli: Callable[..., Any], front: FaultFront, repo: str, out: Path,
         env: dict[str, str]) -> Any:
    return run_cli("--insecure", "--no-progress", "process",
                   f"registry://{front.host}/{repo}:latest", f"tar://{out}", env=env)


def test_a_large_layer_comes_in_parallel_ranges(big, registry_plain, fault_front_factory,
                                                run_cli, tmp_path):
    repo, pushed, size = big
    front = fault_front_factory(registry_plain)
    result = pull(run_cli, front, repo, tmp_path / "out.tar", ranges_env(tmp_path))
    assert result.exit_code == 0, result.output
    hits = layer_hits(front, pushed.layer_digests[0])
    assert len(hits) == -(-size // (4 << 20)) and all(h.status == 206 for h in hits)
    assert sorted(h.headers["range"] for h in hits) == sorted(
        f"bytes={i}-{min(size, i + (4 << 20)) - 1}" for i in range(0, size, 4 << 20))
    assert sum(h.sent for h in hits) == size  # each byte once
    assert witnessed_digest(tmp_path / "out.tar", pushed.diff_ids[0]) == pushed.diff_ids[0]
    assert partials_left(tmp_path) == []  # a completed partial goes at once


def test_a_corrupted_range_fails_cleanly_and_the_next_run_succeeds(
        big, registry_plain, fault_front_factory, run_cli, expect_error, tmp_path):
    repo, pushed, _ = big
    front = fault_front_factory(registry_plain)
    front.add(Fault("corrupt", method="GET", path=f"/blobs/{pushed.layer_digests[0]}",
                    offset=12345))
    out = tmp_path / "out.tar"
    result = pull(run_cli, front, repo, out, ranges_env(tmp_path))
    expect_error(result, pushed.layer_digests[0])
    assert front.injected() == 1
    assert not out.exists() and partials_left(tmp_path) == []  # the bad partial went too
    result = pull(run_cli, front, repo, out, ranges_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert witnessed_digest(out, pushed.diff_ids[0]) == pushed.diff_ids[0]


def test_a_full_partial_directory_is_named(big, registry_plain, fault_front_factory,
                                           run_cli, tmp_path, request):
    """The partial directory (in the cache: a full home disk) filling up fails the
    pull naming it, not the output, which is on a disk with room to spare."""
    repo, _, _ = big
    full = tmp_path / "partial"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], check=True,
                   capture_output=True)
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(full)], check=False,
                                                capture_output=True))
    front = fault_front_factory(registry_plain)
    result = pull(run_cli, front, repo, tmp_path / "out.tar", ranges_env(tmp_path))
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert result.exit_code == 1 and len(errors) == 1, result.stderr
    assert "No space left" in errors[0] and str(full) in errors[0], errors[0]
    assert "out.tar" not in errors[0] and not (tmp_path / "out.tar").exists()


def test_a_server_without_ranges_gets_one_stream(big, registry_plain, fault_front_factory,
                                                 run_cli, tmp_path):
    repo, pushed, size = big
    front = fault_front_factory(registry_plain)
    front.add(Fault("ignore_range", path="/blobs/", times=-1))
    result = pull(run_cli, front, repo, tmp_path / "out.tar", ranges_env(tmp_path))
    assert result.exit_code == 0, result.output
    probe, *rest = layer_hits(front, pushed.layer_digests[0])
    assert probe.fault == "ignore_range" and probe.status == 200
    assert [(h.status, "range" in h.headers, h.sent) for h in rest] == [(200, False, size)]
    assert witnessed_digest(tmp_path / "out.tar", pushed.diff_ids[0]) == pushed.diff_ids[0]


def test_ranges_follow_a_redirect_to_a_cdn(big, registry_plain, fault_front_factory,
                                           run_cli, tmp_path):
    repo, pushed, size = big
    cdn = fault_front_factory(registry_plain, per_connection_bps=200e6)
    front = fault_front_factory(registry_plain)
    front.add(Fault("redirect", path=f"/blobs/{pushed.layer_digests[0]}", location=cdn.url,
                    times=-1))
    result = pull(run_cli, front, repo, tmp_path / "out.tar", ranges_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert all(h.status == 307 for h in layer_hits(front, pushed.layer_digests[0]))
    served = layer_hits(cdn, pushed.layer_digests[0])
    assert len(served) > 4 and all(h.status == 206 for h in served)
    assert sum(h.sent for h in served) == size


def test_a_pull_killed_half_way_resumes_from_its_partial(big, registry_plain,
                                                         fault_front_factory, tmp_path):
    """kill -9 once half the layer arrived; the re-run fetches at most 60% of it."""
    repo, pushed, size = big
    digest = pushed.layer_digests[0]
    front = fault_front_factory(registry_plain, per_connection_bps=8e6)
    out = tmp_path / "out.tar"
    env = {**os.environ, **ranges_env(tmp_path, chunk="2M")}
    args = [sys.executable, "-m", "occystrap_core", "--insecure", "--no-progress",
            "process", f"registry://{front.host}/{repo}:latest", f"tar://{out}"]
    killed = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while sum(h.sent for h in layer_hits(front, digest)) < size // 2:
            assert killed.poll() is None, killed.communicate()[1]
            assert time.monotonic() < deadline, "the pull never got half-way"
            time.sleep(0.02)
        killed.kill()
    finally:
        killed.communicate(timeout=30)
    assert killed.returncode == -9 and not out.exists()
    assert any(name.endswith(".partial") for name in partials_left(tmp_path))

    front.clear()
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    moved = sum(h.sent for h in layer_hits(front, digest))
    assert 0 < moved <= 0.6 * size, (moved, size)
    assert witnessed_digest(out, pushed.diff_ids[0]) == pushed.diff_ids[0]
    assert partials_left(tmp_path) == []
