"""Several runs writing into one OCI layout at once, and runs after a killed one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from occystrap_core.testing.images import SampleImage, sample_image, write_docker_archive

WRITERS = 24


def _image(i: int) -> SampleImage:
    """Every image shares its first layer with the others, and has one of its own."""
    return sample_image(tag=f"v{i}", layers=[{"base/common.txt": "shared base"},
                                              {f"app/{i}.txt": f"image {i}"}])


def test_concurrent_writers_into_one_new_layout_all_succeed(tmp_path, skopeo):
    """Of 120 concurrent writers into one new layout 36 failed, and index.json was
    rewritten without a lock. Every writer must succeed and every entry stay."""
    archives = []
    for i in range(WRITERS):
        path = tmp_path / f"image{i}.tar"
        write_docker_archive(str(path), [_image(i)])
        archives.append(path)
    layout = tmp_path / "layout"

    def write(i: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "occystrap_core", "--no-progress", "process",
             f"tar://{archives[i]}", f"oci-layout://{layout}?ref=image{i}"],
            capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(WRITERS) as pool:  # all started at once, racing to mkdir
        results = list(pool.map(write, range(WRITERS)))
    failed = [r.stderr for r in results if r.returncode]
    assert not failed, failed
    index = json.loads((layout / "index.json").read_text())
    refs = sorted(e["annotations"]["org.opencontainers.image.ref.name"]
                  for e in index["manifests"])
    assert refs == sorted(f"image{i}" for i in range(WRITERS))
    for i in (0, WRITERS - 1):
        config = json.loads(skopeo("inspect", "--config", f"oci:{layout}:image{i}"))
        assert config["rootfs"]["diff_ids"] == _image(i).diff_ids
    assert not [n for n in os.listdir(layout / "blobs" / "sha256") if n.startswith(".tmp-")]


def test_a_layout_a_killed_run_left_half_written_is_written_again(tmp_path, process_ok):
    """An interrupted first write left a directory that a re-run refused ("non-empty
    directory that is not an OCI image layout"), and its temp files stayed forever."""
    archive = tmp_path / "image.tar"
    write_docker_archive(str(archive), [_image(1)])
    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / ".tmp-abandoned").write_bytes(b"half a layer")  # no live process holds it
    process_ok(f"tar://{archive}", f"oci-layout://{layout}")
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert len(json.loads((layout / "index.json").read_text())["manifests"]) == 1
    assert not (blobs / ".tmp-abandoned").exists()


def test_a_directory_holding_other_things_is_still_refused(tmp_path, run_cli, expect_error):
    archive = tmp_path / "image.tar"
    write_docker_archive(str(archive), [_image(1)])
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "notes.txt").write_text("mine")
    expect_error(run_cli("process", f"tar://{archive}", f"oci-layout://{layout}"),
                 "not an OCI image layout")
    assert os.listdir(layout) == ["notes.txt"]
