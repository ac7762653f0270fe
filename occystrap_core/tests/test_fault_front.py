"""The fault-injecting front against the real registry: pass-through, every fault kind, HTTP/2."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import ssl
import subprocess
import time
from dataclasses import dataclass

import h2.exceptions
import httpx
import pytest

from occystrap_core.testing.faults import ERROR_BODY, PORTAL_BODY, Fault, FaultFront, Pacer
from occystrap_core.testing.registry import (
    PushedImage,
    RegistryServer,
    push_sample_image,
)

BLOB = random.Random(1).randbytes(256 * 1024)  # spans many reads and HTTP/2 frames
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
BLOB_PATH = f"/v2/faults/sample/blobs/{BLOB_DIGEST}"
MANIFEST_PATH = "/v2/faults/sample/manifests/latest"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# httpx 0.28 / httpcore 1.0 let h2's own error out, unwrapped (not an httpx.TransportError),
# when an HTTP/2 body ends short of its content-length.
SHORT_BODY_ERRORS = (httpx.RemoteProtocolError, h2.exceptions.ProtocolError)


def client_for(
    target: FaultFront | RegistryServer, *, http2: bool = False, **kwargs
) -> httpx.Client:
    verify = ssl.create_default_context(cafile=target.ca_cert) if target.ca_cert else False
    kwargs.setdefault("timeout", 10)
    return httpx.Client(base_url=target.url, http2=http2, verify=verify, trust_env=False, **kwargs)


@pytest.fixture
def make_front():
    """Started fronts on a registry (or URL), stopped at teardown, through the
    context-manager form."""
    with contextlib.ExitStack() as stack:

        def make(upstream: RegistryServer | str, **kwargs) -> FaultFront:
            if isinstance(upstream, RegistryServer):
                kwargs.setdefault("upstream_ca", upstream.ca_cert)
                upstream = upstream.url
            return stack.enter_context(FaultFront(upstream, **kwargs))

        yield make


def upload(client: httpx.Client, repo: str, data, digest: str, size: int) -> httpx.Response:
    """POST an upload session, then PUT ``data`` (bytes or an iterator: streamed) to it."""
    started = client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = started.headers["location"]
    separator = "&" if "?" in location else "?"
    return client.put(
        f"{location}{separator}digest={digest}",
        content=data,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
    )


def read_until_error(
    client: httpx.Client, path: str, **kwargs
) -> tuple[httpx.Response, bytes, Exception | None]:
    """GET ``path`` streaming; what arrived and how it ended."""
    got = bytearray()
    with client.stream("GET", path, **kwargs) as response:
        try:
            for chunk in response.iter_raw():
                got += chunk
        except (httpx.TransportError, h2.exceptions.ProtocolError) as exc:
            return response, bytes(got), exc
    return response, bytes(got), None


@pytest.fixture(scope="module")
def sample_plain(registry_plain: RegistryServer) -> PushedImage:
    image = push_sample_image(registry_plain, "faults/sample")
    with client_for(registry_plain) as client:
        assert upload(client, "faults/sample", BLOB, BLOB_DIGEST, len(BLOB)).status_code == 201
    return image


@pytest.fixture(scope="module")
def sample_tls(registry_tls: RegistryServer) -> PushedImage:
    image = push_sample_image(registry_tls, "faults/sample")
    with client_for(registry_tls) as client:
        assert upload(client, "faults/sample", BLOB, BLOB_DIGEST, len(BLOB)).status_code == 201
    return image


@dataclass
class Via:
    """A front on a registry holding the sample image and BLOB, and a client for it."""

    front: FaultFront
    client: httpx.Client
    registry: RegistryServer
    image: PushedImage
    name: str  # "h1", "h1-tls" or "h2": repositories written to carry it, registries are shared
    version: str  # the HTTP version the client must get
    reset_error: type[Exception] | tuple[type[Exception], ...]  # what a client sees of a RST


@pytest.fixture(params=["h1", "h1-tls", "h2"])
def via(request, make_front, registry_plain, registry_tls) -> Via:
    """HTTP/1.1 over TCP, HTTP/1.1 over TLS (the client offers no h2), or HTTP/2 over TLS."""
    if request.param == "h1":
        registry, image = registry_plain, request.getfixturevalue("sample_plain")
        front = make_front(registry, seed=5)
    else:
        registry, image = registry_tls, request.getfixturevalue("sample_tls")
        front = make_front(registry, tls=True, seed=5)
    client = client_for(front, http2=request.param == "h2")
    request.addfinalizer(client.close)
    if request.param == "h2":
        return Via(
            front, client, registry, image, "h2", "HTTP/2", httpx.RemoteProtocolError
        )  # RST_STREAM
    # Python's ssl may report a TCP RST under TLS as an EOF, which httpx calls a protocol error.
    errors = (
        httpx.ReadError if request.param == "h1" else (httpx.ReadError, httpx.RemoteProtocolError)
    )
    return Via(front, client, registry, image, request.param, "HTTP/1.1", errors)


# -- pass-through ------------------------------------------------------------


def skopeo_copy(source: str, dest: str, *flags: str) -> None:
    command = ["skopeo", "--insecure-policy", "copy", *flags, source, dest]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def copied_digest(layout) -> str:
    return json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]


def test_skopeo_copies_through_a_plain_front(make_front, registry_plain, sample_plain, tmp_path):
    front = make_front(registry_plain)
    skopeo_copy(
        f"docker://{front.host}/faults/sample:latest",
        f"oci:{tmp_path}:latest",
        "--src-tls-verify=false",
    )
    assert copied_digest(tmp_path) == sample_plain.manifest_digest
    hits = [h for h in front.log if h.method == "GET" and h.status == 200]
    assert {h.http_version for h in front.log} == {"HTTP/1.1"}
    assert any("/manifests/" in h.path for h in hits)
    assert {h.path.rsplit("/", 1)[1] for h in hits} >= set(sample_plain.layer_digests)
    assert front.injected() == 0


def test_skopeo_copies_through_a_tls_front(make_front, registry_tls, sample_tls, tmp_path):
    front = make_front(registry_tls, tls=True)
    source = f"docker://{front.host}/faults/sample:latest"
    skopeo_copy(source, f"oci:{tmp_path}:latest", f"--src-cert-dir={front.cert_dir}")
    assert copied_digest(tmp_path) == sample_tls.manifest_digest
    # skopeo's transport offers no "h2" in ALPN: this is HTTP/1.1 over TLS (httpx
    # proves HTTP/2 below).
    assert {h.http_version for h in front.log} == {"HTTP/1.1"}
    assert all(h.status in (200, 401) for h in front.log if h.method == "GET")


def test_headers_pass_through_both_ways(via):
    response = via.client.get(
        MANIFEST_PATH, headers={"Accept": OCI_MANIFEST, "Authorization": "Bearer t0ken"}
    )
    assert response.http_version == via.version
    assert response.status_code == 200 and response.content == via.image.manifest
    assert response.headers["docker-content-digest"] == via.image.manifest_digest
    assert response.headers["content-type"] == OCI_MANIFEST
    hit = via.front.log[-1]
    assert (hit.method, hit.path, hit.status, hit.fault) == ("GET", MANIFEST_PATH, 200, None)
    assert hit.headers["authorization"] == "Bearer t0ken" and hit.headers["accept"] == OCI_MANIFEST
    assert hit.http_version == via.version

    ranged = via.client.get(BLOB_PATH, headers={"Range": "bytes=100-199"})
    assert ranged.status_code == 206 and ranged.content == BLOB[100:200]
    assert ranged.headers["content-range"] == f"bytes 100-199/{len(BLOB)}"


def test_www_authenticate_passes_through(make_front, registry_basic):
    front = make_front(registry_basic, tls=True)
    with client_for(front, http2=True) as client:
        challenged = client.get("/v2/")
        assert challenged.status_code == 401 and challenged.headers["www-authenticate"].startswith(
            "Basic realm="
        )
        assert (
            client.get("/v2/", auth=(registry_basic.username, registry_basic.password)).status_code
            == 200
        )
    assert front.log[-1].headers["authorization"].startswith("Basic ")


def test_streamed_upload_is_stored_upstream(via):
    repo = f"faults/upload-{via.name}"
    data = random.Random(2).randbytes(5 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = via.client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202
    assert started.headers["location"].startswith(f"{via.front.url}/v2/{repo}/blobs/uploads/")
    assert started.headers["docker-upload-uuid"]

    def chunks():
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    location = started.headers["location"]
    done = via.client.put(
        f"{location}&digest={digest}", content=chunks(), headers={"Content-Length": str(len(data))}
    )
    assert done.status_code == 201 and done.headers["docker-content-digest"] == digest
    assert done.headers["location"].startswith(via.front.url)
    with client_for(via.registry) as direct:
        stored = direct.head(f"/v2/{repo}/blobs/{digest}")
    assert stored.status_code == 200 and stored.headers["content-length"] == str(len(data))
    assert [h.method for h in via.front.log] == ["POST", "PUT"]
    assert "digest=" + digest in via.front.log[-1].query


def test_upstream_down_answers_502(make_front):
    front = make_front("http://127.0.0.1:9")  # discard port: nothing listens
    with client_for(front) as client:
        response = client.get("/v2/")
    assert response.status_code == 502 and response.json()["errors"]


# -- body faults -------------------------------------------------------------


def test_reset_sends_offset_bytes_then_breaks(via):
    via.front.add(Fault("reset", path="/blobs/", offset=1000))
    response, got, error = read_until_error(via.client, BLOB_PATH)
    assert response.status_code == 200 and response.headers["content-length"] == str(len(BLOB))
    assert got == BLOB[:1000]
    assert isinstance(error, via.reset_error)
    assert via.client.get(BLOB_PATH).content == BLOB  # the rule is spent
    assert [h.fault for h in via.front.log] == ["reset", None] and via.front.injected() == 1


def test_truncate_keeps_the_length_and_ends_early(via):
    via.front.add(Fault("truncate", path="/blobs/", offset=70000))
    response, got, error = read_until_error(via.client, BLOB_PATH)
    assert response.headers["content-length"] == str(len(BLOB))
    assert got == BLOB[:70000]
    assert isinstance(error, SHORT_BODY_ERRORS)
    assert via.front.log[0].fault == "truncate"
    assert via.client.get(BLOB_PATH).content == BLOB  # the client recovers


def test_corrupt_flips_one_byte_at_a_seeded_offset(via):
    via.front.add(Fault("corrupt", path="/blobs/"))
    body = via.client.get(BLOB_PATH).content
    assert len(body) == len(BLOB)
    changed = [i for i in range(len(BLOB)) if body[i] != BLOB[i]]
    assert changed == [random.Random(5).randrange(len(BLOB))]  # the front's seed is 5
    assert body[changed[0]] == BLOB[changed[0]] ^ 0xFF


def test_short_length_gives_a_complete_short_answer(via):
    via.front.add(Fault("short_length", path="/blobs/", offset=4096))
    response = via.client.get(BLOB_PATH)
    assert response.status_code == 200 and response.content == BLOB[:4096]
    assert response.headers["content-length"] == "4096"
    assert via.client.get(BLOB_PATH).content == BLOB  # the connection is still usable


def test_short_length_at_a_random_offset_is_at_least_one_byte_short(via):
    via.front.add(Fault("short_length", path="/manifests/"))
    response = via.client.get(MANIFEST_PATH, headers={"Accept": OCI_MANIFEST})
    assert response.content == via.image.manifest[: len(response.content)]
    assert len(response.content) == random.Random(5).randrange(len(via.image.manifest))


def test_long_length_sends_everything_then_ends(via):
    via.front.add(Fault("long_length", path="/blobs/"))
    response, got, error = read_until_error(via.client, BLOB_PATH)
    assert response.headers["content-length"] == str(len(BLOB) + 1)
    assert got == BLOB and isinstance(error, SHORT_BODY_ERRORS)


def test_digest_header_faults(via):
    path, accept = MANIFEST_PATH, {"Accept": OCI_MANIFEST}
    via.front.add(
        Fault("wrong_digest", path="/manifests/"), Fault("strip_digest", path="/manifests/")
    )
    wrong = via.client.get(path, headers=accept)
    assert wrong.content == via.image.manifest
    assert DIGEST_RE.fullmatch(wrong.headers["docker-content-digest"])
    assert wrong.headers["docker-content-digest"] != via.image.manifest_digest
    stripped = via.client.get(path, headers=accept)
    assert (
        stripped.content == via.image.manifest and "docker-content-digest" not in stripped.headers
    )
    assert (
        via.client.get(path, headers=accept).headers["docker-content-digest"]
        == via.image.manifest_digest
    )
    assert [h.fault for h in via.front.log] == ["wrong_digest", "strip_digest", None]


def test_reindent_changes_the_bytes_but_not_the_digest_header(via):
    via.front.add(Fault("reindent", path="/manifests/"))
    response = via.client.get(MANIFEST_PATH, headers={"Accept": OCI_MANIFEST})
    expected = json.dumps(json.loads(via.image.manifest), indent=3).encode()
    assert response.content == expected != via.image.manifest
    assert response.headers["content-length"] == str(len(expected))
    assert response.headers["docker-content-digest"] == via.image.manifest_digest


def test_body_faults_pass_a_bodyless_answer_and_wait_for_the_next(via):
    via.front.add(Fault("corrupt", path="/blobs/", offset=0))
    head = via.client.head(BLOB_PATH)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(BLOB))
    assert via.front.log[-1].fault is None and via.front.injected() == 0
    missing = via.client.get("/v2/faults/sample/blobs/sha256:" + "0" * 64)
    assert missing.status_code == 404 and via.front.injected() == 0  # only 2xx answers are faulted
    body = via.client.get(BLOB_PATH).content
    assert body[0] == BLOB[0] ^ 0xFF and body[1:] == BLOB[1:]
    assert [h.fault for h in via.front.log] == [None, None, "corrupt"]


def test_reset_on_a_head_aborts_after_the_head(via):
    via.front.add(Fault("reset", method="HEAD"))
    try:
        via.client.head(BLOB_PATH)
    except httpx.TransportError:
        pass  # the client may or may not have read the head before the abort
    assert via.front.log[0].fault == "reset" and via.front.log[0].status == 200
    with client_for(
        via.front, http2=via.version == "HTTP/2"
    ) as fresh:  # the old connection may be dead
        assert fresh.head(BLOB_PATH).status_code == 200


# -- answers replaced --------------------------------------------------------


def test_status_with_retry_after_is_spent_after_times(via):
    via.front.add(Fault("status", path="/manifests/", status=503, retry_after="2", times=2))
    path, accept = MANIFEST_PATH, {"Accept": OCI_MANIFEST}
    answers = [via.client.get(path, headers=accept) for _ in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0].headers["retry-after"] == "2" and answers[0].content == ERROR_BODY
    assert answers[0].json()["errors"][0]["code"] == "UNAVAILABLE"
    assert [(h.status, h.fault) for h in via.front.log] == [
        (503, "status"),
        (503, "status"),
        (200, None),
    ]
    assert via.front.injected() == 2


def test_after_lets_the_first_matching_requests_by(via):
    via.front.add(Fault("status", path="/manifests/", status=503, after=2, times=1))
    accept = {"Accept": OCI_MANIFEST}
    answers = [via.client.get(MANIFEST_PATH, headers=accept) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 503, 200]
    assert [h.fault for h in via.front.log] == [None, None, "status", None]


def test_status_on_a_put_drops_the_body_and_keeps_the_connection(via):
    via.front.add(Fault("status", method="PUT", status=500))
    first = upload(via.client, f"faults/status-{via.name}", BLOB, BLOB_DIGEST, len(BLOB))
    assert first.status_code == 500 and "retry-after" not in first.headers
    second = via.client.get(BLOB_PATH)
    assert second.content == BLOB
    assert first.extensions["network_stream"] is second.extensions["network_stream"]
    with client_for(via.registry) as direct:
        assert direct.head(f"/v2/faults/status-{via.name}/blobs/{BLOB_DIGEST}").status_code == 404


def test_rules_match_in_order_by_method_and_path(via):
    via.front.add(
        Fault("status", method="HEAD", status=404),
        Fault("status", path=r"/blobs/sha256:[0-9a-f]+$", status=500, times=-1),
        Fault("status", status=502),
    )
    assert via.client.head(BLOB_PATH).status_code == 404
    assert [via.client.get(BLOB_PATH).status_code for _ in range(3)] == [500, 500, 500]
    assert via.client.get("/v2/").status_code == 502
    assert via.client.get("/v2/").status_code == 200
    assert via.front.injected() == 5
    via.front.clear()
    assert via.front.log == [] and via.front.injected() == 0
    assert via.client.get(BLOB_PATH).status_code == 200


def test_rules_match_a_request_header(via):
    via.front.add(Fault("status", header=("X-Probe", "^yes$"), status=404, times=-1))
    assert via.client.get("/v2/", headers={"X-Probe": "yes"}).status_code == 404
    assert via.client.get("/v2/", headers={"X-Probe": "no"}).status_code == 200
    assert via.client.get("/v2/").status_code == 200  # no such header: no match
    assert via.front.injected() == 1


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")


def test_status_after_stores_the_upload_but_answers_an_error(via):
    via.front.add(Fault("status_after", method="PUT", status=503))
    answer = upload(via.client, f"faults/after-{via.name}", BLOB, BLOB_DIGEST, len(BLOB))
    assert answer.status_code == 503 and answer.content == ERROR_BODY
    via.front.add(Fault("status_after", method="PUT", status=400, code="DIGEST_INVALID"))
    answer = upload(via.client, f"faults/after-{via.name}", BLOB, BLOB_DIGEST, len(BLOB))
    assert answer.status_code == 400
    assert answer.json()["errors"] == [{"code": "DIGEST_INVALID", "message": "injected"}]
    with client_for(via.registry) as direct:
        assert direct.head(f"/v2/faults/after-{via.name}/blobs/{BLOB_DIGEST}").status_code == 200


def test_lost_stores_the_upload_but_never_answers(via, make_front):
    via.front.add(Fault("lost", method="PUT"))
    with pytest.raises(via.reset_error):
        upload(via.client, f"faults/lost-{via.name}", BLOB, BLOB_DIGEST, len(BLOB))
    assert via.front.log[-1].fault == "lost" and via.front.log[-1].status is None
    clean = make_front(via.registry, tls=via.registry.scheme == "https")
    with client_for(clean) as client:
        assert client.head(f"/v2/faults/lost-{via.name}/blobs/{BLOB_DIGEST}").status_code == 200


def test_html_portal_answers_without_forwarding(via):
    via.front.add(Fault("html", times=2))
    page = via.client.get(MANIFEST_PATH)
    assert page.status_code == 200 and page.content == PORTAL_BODY
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    head = via.client.head(MANIFEST_PATH)
    assert head.content == b"" and head.headers["content-length"] == str(len(PORTAL_BODY))
    assert head.headers["content-type"] == "text/html; charset=utf-8"


# -- time --------------------------------------------------------------------


def test_stall_delays_the_answer(via):
    via.front.add(Fault("stall", path="/manifests/", seconds=0.8))
    started = time.monotonic()
    response = via.client.get(MANIFEST_PATH, headers={"Accept": OCI_MANIFEST})
    assert time.monotonic() - started >= 0.7
    assert response.content == via.image.manifest and via.front.log[0].fault == "stall"


def test_stall_past_the_client_timeout_is_dropped(via):
    via.front.add(Fault("stall", path="/manifests/", seconds=0.6))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        via.client.get(MANIFEST_PATH, timeout=0.2)
    assert via.client.get("/v2/").status_code == 200  # the front keeps serving meanwhile
    time.sleep(max(0.0, started + 0.9 - time.monotonic()))  # well past the stall
    assert via.front.log[0].fault == "stall"
    if via.version == "HTTP/1.1":  # the client closed the connection: the request is dropped
        assert via.front.log[0].status is None
    # (httpx gives up on an HTTP/2 stream without RST_STREAM: the front answers into the void.)


def test_stall_body_pauses_mid_body(via):
    via.front.add(Fault("stall_body", path="/blobs/", offset=1000, seconds=0.8))
    started = time.monotonic()
    with via.client.stream("GET", BLOB_PATH) as response:
        chunks = response.iter_raw()
        first = next(chunks)
        first_at = time.monotonic() - started
        body = first + b"".join(chunks)
    assert first_at < 0.6 and len(first) <= 1000
    assert time.monotonic() - started >= 0.7 and body == BLOB


def test_trickle_sends_slowly(via):
    via.front.add(Fault("trickle", path="/manifests/", rate=1000))
    started = time.monotonic()
    with via.client.stream("GET", MANIFEST_PATH, headers={"Accept": OCI_MANIFEST}) as response:
        chunks = list(response.iter_raw())
    elapsed = time.monotonic() - started
    assert b"".join(chunks) == via.image.manifest and len(chunks) > 5
    assert elapsed >= 0.8 * len(via.image.manifest) / 1000


# -- per-connection cap --------------------------------------------------------


def test_pacer_spends_a_burst_then_paces_to_the_rate():
    now = [100.0]
    pacer = Pacer(1000.0, lambda: now[0], burst=500)
    assert pacer.take(400) == 0.0  # within the burst
    assert pacer.take(300) == pytest.approx(0.2)  # 200 bytes of debt at 1000 B/s
    now[0] += 0.2
    assert pacer.take(100) == pytest.approx(0.1)  # the debt was repaid, the bucket empty
    now[0] += 10.0
    assert pacer.take(500) == 0.0  # refilled, but never beyond the burst
    assert pacer.take(1) == pytest.approx(0.001)
    with pytest.raises(ValueError):
        Pacer(0, lambda: 0.0)


def test_capped_front_relays_ranges_and_counts_the_bytes_sent(via, make_front):
    capped = make_front(via.registry, tls=via.name != "h1", seed=5, per_connection_bps=50e6)
    with client_for(capped, http2=via.name == "h2") as client:
        whole = client.get(BLOB_PATH)
        part = client.get(BLOB_PATH, headers={"Range": "bytes=1000-70999"})
    assert whole.content == BLOB
    assert part.status_code == 206 and part.content == BLOB[1000:71000]
    assert [hit.sent for hit in capped.log] == [len(BLOB), 70000]
    with pytest.raises(ValueError):
        FaultFront(via.registry.url, per_connection_bps=0)


def test_ignore_range_gets_the_whole_body(via):
    via.front.add(Fault("ignore_range", path="/blobs/", times=-1))
    assert via.client.get(BLOB_PATH).content == BLOB  # no Range: passes, rule unspent
    part = via.client.get(BLOB_PATH, headers={"Range": "bytes=10-19"})
    assert part.status_code == 200 and part.content == BLOB
    assert [hit.fault for hit in via.front.log] == [None, "ignore_range"]


# -- HTTP/2 ------------------------------------------------------------------


def test_h2_reset_breaks_one_stream_only(make_front, registry_tls, sample_tls):
    front = make_front(registry_tls, tls=True)
    front.add(Fault("reset", path="/manifests/", offset=10))
    with client_for(front, http2=True) as client:
        with client.stream("GET", BLOB_PATH) as open_stream:  # stays open across the reset
            assert open_stream.http_version == "HTTP/2"
            with pytest.raises(httpx.RemoteProtocolError):
                client.get(MANIFEST_PATH, headers={"Accept": OCI_MANIFEST})
            assert open_stream.read() == BLOB
        after = client.get(MANIFEST_PATH, headers={"Accept": OCI_MANIFEST})
        assert after.content == sample_tls.manifest
        assert after.extensions["network_stream"] is open_stream.extensions["network_stream"]
    assert [(h.fault, h.http_version) for h in front.log] == [
        (None, "HTTP/2"),
        ("reset", "HTTP/2"),
        (None, "HTTP/2"),
    ]


def test_h2_can_be_turned_off(make_front, registry_tls, sample_tls):
    front = make_front(registry_tls, tls=True, http2=False)
    with client_for(front, http2=True) as client:
        assert client.get("/v2/").http_version == "HTTP/1.1"


# -- redirects ---------------------------------------------------------------


def test_redirect_to_another_host_drops_authorization(make_front, registry_plain, sample_plain):
    other = make_front(registry_plain, host_name="localhost")
    front = make_front(registry_plain)
    front.add(Fault("redirect", path="/manifests/", location=other.url))
    path = MANIFEST_PATH
    headers = {"Accept": OCI_MANIFEST, "Authorization": "Bearer secret"}
    with client_for(front, follow_redirects=True) as client:
        response = client.get(path + "?n=1", headers=headers)
    assert response.status_code == 200 and response.content == sample_plain.manifest
    assert response.history[0].status_code == 307
    assert response.history[0].headers["location"] == f"{other.url}{path}?n=1"
    assert other.host.startswith("localhost:") and str(response.url).startswith(other.url)
    assert front.log[0].headers["authorization"] == "Bearer secret"
    # httpx drops Authorization on a redirect to another origin; the other front proves it.
    assert [h.path for h in other.log] == [path] and "authorization" not in other.log[0].headers
    assert other.log[0].headers["host"] == other.host


def test_redirect_upload_sends_the_session_to_another_front(make_front, registry_plain):
    other = make_front(registry_plain, host_name="localhost")
    front = make_front(registry_plain)
    front.add(Fault("redirect_upload", method="POST", location=other.url))
    with client_for(front) as client:
        answer = upload(client, "faults/moved", BLOB, BLOB_DIGEST, len(BLOB))
    assert answer.status_code == 201
    assert [h.method for h in front.log] == ["POST"] and front.log[0].fault == "redirect_upload"
    assert [h.method for h in other.log] == ["PUT"]
    assert answer.headers["location"].startswith(other.url + "/v2/faults/moved/blobs/")
    with client_for(registry_plain) as direct:
        assert direct.head(f"/v2/faults/moved/blobs/{BLOB_DIGEST}").status_code == 200


def test_delay_holds_every_request_without_a_rule(make_front, registry_tls):
    held: list[float] = []

    async def sleep(seconds: float) -> None:  # records the delay instead of waiting it out
        held.append(seconds)

    front = make_front(registry_tls, tls=True, delay=0.05, sleep=sleep)
    with client_for(front, http2=True) as client:
        assert client.get("/v2/").status_code == 200
        assert client.head(MANIFEST_PATH).status_code in (200, 404)
    assert held == [0.05, 0.05] and [h.fault for h in front.log] == [None, None]


def test_a_negative_delay_is_refused():
    with pytest.raises(ValueError, match="delay"):
        FaultFront("http://127.0.0.1:1", delay=-1)


# -- connections ---------------------------------------------------------------


def test_hits_name_their_connection(make_front, registry_tls):
    """Numbered as accepted: a client's requests share its connection's number."""
    front = make_front(registry_tls, tls=True)
    with client_for(front, http2=True) as client:
        for _ in range(3):
            client.get("/v2/")
    assert {(h.connection, h.http_version) for h in front.log} == {(0, "HTTP/2")}
    with client_for(front) as one, client_for(front) as other:
        one.get("/v2/")
        other.get("/v2/")
        one.get("/v2/")
    assert [h.connection for h in front.log[3:]] == [1, 2, 1]
