"""Recovery and integrity against the real registry, through the fault-injecting front.

Each test names the defect it keeps fixed. The registry is real (CNCF distribution);
the front in between breaks exactly one thing at a time.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from occystrap_core.testing import images
from occystrap_core.testing.faults import Fault, FaultFront
from occystrap_core.testing.registry import PushedImage, RegistryServer, push_sample_image

MANIFEST = r"/manifests/"
BLOB = r"/blobs/sha256:"
UPLOAD = r"/blobs/uploads/."


@pytest.fixture
def pushed(registry_plain: RegistryServer) -> tuple[str, PushedImage]:
    repo = f"recovery/{uuid.uuid4().hex[:8]}"
    return repo, push_sample_image(registry_plain, repo, "v1")


@pytest.fixture
def front(fault_front_factory: Callable[..., FaultFront],
          registry_plain: RegistryServer) -> FaultFront:
    """TLS with HTTP/2 in front of the plain registry: small requests share one h2
    connection, blobs go over HTTP/1.1, so both stacks are under test."""
    return fault_front_factory(registry_plain, tls=True, http2=True)


@pytest.fixture
def via(run_cli: Callable[..., Any], quick_clock: Any) -> Callable[..., Any]:
    """``via(front, "process", SRC, DEST)``: the CLI trusting the front's CA."""

    def run(front: FaultFront, *args: str, retries: int = 3) -> Any:
        return run_cli("--ca-cert", str(front.ca_cert), "--retries", str(retries),
                       "--no-progress", *args)

    return run


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_reindented_manifest_is_caught_by_its_digest_header(front, pushed, via, tmp_path,
                                                              expect_error):
    """Copies were accepted without checking the manifest digest (issue item 2)."""
    repo, image = pushed
    front.add(Fault("reindent", method="GET", path=MANIFEST, times=-1))
    result = via(front, "process", f"registry://{front.host}/{repo}:v1",
                 f"tar://{tmp_path}/out.tar")
    expect_error(result, "digest mismatch", image.manifest_digest)
    assert not (tmp_path / "out.tar").exists()
    assert front.injected() >= 1


def test_a_missing_digest_header_is_said_to_be_unconfirmed(front, pushed, via, tmp_path):
    repo, image = pushed
    front.add(Fault("strip_digest", method="GET", path=MANIFEST, times=-1))
    result = via(front, "process", f"registry://{front.host}/{repo}:v1",
                 f"oci-layout://{tmp_path}/layout")
    assert result.exit_code == 0, result.output
    assert "computed from the bytes received, not confirmed" in result.stderr
    assert image.manifest_digest in result.stderr


@pytest.mark.parametrize("kind", ["reset", "truncate", "long_length", "corrupt",
                                  "wrong_digest"])
def test_a_manifest_broken_mid_body_is_fetched_again(front, pushed, via, tmp_path, kind,
                                                     monkeypatch):
    """A reset while reading a manifest body was not retried (item 6); over HTTP/2 a
    short body even surfaced as h2's own exception. Bytes broken on the way (they do
    not match the digest) are asked for again too."""
    monkeypatch.setenv("OCCYSTRAP_HTTP2_OVERLAP", "1")  # HTTP/2 from the first request
    repo, image = pushed
    front.add(Fault(kind, method="GET", path=MANIFEST, offset=40))
    result = via(front, "process", f"registry://{front.host}/{repo}:v1",
                 f"oci-layout://{tmp_path}/layout")
    assert result.exit_code == 0, result.output
    assert front.injected() == 1
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.manifest_digest
    assert any(hit.fault == kind and hit.http_version == "HTTP/2" for hit in front.log)


def test_a_config_broken_mid_body_is_fetched_again(front, pushed, via, tmp_path):
    repo, image = pushed
    front.add(Fault("reset", method="GET", path=image.config_digest, offset=100))
    result = via(front, "process", f"registry://{front.host}/{repo}:v1",
                 f"tar://{tmp_path}/out.tar")
    assert result.exit_code == 0, result.output
    assert front.injected() == 1


def test_a_503_on_a_streamed_blob_put_is_retried(front, registry_plain, pushed, via):
    """Registry-to-registry copies failed on one 503 (item 7)."""
    repo, image = pushed
    front.add(Fault("status", method="PUT", path=UPLOAD, status=503))
    dest = f"recovery/{uuid.uuid4().hex[:8]}"
    # from the registry itself, not through the front: another registry, so the
    # blobs are uploaded (on one registry they would be mounted)
    result = via(front, "process", f"registry://{registry_plain.host}/{repo}:v1?insecure=true",
                 f"registry://{front.host}/{dest}:v1")
    assert result.exit_code == 0, result.output
    assert front.injected() == 1 and "1 retries" in result.stderr


def test_a_lost_put_answer_does_not_replay_the_spent_session(front, pushed, via, tmp_path):
    """The retry replayed a used-up upload session: BLOB_UPLOAD_UNKNOWN (item 8)."""
    repo, image = pushed
    archive = tmp_path / "in.tar"
    assert via(front, "process", f"registry://{front.host}/{repo}:v1",
               f"tar://{archive}").exit_code == 0
    front.add(Fault("lost", method="PUT", path=UPLOAD))
    dest = f"recovery/{uuid.uuid4().hex[:8]}"
    result = via(front, "process", f"tar://{archive}", f"registry://{front.host}/{dest}:v1")
    assert result.exit_code == 0, result.output
    assert "BLOB_UPLOAD_UNKNOWN" not in result.output
    puts = [hit for hit in front.log if hit.method == "PUT" and "/uploads/" in hit.path]
    heads = [hit for hit in front.log if hit.method == "HEAD" and "/blobs/" in hit.path]
    assert puts[0].fault == "lost" and heads  # settled by asking, not by replaying


def test_a_captive_portal_never_makes_a_push_succeed(front, pushed, via, tmp_path,
                                                     expect_error):
    """'200 text/html' to everything made a --no-verify push succeed (item 3)."""
    repo, image = pushed
    archive = tmp_path / "in.tar"
    assert via(front, "process", f"registry://{front.host}/{repo}:v1",
               f"tar://{archive}").exit_code == 0
    front.add(Fault("html", times=-1))
    for verify in ("--no-verify", "--verify"):
        result = via(front, verify, "process", f"tar://{archive}",
                     f"registry://{front.host}/portal/x:v1")
        expect_error(result, "HTML page")


def test_a_wrong_digest_in_the_manifest_put_answer_is_refused(front, pushed, via, tmp_path,
                                                              expect_error):
    """The registry's answer was trusted over the digest we computed (item 4)."""
    repo, image = pushed
    front.add(Fault("wrong_digest", method="PUT", path=MANIFEST))
    result = via(front, "process", f"registry://{front.host}/{repo}:v1",
                 f"registry://{front.host}/recovery/{uuid.uuid4().hex[:8]}:v1")
    expect_error(result, "says it stored sha256:", image.manifest_digest)


def test_a_manifest_put_answered_digest_invalid_is_tried_again(front, pushed, via,
                                                               expect_error):
    """CNCF distribution answers DIGEST_INVALID to a manifest push that reads a blob's
    link while another process pushing the image rewrites it: the digest is of the
    bytes sent, so that is tried again. Other 400s are not, nor is it beyond --retries."""
    repo, image = pushed
    dest = f"recovery/{uuid.uuid4().hex[:8]}"
    front.add(Fault("status", method="PUT", path=MANIFEST, status=400, code="DIGEST_INVALID"))
    result = via(front, "process", f"registry://{front.host}/{repo}:v1",
                 f"registry://{front.host}/{dest}:v1")
    assert result.exit_code == 0, result.output
    assert front.injected() == 1 and "1 retries" in result.stderr
    assert [h.status for h in front.log if h.method == "PUT" and MANIFEST in h.path] == [400, 201]

    front.clear()
    front.add(Fault("status", method="PUT", path=MANIFEST, status=400, code="MANIFEST_INVALID"))
    result = via(front, "process", f"registry://{front.host}/{repo}:v1",
                 f"registry://{front.host}/{dest}-b:v1")
    expect_error(result, "HTTP 400", "MANIFEST_INVALID")
    assert front.injected() == 1

    front.clear()
    front.add(Fault("status", method="PUT", path=MANIFEST, status=400, code="DIGEST_INVALID",
                    times=-1))
    result = via(front, "process", f"registry://{front.host}/{repo}:v1",
                 f"registry://{front.host}/{dest}-c:v1", retries=1)
    expect_error(result, "HTTP 400", "DIGEST_INVALID")
    assert front.injected() == 2


def test_a_trickling_answer_times_out_and_is_retried(front, pushed, via, tmp_path):
    """400 bytes a second never timed out: --timeout applied per read (item 12)."""
    repo, image = pushed
    front.add(Fault("trickle", method="GET", path=MANIFEST, rate=40))
    result = via(front, "--timeout", "1", "--min-speed", "1000", "process",
                 f"registry://{front.host}/{repo}:v1", f"tar://{tmp_path}/out.tar")
    assert result.exit_code == 0, result.output
    assert front.injected() == 1 and "1 retries" in result.stderr


def test_credentials_never_follow_a_redirect_to_another_host(
        fault_front_factory, registry_basic, registry_plain, run_cli, quick_clock, tmp_path):
    """Blob GETs redirected, and upload Locations pointing, to another host (as blob
    storage does) get no Authorization header, whoever sends the client there."""
    repo = f"recovery/{uuid.uuid4().hex[:8]}"
    image = push_sample_image(registry_basic, repo, "v1")
    push_sample_image(registry_plain, repo, "v1")  # the same blobs, served without auth
    front = fault_front_factory(registry_basic, tls=True)
    storage = fault_front_factory(registry_plain, tls=True, host_name="localhost")
    flags = ["--ca-cert", str(front.ca_cert), "--username", registry_basic.username or "",
             "--password", registry_basic.password or "", "--no-progress"]

    def authorised(hits: list) -> list:
        return [h for h in hits if "authorization" in h.headers]

    front.add(Fault("redirect", method="GET", path=BLOB, location=storage.url, times=-1))
    ca = tmp_path / "both.pem"  # the two fronts have CAs of their own
    ca.write_text(Path(str(front.ca_cert)).read_text() + Path(str(storage.ca_cert)).read_text())
    flags[1] = str(ca)
    result = run_cli(*flags, "process", f"registry://{front.host}/{repo}:v1",
                     f"oci-layout://{tmp_path}/layout")
    assert result.exit_code == 0, result.output
    assert [h for h in storage.log if BLOB.strip("/") in h.path] and not authorised(storage.log)
    assert authorised(front.log)  # the registry itself did get the credentials

    front.clear()
    storage.clear()
    front.add(Fault("redirect_upload", method="POST", path=r"/blobs/uploads/$",
                    location=storage.url, times=-1))
    # blobs no repository holds, so they are uploaded (the layout above names its
    # source, from which they would be mounted)
    images.write_oci_layout(str(tmp_path / "fresh"), [images.sample_image(seed=7)], ["v1"])
    result = run_cli(*flags, "process", f"oci-layout://{tmp_path}/fresh",
                     f"registry://{front.host}/recovery/{uuid.uuid4().hex[:8]}:v1")
    assert [h for h in storage.log if h.method == "PUT"] and not authorised(storage.log)
    if result.exit_code:  # the storage host wanted credentials it must never get
        assert result.stderr.count("Error: ") == 1 and "Traceback" not in result.stderr
    assert image.manifest_digest
