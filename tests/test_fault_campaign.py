"""The fault campaign: pulls, pushes and registry-to-registry copies through hundreds
of injected faults, against the real registry.

Every run gets one or two faults drawn (from a seeded generator) from what can go
wrong with the requests that operation makes: resets and truncations at random
offsets, corrupted bodies, lying lengths and digests, 429s with either form of
Retry-After, 5xx on any request including PUTs, answers lost after the registry
stored the data, stalls past the timeout, trickling bodies, captive-portal pages
and redirects to another host. Runs vary ``--retries`` (0, 1, 3), ``-j`` (1, 4)
and the front (HTTP/1.1 in the clear, or TLS with HTTP/2).

After every run: exit 0 or 1; no traceback; a failure is exactly one ``Error:``
line; and whatever output exists is correct, checked by re-hashing every blob and
by skopeo. The targets: 0 corrupt outputs, 0 tracebacks, 0 hangs.

``OCCYSTRAP_CAMPAIGN_RUNS`` (default 216) and ``OCCYSTRAP_CAMPAIGN_SEED`` run it
longer or differently outside CI: ``OCCYSTRAP_CAMPAIGN_RUNS=2000 scripts/test.sh
tests/test_fault_campaign.py``.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import random
import tarfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from occystrap_core.testing.faults import Fault, FaultFront
from occystrap_core.testing.registry import PushedImage, RegistryServer, push_sample_image

RUNS = int(os.environ.get("OCCYSTRAP_CAMPAIGN_RUNS", "216"))
SEED = int(os.environ.get("OCCYSTRAP_CAMPAIGN_SEED", "2026"))
HANG = 120  # seconds; a run takes well under one
TIMEOUT = "2"  # --timeout: stalls below are longer
MIN_SPEED = "2000"  # --min-speed: trickles below are slower

MANIFEST = r"/manifests/"
BLOB = r"/blobs/sha256:"
UPLOADS = r"/blobs/uploads/$"
SESSION = r"/blobs/uploads/."


def _faults(rng: random.Random, storage: str) -> dict[str, list[Callable[[], Fault]]]:
    """Fault makers per kind of request; offsets come from the front's own seed."""
    def status(method: str, path: str) -> Callable[[], Fault]:
        def make() -> Fault:
            code = rng.choice([429, 429, 500, 502, 503, 504])
            retry_after = rng.choice([None, "1", "Wed, 21 Oct 2015 07:28:00 GMT"]) \
                if code in (429, 503) else None
            return Fault("status", method=method, path=path, status=code,
                         retry_after=retry_after)
        return make

    def kind(name: str, method: str, path: str, **extra: Any) -> Callable[[], Fault]:
        return lambda: Fault(name, method=method, path=path, **extra)

    return {
        "manifest-get": [kind(k, "GET", MANIFEST) for k in (
            "reset", "truncate", "corrupt", "short_length", "long_length", "wrong_digest",
            "strip_digest", "reindent", "html", "lost")]
        + [status("GET", MANIFEST), kind("stall", "GET", MANIFEST, seconds=3.0),
           kind("trickle", "GET", MANIFEST, rate=300)],
        "blob-get": [kind(k, "GET", BLOB) for k in (
            "reset", "truncate", "corrupt", "short_length", "long_length", "html", "lost")]
        + [status("GET", BLOB), kind("stall_body", "GET", BLOB, seconds=3.0),
           kind("trickle", "GET", BLOB, rate=500),
           kind("redirect", "GET", BLOB, location=storage)],
        "blob-head": [kind(k, "HEAD", BLOB) for k in ("reset", "html", "wrong_digest", "lost")]
        + [status("HEAD", BLOB)],
        "upload-start": [kind(k, "POST", UPLOADS) for k in ("html", "lost", "reset")]
        + [status("POST", UPLOADS), kind("redirect_upload", "POST", UPLOADS, location=storage)],
        "upload-put": [kind(k, "PUT", SESSION) for k in ("lost", "reset", "html", "wrong_digest")]
        + [status("PUT", SESSION), kind("status_after", "PUT", SESSION, status=503),
           kind("stall", "PUT", SESSION, seconds=3.0)],
        "manifest-head": [kind(k, "HEAD", MANIFEST) for k in ("reset", "html", "lost")]
        + [status("HEAD", MANIFEST)],
        "manifest-put": [kind(k, "PUT", MANIFEST) for k in (
            "lost", "html", "wrong_digest", "reset")]
        + [status("PUT", MANIFEST), kind("status_after", "PUT", MANIFEST, status=500)],
    }


# Which requests each operation makes (so every fault drawn can apply).
OPERATIONS = {
    "pull": ("manifest-get", "blob-get"),
    "push": ("manifest-head", "blob-head", "upload-start", "upload-put", "manifest-put"),
    "copy": ("manifest-get", "blob-get", "manifest-head", "blob-head", "upload-start",
             "upload-put", "manifest-put"),
}


@dataclass
class Source:
    repo: str
    image: PushedImage
    layout: Path  # the same image as an OCI layout, to push from


@pytest.fixture
def source(registry_plain: RegistryServer, tmp_path: Path,
           skopeo: Callable[..., str]) -> Source:
    repo = f"campaign/{uuid.uuid4().hex[:8]}"
    rng = random.Random(SEED)
    layers = [{f"data/{i}.bin": rng.randbytes(48 * 1024)} for i in range(3)]
    image = push_sample_image(registry_plain, repo, "v1", layers=layers)
    layout = tmp_path / "source-layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry_plain.host}/{repo}:v1",
           f"oci:{layout}:v1")
    return Source(repo, image, layout)


@pytest.fixture
def fronts(registry_plain: RegistryServer) -> Iterator[dict[str, FaultFront]]:
    started = {"h2": FaultFront(registry_plain.url, tls=True, http2=True, seed=SEED),
               "h1": FaultFront(registry_plain.url, seed=SEED + 1),
               "storage": FaultFront(registry_plain.url, host_name="localhost")}
    for front in started.values():
        front.start()
    yield started
    for front in started.values():
        front.stop()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check_layout(path: Path, source: Source) -> list[str]:
    problems = []
    index = json.loads((path / "index.json").read_text())
    digests = [entry["digest"] for entry in index["manifests"]]
    if digests != [source.image.manifest_digest]:
        problems.append(f"index.json lists {digests}")
    for blob in (path / "blobs" / "sha256").iterdir():
        if _sha(blob.read_bytes()) != f"sha256:{blob.name}":
            problems.append(f"blob {blob.name} does not hash to its name")
    return problems


def _check_tar(path: Path, source: Source) -> list[str]:
    with tarfile.open(path) as tar:
        def read(name: str) -> bytes:
            member = tar.extractfile(name)
            assert member is not None
            return member.read()

        entry = json.loads(read("manifest.json"))[0]
        config = read(entry["Config"])
        problems = []
        if _sha(config) != source.image.config_digest:
            problems.append("the config is not the source's")
        diff_ids = [_sha(read(name)) for name in entry["Layers"]]
        if diff_ids != list(source.image.diff_ids):
            problems.append(f"layers hash to {diff_ids}")
        return problems


def _check_registry(server: RegistryServer, repo: str, source: Source) -> list[str] | None:
    """Problems with ``repo:v1`` read straight from the registry; None if it is absent."""
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        response = client.get(f"/v2/{repo}/manifests/v1", headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json"})
        if response.status_code == 404:
            return None
        if _sha(response.content) != source.image.manifest_digest:
            return [f"the manifest pushed hashes to {_sha(response.content)}"]
        manifest = response.json()
        problems = []
        for descriptor in [manifest["config"], *manifest["layers"]]:
            blob = client.get(f"/v2/{repo}/blobs/{descriptor['digest']}")
            if blob.status_code != 200 or _sha(blob.content) != descriptor["digest"]:
                problems.append(f"blob {descriptor['digest']} is missing or corrupt")
        return problems


def _judge(result: Any, problems: list[str] | None) -> list[str]:
    """Everything wrong with one run: its exit, its stderr, its output."""
    wrong = []
    err = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        wrong.append(f"an exception escaped: {result.exception!r}")
    if "Traceback" in err or "Error: unexpected" in err:
        wrong.append("a traceback or an unexpected error")
    if result.exit_code not in (0, 1):
        wrong.append(f"exit {result.exit_code}")
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    if result.exit_code == 1 and len(errors) != 1:
        wrong.append(f"{len(errors)} Error lines")
    if result.exit_code == 0 and problems is None:
        wrong.append("exit 0 but no output")
    wrong += [f"corrupt output: {p}" for p in problems or ()]
    return wrong


@pytest.mark.campaign
def test_fault_campaign(source, fronts, registry_plain, run_cli, quick_clock, tmp_path,
                        skopeo):
    rng = random.Random(SEED)
    makers = _faults(rng, fronts["storage"].url)
    failures: list[str] = []
    injected = Counter[str]()
    outcomes = Counter[str]()
    for run in range(RUNS):
        operation = ("pull", "push", "copy")[run % 3]
        retries = (0, 1, 3)[run // 3 % 3]
        parallel = (1, 4)[run // 9 % 2]
        front = fronts["h2" if run // 18 % 2 else "h1"]
        chosen = [rng.choice(makers[rng.choice(OPERATIONS[operation])])()
                  for _ in range(rng.choice((1, 1, 2)))]
        front.clear()
        front.add(*chosen)
        flags = ["--ca-cert", str(front.ca_cert)] if front.ca_cert else ["--insecure"]
        dest_repo = f"campaign/run-{run}-{uuid.uuid4().hex[:6]}"
        src = f"registry://{front.host}/{source.repo}:v1"
        out = tmp_path / f"run{run}"
        if operation == "pull":
            dest = f"oci-layout://{out}" if run % 2 else f"tar://{out}.tar"
        else:
            dest = f"registry://{front.host}/{dest_repo}:v1"
            src = f"oci-layout://{source.layout}" if operation == "push" else src
        faulthandler.dump_traceback_later(HANG, exit=True)  # a hang ends the suite loudly
        try:
            result = run_cli(*flags, "--retries", str(retries), "-j", str(parallel),
                             "--timeout", TIMEOUT, "--min-speed", MIN_SPEED, "--no-progress",
                             "process", src, dest)
        finally:
            faulthandler.cancel_dump_traceback_later()
        for hit in front.log:
            if hit.fault:
                injected[hit.fault] += 1
        if operation == "pull" and dest.startswith("oci-layout"):
            problems = _check_layout(out, source) if out.exists() else None
            if out.exists() and run % 6 == 1:
                skopeo("inspect", f"oci:{out}:v1")  # an independent reader agrees
        elif operation == "pull":
            tar = Path(f"{out}.tar")
            problems = _check_tar(tar, source) if tar.exists() else None
        else:
            problems = _check_registry(registry_plain, dest_repo, source)
        if operation == "pull" and result.exit_code:
            leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f"run{run}")
                         or p.name.startswith(f".run{run}")]
            if leftovers:
                problems = (problems or []) + [f"a failed run left {leftovers}"]
        outcomes["ok" if result.exit_code == 0 else "failed"] += 1
        wrong = _judge(result, problems)
        if wrong:
            failures.append(f"run {run} ({operation}, --retries {retries}, -j {parallel}, "
                            f"{front.host}, faults {[(f.kind, f.method, f.path) for f in chosen]}):"
                            f" {wrong}; stderr: {result.stderr.strip()[-500:]}")
    total = sum(injected.values())
    print(f"\n{RUNS} runs, {total} faults injected ({dict(injected)}), outcomes {dict(outcomes)}")
    assert not failures, "\n".join(failures)
    assert total >= min(200, RUNS), f"only {total} faults were injected"
    assert outcomes["ok"] and outcomes["failed"]  # both recovery and clean failure happened
