"""Ctrl-C, SIGTERM and SIGKILL in the middle of real transfers, then a re-run.

occystrap runs as a separate process against the real registry, behind the
fault-injecting front, which slows the transfer down so that the signal lands
while layers are moving. After an interrupt the run must stop promptly (queued
layers are not waited for), remove what it wrote and cancel its upload sessions;
after SIGKILL the next run must clean up what the killed one left. Every wait is
bounded: a hang fails the test instead of holding up the suite.
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from occystrap_core.testing.faults import Fault, FaultFront
from occystrap_core.testing.processes import OccystrapProcess, wait_until
from occystrap_core.testing.registry import RegistryServer, push_sample_image

LAYERS = 6
LAYER_SIZE = 256 * 1024
# Far longer than a prompt stop takes, far shorter than the slowed transfer: an exit
# within it shows that queued layers were dropped, not waited for.
PROMPT = 10.0


@pytest.fixture(scope="module")
def image(registry_plain: RegistryServer) -> tuple[str, int]:
    repo = f"interrupts/{uuid.uuid4().hex[:8]}"
    rng = random.Random(7)
    layers = [{f"data/{i}.bin": rng.randbytes(LAYER_SIZE)} for i in range(LAYERS)]
    push_sample_image(registry_plain, repo, "v1", layers=layers)
    return repo, LAYERS


def _uploads(server: RegistryServer) -> list[Path]:
    """Upload sessions the registry holds, in every repository (a cancelled session
    keeps an empty hashstates directory, but no longer its startedat)."""
    root = server.root / "storage" / "docker" / "registry" / "v2" / "repositories"
    return [p.parent for p in root.rglob("_uploads/*/startedat")]


def _leftovers(*dirs: Path) -> list[str]:
    return sorted(str(p) for d in dirs if d.exists() for p in d.iterdir())


def _run(front: FaultFront, tmp: Path, *args: str) -> OccystrapProcess:
    return OccystrapProcess(tmp, str(front.ca_cert), *args)


def _one_error_line(err: str, fragment: str) -> None:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and fragment in errors[0], err


@pytest.fixture
def front(fault_front_factory: Callable[..., FaultFront],
          registry_plain: RegistryServer) -> FaultFront:
    return fault_front_factory(registry_plain, tls=True)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_pull_stops_promptly_and_leaves_nothing(front, image, tmp_path, sig, code):
    repo, layers = image
    # each layer crawls: the whole pull would take well over a minute
    front.add(Fault("trickle", method="GET", path="/blobs/sha256:", rate=20_000, times=-1))
    out = tmp_path / "layout"
    run = _run(front, tmp_path, "-j", "2", "process", f"registry://{front.host}/{repo}:v1",
              f"oci-layout://{out}")
    wait_until(lambda: sum(h.fault == "trickle" for h in front.log) >= 2, "layers to flow")
    sent = time.monotonic()
    run.process.send_signal(sig)
    returncode, err = run.wait(timeout=PROMPT + 20)
    assert time.monotonic() - sent < PROMPT, "the run waited for its queued layers"
    assert returncode == code
    _one_error_line(err, f"interrupted ({signal.Signals(sig).name})")
    assert not out.exists()
    assert _leftovers(tmp_path / "temp") == []
    front.clear()
    rerun = _run(front, tmp_path, "process", f"registry://{front.host}/{repo}:v1",
                f"oci-layout://{out}")
    assert rerun.wait(timeout=60)[0] == 0


def _stalled_push(front: FaultFront, repo: str, tmp: Path,
                  *flags: str) -> tuple[OccystrapProcess, Path, str]:
    """A push of the image (pulled to an archive first) whose blob PUTs never end:
    the run, the archive and the destination repository."""
    archive = tmp / "image.tar"
    assert _run(front, tmp, "process", f"registry://{front.host}/{repo}:v1",
               f"tar://{archive}").wait(timeout=60)[0] == 0
    dest = f"interrupts/{uuid.uuid4().hex[:8]}"
    front.add(Fault("stall", method="PUT", path="/blobs/uploads/.", seconds=60, times=-1))
    run = _run(front, tmp, *flags, "process", f"tar://{archive}",
              f"registry://{front.host}/{dest}:v1")
    return run, archive, dest


def test_an_interrupted_push_cancels_its_upload_sessions(front, registry_plain, image,
                                                         tmp_path):
    run, archive, dest = _stalled_push(front, image[0], tmp_path, "-j", "2")
    wait_until(lambda: any(h.fault == "stall" for h in front.log), "an upload to start")
    assert _uploads(registry_plain)  # the registry holds the open session
    run.process.send_signal(signal.SIGTERM)
    returncode, err = run.wait(timeout=PROMPT + 20)
    assert returncode == 143
    _one_error_line(err, "interrupted (SIGTERM)")
    wait_until(lambda: not [p for p in _uploads(registry_plain) if dest in str(p)],
           "the sessions to be cancelled", timeout=5)
    assert _leftovers(tmp_path / "temp", tmp_path / "cache" / "occystrap" / "uploads") == []
    front.clear()
    assert _run(front, tmp_path, "process", f"tar://{archive}",
               f"registry://{front.host}/{dest}:v1").wait(timeout=60)[0] == 0


def test_after_sigkill_the_next_run_cleans_up(front, registry_plain, image, tmp_path):
    """SIGKILL leaves temp files, the run's temp directory and upload sessions; the
    next run removes the first two as it starts and cancels the sessions."""
    repo, _ = image
    run, archive, dest = _stalled_push(front, repo, tmp_path)

    def journalled() -> bool:
        """Every session the registry opened has reached its PUT, so the run knew of
        it: a session whose POST answer a killed run never read cannot be cancelled."""
        hits = front.log
        opened = sum(h.method == "POST" and h.status == 202 for h in hits)
        cancelled = sum(h.method == "DELETE" for h in hits)
        return opened > 0 and opened - cancelled == sum(h.fault == "stall" for h in hits)

    wait_until(journalled, "the uploads to start")
    time.sleep(0.3)
    wait_until(journalled, "the uploads to settle")
    run.process.kill()
    run.wait(timeout=20)
    assert [p for p in _uploads(registry_plain) if dest in str(p)]
    journals = tmp_path / "cache" / "occystrap" / "uploads"
    assert _leftovers(journals)
    front.clear()
    assert _run(front, tmp_path, "process", f"tar://{archive}",
               f"registry://{front.host}/{dest}:v1").wait(timeout=60)[0] == 0
    assert not [p for p in _uploads(registry_plain) if dest in str(p)]
    assert _leftovers(journals, tmp_path / "temp") == []

    # a tar output killed half-way: its temp file goes with the next run
    front.add(Fault("trickle", method="GET", path="/blobs/sha256:", rate=20_000, times=-1))
    out = tmp_path / "copy.tar"
    run = _run(front, tmp_path, "process", f"registry://{front.host}/{repo}:v1", f"tar://{out}")
    wait_until(lambda: any(h.fault == "trickle" for h in front.log), "layers to flow")
    time.sleep(0.5)
    run.process.kill()
    run.wait(timeout=20)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy.tar.")]
    assert _leftovers(tmp_path / "temp")  # the killed run's temp directory
    front.clear()
    assert _run(front, tmp_path, "process", f"registry://{front.host}/{repo}:v1",
               f"tar://{out}").wait(timeout=60)[0] == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy.tar.")]
    assert _leftovers(tmp_path / "temp") == []


def test_an_interrupted_sync_cancels_its_upload_sessions(front, registry_plain, image,
                                                         tmp_path):
    """sync copies its images on worker threads, which an interrupt cannot stop in a
    read: their upload sessions are cancelled all the same, and a re-run succeeds."""
    repo, _ = image
    rng = random.Random(8)  # a second image: one alone is copied on the main thread
    push_sample_image(registry_plain, repo, "v2",
                      layers=[{f"data/{i}.bin": rng.randbytes(LAYER_SIZE)} for i in range(LAYERS)])
    dest = f"interrupts/{uuid.uuid4().hex[:8]}"
    config = tmp_path / "sync.yaml"
    config.write_text(f"""\
registries:
  {registry_plain.host}: {{insecure: true}}
sources:
  - images: ["registry://{front.host}/{repo}:v1", "registry://{front.host}/{repo}:v2"]
    destinations: ["registry://{registry_plain.host}/{dest}:{{tag}}"]
""")
    front.add(Fault("trickle", method="GET", path="/blobs/sha256:", rate=20_000, times=-1))
    run = _run(front, tmp_path, "-j", "2", "sync", str(config))
    wait_until(lambda: sum(h.fault == "trickle" for h in front.log) >= 2, "layers to flow")
    wait_until(lambda: [p for p in _uploads(registry_plain) if dest in str(p)],
               "uploads to start")
    sent = time.monotonic()
    run.process.send_signal(signal.SIGINT)
    returncode, err = run.wait(timeout=PROMPT + 20)
    assert time.monotonic() - sent < PROMPT
    assert returncode == 130
    _one_error_line(err, "interrupted (SIGINT)")
    assert not [p for p in _uploads(registry_plain) if dest in str(p)]
    assert _leftovers(tmp_path / "temp", tmp_path / "cache" / "occystrap" / "uploads") == []
    front.clear()
    assert _run(front, tmp_path, "sync", str(config)).wait(timeout=60)[0] == 0


def test_after_sigkill_the_next_export_cleans_up(front, image, tmp_path):
    """export writes FILE whole or not at all: killed, it leaves FILE as it was and a
    temporary file beside it, which the next export to FILE removes."""
    repo, _ = image
    out = tmp_path / "rootfs.tar"
    out.write_bytes(b"what was there")
    front.add(Fault("trickle", method="GET", path="/blobs/sha256:", rate=20_000, times=-1))
    run = _run(front, tmp_path, "export", f"registry://{front.host}/{repo}:v1", str(out))
    wait_until(lambda: any(h.fault == "trickle" for h in front.log), "layers to flow")
    time.sleep(0.5)
    run.process.kill()
    run.wait(timeout=20)
    assert out.read_bytes() == b"what was there"
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    front.clear()
    assert _run(front, tmp_path, "export", f"registry://{front.host}/{repo}:v1",
                str(out)).wait(timeout=60)[0] == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
