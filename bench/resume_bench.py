"""A push killed with SIGKILL half-way, then run again: how much the re-run sends.

Starts the real CNCF registry on 127.0.0.1 behind the fault front (no faults: it
only counts the blob bytes each run sends), builds a docker archive of random
layers, and for each case starts ``occystrap process tar://... registry://...``,
kills it with SIGKILL once half the image's bytes are acknowledged, re-runs it,
and prints the bytes the re-run sent over the image's bytes, and its time against
a full push's.

- ``midway``: killed as it comes, chunks in flight. The CNCF registry forgets a
  session whose last PATCH was cut mid-body, so those blobs start over.
- ``stalled``: the network stalls first (the front holds new PATCHes), then the
  kill: every session stands at a chunk boundary and resumes.

    python3 bench/resume_bench.py [--size-mib 1024] [--layers 8] [--cases midway,stalled]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import measure  # bench/, next to this script
from registry_bench import build_archive

from occystrap_core.testing.faults import Fault, FaultFront, Hit
from occystrap_core.testing.registry import start_registry

UPLOAD = "/blobs/uploads/"
CASES = ("midway", "stalled")


def acknowledged(hits: list[Hit]) -> int:
    """Blob bytes the registry has acknowledged (PATCH 202, PUT 201)."""
    return sum(int(h.headers.get("content-length", "0")) for h in hits
               if UPLOAD in h.path and (h.method, h.status) in (("PATCH", 202), ("PUT", 201)))


def sent(hits: list[Hit]) -> int:
    return sum(int(h.headers.get("content-length", "0")) for h in hits
               if UPLOAD in h.path and h.method in ("PATCH", "PUT"))


def until(condition: object, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.02)


def image_bytes(registry_url: str, repo: str) -> int:
    with httpx.Client(base_url=registry_url, trust_env=False) as http:
        manifest = http.get(f"/v2/{repo}/manifests/v1", headers={"Accept": ", ".join((
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json"))}).raise_for_status()
    doc = json.loads(manifest.content)
    return int(doc["config"]["size"]) + sum(int(layer["size"]) for layer in doc["layers"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    measure.prepare("docker-registry")
    work = Path(tempfile.mkdtemp(prefix="occystrap-resume-"))
    print(f"building {args.size_mib} MiB random image of {args.layers} layers...", flush=True)
    archive = work / "image.tar"
    build_archive(archive, "random", args.size_mib, args.layers)
    registry = start_registry("plain", work / "registry")
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # the runs' upload journals
    try:
        with FaultFront(registry.url) as front:
            def push(repo: str) -> list[str]:
                return [sys.executable, "-m", "occystrap_core", "--insecure", "--no-progress",
                        "process", f"tar://{archive}", f"registry://{front.host}/{repo}:v1"]

            full = measure.run(push("bench/full"))
            total = image_bytes(registry.url, "bench/full")
            print(f"\n{args.size_mib} MiB image, {args.layers} layers; full push "
                  f"{full.seconds:.2f}s, {total} blob bytes")
            print(f"{'case':10} {'killed at':>10} {'re-run sent':>12} {'ratio':>7} "
                  f"{'re-run':>8}")
            for case in args.cases.split(","):
                front.clear()
                repo = f"bench/{case}"
                killed = subprocess.Popen(push(repo), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
                until(lambda: acknowledged(front.log) >= total // 2, "half the image")
                if case == "stalled":
                    front.add(Fault("stall", method="PATCH", path=UPLOAD, seconds=600,
                                    times=-1))
                    until(lambda: all(h.status is not None or h.fault == "stall"
                                      for h in front.log if h.method == "PATCH"),
                          "the chunks in flight")
                at = acknowledged(front.log)
                killed.send_signal(signal.SIGKILL)
                killed.wait()
                front.clear()
                started = time.monotonic()
                rerun = subprocess.run(push(repo), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)
                seconds = time.monotonic() - started
                if rerun.returncode:
                    sys.exit(f"the re-run failed: {rerun.stderr}")
                again = sent(front.log)
                print(f"{case:10} {at / total:>9.0%} {again:>12} {again / total:>7.1%} "
                      f"{seconds:>7.2f}s", flush=True)
    finally:
        registry.stop()


if __name__ == "__main__":
    main()
