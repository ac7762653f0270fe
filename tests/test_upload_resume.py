"""A push killed with SIGKILL half-way through a big blob resumes where the registry
stands (issue 18, "survive a restart", the push half).

occystrap runs as a process of its own against the real registry behind the fault
front. The front lets the big blob's first chunks through and then holds its next
``PATCH`` without forwarding it, so the kill lands at a known point: the registry
holds exactly the acknowledged chunks. The re-run must ask the registry for its
offset, send only the rest of that blob, skip the blobs already pushed (one HEAD
each), and push an image that skopeo reads back with every digest right.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from occystrap_core.testing.faults import Fault, FaultFront, Hit
from occystrap_core.testing.images import sample_image, write_docker_archive, write_oci_layout
from occystrap_core.testing.processes import OccystrapProcess, wait_until
from occystrap_core.testing.registry import RegistryServer, skopeo_args
from occystrap_registry.upload import PATCH_CHUNK

BIG = 4 * PATCH_CHUNK - 4096  # four chunks, random: compression keeps its size
SMALL = 512 * 1024
CHUNKS_BEFORE_KILL = 2
UPLOAD = "/blobs/uploads/"


@pytest.fixture(scope="module")
def image() -> object:
    rng = random.Random(18)
    return sample_image("example.com/resume/app", "v1", layers=[
        {"small/a.bin": rng.randbytes(SMALL)},
        {"big/blob.bin": rng.randbytes(BIG)},
        {"small/b.bin": rng.randbytes(SMALL)}])


def _sent(hits: list[Hit]) -> int:
    """Blob bytes sent to the registry: the bodies of upload PATCHes and PUTs."""
    return sum(int(h.headers.get("content-length", "0")) for h in hits
               if h.method in ("PATCH", "PUT") and UPLOAD in h.path)


def _digest_of(hit: Hit) -> str:
    return dict(p.split("=", 1) for p in hit.query.split("&") if "=" in p).get(
        "digest", "").replace("%3A", ":")


@pytest.mark.parametrize("mode, kind", [("plain", "oci-layout"), ("plain", "tar"),
                                        ("plain", "registry"), ("token", "oci-layout")])
def test_a_killed_push_resumes_where_the_registry_stands(
        mode, kind, image, fault_front_factory, registry_plain: RegistryServer,
        registry_token: RegistryServer, registry_tls: RegistryServer, tmp_path, skopeo):
    registry = registry_plain if mode == "plain" else registry_token
    front: FaultFront = fault_front_factory(registry, tls=True)
    ca = tmp_path / "ca.pem"  # the front's CA, the token server's, the source registry's
    ca.write_text("".join(Path(c).read_text() for c in (
        front.ca_cert, registry.ca_cert, registry_tls.ca_cert) if c))
    creds = ["--username", registry.username, "--password", registry.password or ""] \
        if registry.username else []
    if kind == "tar":  # uncompressed layers: gzip-compressed for the push
        src = f"tar://{tmp_path / 'image.tar'}"
        write_docker_archive(str(tmp_path / "image.tar"), [image])
    else:  # gzip layers: uploaded byte for byte
        src = f"oci-layout://{tmp_path / 'layout'}?ref=v1"
        write_oci_layout(str(tmp_path / "layout"), [image])
    if kind == "registry":  # streamed from another registry, read again from its start
        source = f"registry://{registry_tls.host}/resume/{uuid.uuid4().hex[:8]}:v1"
        assert OccystrapProcess(tmp_path, str(ca), "process", src, source).wait()[0] == 0
        src = source
    repo = f"resume/{uuid.uuid4().hex[:8]}"
    dest = f"registry://{front.host}/{repo}:v1"

    front.add(Fault("stall", method="PATCH", path=UPLOAD, after=CHUNKS_BEFORE_KILL,
                    seconds=300, times=-1))
    first = OccystrapProcess(tmp_path, str(ca), *creds, "-j", "3", "process", src, dest)

    def small_done() -> bool:
        hits = front.log
        return any(h.fault == "stall" for h in hits) and sum(
            h.method == "PUT" and UPLOAD in h.path and h.status == 201 for h in hits) >= 2

    wait_until(small_done, "the small layers to be pushed and the big one to stall")
    first.process.kill()
    first.wait()
    before = front.log
    small = {_digest_of(h) for h in before if h.method == "PUT" and h.status == 201}
    front.clear()

    returncode, err = OccystrapProcess(tmp_path, str(ca), *creds, "process", src, dest).wait()
    assert returncode == 0, err
    hits = front.log
    # The big blob: its status asked, then PATCHes from the registry's offset on.
    offset = CHUNKS_BEFORE_KILL * PATCH_CHUNK
    status = [h for h in hits if h.method == "GET" and UPLOAD in h.path and h.status == 204]
    assert len(status) == 1
    patches = [h for h in hits if h.method == "PATCH"]
    assert patches and patches[0].headers["content-range"].startswith(f"{offset}-")
    assert {h.path for h in patches} == {status[0].path}  # the killed run's session
    # The blobs pushed before the kill: one HEAD, never sent again.
    finals = {_digest_of(h) for h in hits if h.method == "PUT" and UPLOAD in h.path}
    assert small and not small & finals
    heads = {h.path.rsplit("/", 1)[1] for h in hits if h.method == "HEAD" and h.status == 200}
    assert small <= heads

    # At most 60% of the image's bytes went up again; the image reads back whole.
    out = tmp_path / "copy"
    skopeo("copy", *skopeo_args(registry, "src"), f"docker://{registry.host}/{repo}:v1",
           f"dir:{out}")
    manifest = json.loads((out / "manifest.json").read_text())
    blobs = [manifest["config"], *manifest["layers"]]
    for blob in blobs:
        data = (out / blob["digest"].split(":")[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"]
    total = sum(b["size"] for b in blobs)
    assert _sent(hits) <= 0.6 * total, (_sent(hits), total)
    assert _sent(hits) >= BIG - offset  # the rest of the big blob did go up


def _kill_at_the_stall(front: FaultFront, tmp: Path, ca: Path, src: str, dest: str,
                       env: dict[str, str]) -> None:
    front.add(Fault("stall", method="PATCH", path=UPLOAD, after=CHUNKS_BEFORE_KILL,
                    seconds=300, times=-1))
    run = OccystrapProcess(tmp, str(ca), "process", src, dest, env=env)
    wait_until(lambda: any(h.fault == "stall" for h in front.log), "the big blob to stall")
    run.process.kill()
    run.wait()
    front.clear()


def test_a_session_the_registry_forgot_starts_over(image, fault_front_factory,
                                                   registry_plain, tmp_path, skopeo):
    """The journal goes where OCCYSTRAP_UPLOAD_STATE_DIR says; a session cancelled
    meanwhile (as a registry's purge does) is asked for, found gone, and the blob
    goes up again from its first byte."""
    front: FaultFront = fault_front_factory(registry_plain, tls=True)
    write_oci_layout(str(tmp_path / "layout"), [image])
    src = f"oci-layout://{tmp_path / 'layout'}?ref=v1"
    repo = f"resume/{uuid.uuid4().hex[:8]}"
    state = tmp_path / "state"
    env = {"OCCYSTRAP_UPLOAD_STATE_DIR": str(state)}
    _kill_at_the_stall(front, tmp_path, Path(str(front.ca_cert)), src,
                       f"registry://{front.host}/{repo}:v1", env)
    assert not (tmp_path / "cache" / "occystrap" / "uploads").exists()
    entries = [json.loads(line) for journal in state.iterdir()
               for line in journal.read_text().splitlines()]
    resumable = [e for e in entries if e.get("offset") == CHUNKS_BEFORE_KILL * PATCH_CHUNK]
    assert resumable and all(e["repo"] == repo for e in resumable)
    for entry in resumable:  # cancelled behind the journal's back
        location = entry["open"].replace(front.url, registry_plain.url)
        assert httpx.delete(location).status_code == 204

    returncode, err = OccystrapProcess(tmp_path, str(front.ca_cert), "process", src,
                          f"registry://{front.host}/{repo}:v1", env=env).wait()
    assert returncode == 0, err
    hits = front.log
    assert [h.status for h in hits if h.method == "GET" and UPLOAD in h.path] == [404]
    patches = [h for h in hits if h.method == "PATCH"]
    assert patches[0].headers["content-range"].startswith("0-") and _sent(patches) > BIG
    skopeo("copy", *skopeo_args(registry_plain, "src"),
           f"docker://{registry_plain.host}/{repo}:v1", f"dir:{tmp_path / 'copy'}")
    assert list(state.iterdir()) == []  # nothing left to resume or cancel


def test_a_big_blob_goes_in_full_chunks_and_the_rest_in_one(image, fault_front_factory,
                                                            registry_plain, tmp_path):
    """No short PATCH after the last full chunk: what is left of less than two chunks
    goes in one (a round trip less, and one close and reopen less for the registry)."""
    front: FaultFront = fault_front_factory(registry_plain, tls=True)
    write_oci_layout(str(tmp_path / "layout"), [image])
    src = f"oci-layout://{tmp_path / 'layout'}?ref=v1"
    dest = f"registry://{front.host}/resume/{uuid.uuid4().hex[:8]}:v1"
    returncode, err = OccystrapProcess(tmp_path, str(front.ca_cert), "process", src,
                                       dest).wait()
    assert returncode == 0, err
    lengths = [int(h.headers["content-length"]) for h in front.log if h.method == "PATCH"]
    *full, last = lengths  # the packed BIG is a little over 4 chunks: 4 PATCHes, not 5
    assert full == [PATCH_CHUNK] * 3 and PATCH_CHUNK < last < 2 * PATCH_CHUNK


@pytest.mark.parametrize("refusal", [
    # GAR answers PATCH with an error
    Fault("status", method="PATCH", path=UPLOAD, status=405, code="UNSUPPORTED", times=-1),
    # GHCR keeps only the last of several PATCHes: the blob they made is another
    Fault("status", method="PUT", path=UPLOAD, header=("content-length", "^0$"), status=400,
          code="DIGEST_INVALID", times=-1),
], ids=["patch-refused", "chunks-mismatch"])
def test_a_registry_refusing_chunks_gets_big_blobs_whole(refusal, fault_front_factory,
                                                         registry_plain, tmp_path, skopeo):
    """Big blobs go in chunks so that a killed run can resume them; a registry that
    will not take chunks gets the blob in one PUT instead, and so does every later
    big blob of the run, which is not tried in chunks again."""
    rng = random.Random(7)
    image = sample_image("example.com/resume/app", "v1", layers=[
        {"big/one.bin": rng.randbytes(BIG)}, {"big/two.bin": rng.randbytes(BIG)}])
    write_oci_layout(str(tmp_path / "layout"), [image])
    front: FaultFront = fault_front_factory(registry_plain, tls=True)
    front.add(refusal)
    repo = f"resume/{uuid.uuid4().hex[:8]}"
    returncode, err = OccystrapProcess(
        tmp_path, str(front.ca_cert), "-j", "1", "process",
        f"oci-layout://{tmp_path / 'layout'}?ref=v1", f"registry://{front.host}/{repo}:v1"
    ).wait()
    assert returncode == 0, err
    assert "does not take a blob in chunks" in err
    hits = front.log
    refused = [h for h in hits if h.fault == "status"]
    assert len(refused) == 1, refused  # the second big blob is not tried in chunks
    whole = [h for h in hits if h.method == "PUT" and UPLOAD in h.path and h.status == 201
             and int(h.headers.get("content-length", "0")) > BIG // 2]
    assert len(whole) == 2, whole
    skopeo("copy", *skopeo_args(registry_plain, "src"),
           f"docker://{registry_plain.host}/{repo}:v1", f"dir:{tmp_path / 'copy'}")


def test_a_read_only_journal_directory_does_not_stop_a_push(image, registry_plain, run_cli,
                                                            skopeo, tmp_path, request):
    """The journal directory exists but cannot be written (a read-only home baked
    into a container image): the push, big blob included, goes on without it."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(state)],
                   check=True, capture_output=True)
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(state)], check=False,
                                                capture_output=True))
    archive = tmp_path / "image.tar"
    write_docker_archive(str(archive), [image])
    dest = f"{registry_plain.host}/resume/{uuid.uuid4().hex[:8]}:v1"
    result = run_cli("--insecure", "--no-progress", "process", f"tar://{archive}",
                     f"registry://{dest}", env={"OCCYSTRAP_UPLOAD_STATE_DIR": str(state)})
    assert result.exit_code == 0, result.output
    assert "cannot be journaled" in result.stderr and "Traceback" not in result.stderr
    skopeo("inspect", *skopeo_args(registry_plain), f"docker://{dest}")
