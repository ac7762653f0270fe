"""occystrap sync against skopeo sync on the real CNCF registry, side by side.

Starts two registries on 127.0.0.1 (source and mirror) and pushes a corpus of
``--repos`` repositories of ``--tags`` tags each, every image a shared base layer
plus a layer of its own. Then, alternating the tools, times a cold sync of the whole
corpus to a fresh prefix of the mirror and a warm sync to a prefix already in step,
counting the requests both registries served, the CPU time (user+sys) of each tool's
process, and, for cold runs, how many times each blob was uploaded to the mirror.
skopeo reads the same corpus from a ``--src yaml`` file; its blob-info cache is
removed before each of its runs.

    python3 bench/sync_bench.py [--repos 20] [--tags 10] [--runs 3] [--base-mib 8]

Targets on a 2-core machine: cold wall <= 0.5x skopeo, warm wall <= 0.1x skopeo and
<= 2 requests per unchanged tag, each shared blob uploaded once per mirror.

For scale, the warm runs alternate with a floor: curl sending only the two HEADs per
tag a warm run cannot do without (source tag, mirror tag; 16 at a time over kept-alive
connections), with no listing, no logic and no interpreter. The CPU column adds the
two registries' CPU time to the tool's.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import measure  # bench/, next to this script

from occystrap_core import library
from occystrap_core.testing.images import sample_image, write_oci_layout
from occystrap_core.testing.registry import RegistryServer, start_registry

SKOPEO_CACHE = Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb")
PREFIX = "bench"
TAGS = ("v1.0.0", "v1.1.0", "v1.2.0", "v1.2.1-rc.1", "v2.0.0", "v2.1.0", "latest", "dev-a",
        "dev-b", "3.0", "3.1", "3.2")


@dataclass
class Sample:
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user+sys of the tool's process
    registries_cpu: list[float] = field(default_factory=list)  # both registries
    requests: list[int] = field(default_factory=list)
    uploads: list[int] = field(default_factory=list)  # most uploads of one blob, cold


def seed(src: RegistryServer, repos: int, tags: int, base_mib: int) -> None:
    """The corpus, pushed in-process: a shared random base layer, a small layer each."""
    rng = random.Random(2026)
    base = {"base/blob.bin": rng.randbytes(base_mib * 1024 * 1024)}
    images = []
    refs: list[str] = []
    destinations: list[str] = []
    for r in range(repos):
        for tag in TAGS[:tags]:
            own = {f"app/svc-{r:02d}-{tag}.bin": rng.randbytes(64 * 1024)}
            images.append(sample_image(name=None, tag=None, layers=[base, own]))
            refs.append(f"r{len(refs)}")
            destinations.append(f"registry://{src.host}/{PREFIX}/svc-{r:02d}:{tag}")
    with tempfile.TemporaryDirectory() as layout:
        write_oci_layout(layout, images, refs)
        with library.session(insecure=src.scheme == "http", ca_cert=src.ca_cert,
                             verify=False) as session, \
                ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda pair: library.copy(f"oci-layout://{layout}?ref={pair[0]}",
                                                    pair[1], session=session),
                          zip(refs, destinations, strict=True)))


def occystrap(src: RegistryServer, dst: RegistryServer, prefix: str) -> list[str]:
    return [sys.executable, "-m", "occystrap_core", "--insecure", "--no-verify", "sync",
            f"registry://{src.host}/{PREFIX}/*:*",
            f"registry://{dst.host}/{prefix}/{{repo}}:{{tag}}"]


def skopeo(src: RegistryServer, dst: RegistryServer, prefix: str, config: Path) -> list[str]:
    return ["skopeo", "--insecure-policy", "sync", "--src", "yaml", "--dest", "docker",
            "--dest-tls-verify=false", "--preserve-digests", str(config),
            f"{dst.host}/{prefix}"]


def skopeo_config(src: RegistryServer, repos: int, path: Path) -> None:
    lines = [f"{src.host}:", "  tls-verify: false", "  images:"]
    lines += [f"    {PREFIX}/svc-{r:02d}: []" for r in range(repos)]  # []: every tag
    path.write_text("\n".join(lines) + "\n")


def curl_floor(src: RegistryServer, dst: RegistryServer, repos: int, tags: int,
               path: Path) -> list[str]:
    """curl HEADing every source tag and its mirror tag: a warm run's requests alone."""
    accept = ", ".join(("application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.oci.image.index.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json"))
    lines = []
    for r in range(repos):
        for tag in TAGS[:tags]:
            for url in (f"http://{src.host}/v2/{PREFIX}/svc-{r:02d}/manifests/{tag}",
                        f"http://{dst.host}/v2/warm-occystrap/{PREFIX}/svc-{r:02d}/manifests/{tag}"):
                lines += [f'url = "{url}"', "output = /dev/null"]
    path.write_text("\n".join(lines) + "\n")
    return ["curl", "--silent", "--fail", "--head", "--parallel", "--parallel-max", "16",
            "--header", f"Accept: {accept}", "--config", str(path)]


def uploads(served: list[str]) -> int:
    """The most times one blob was uploaded (monolithic or chunked, by its digest)."""
    counts = Counter(m.group(1) for r in served
                     if (m := re.search(r"^PUT /v2/.*/blobs/uploads/.*digest=(sha256(?::|%3A)"
                                        r"[0-9a-f]{64})", r)))
    return max(counts.values(), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument("--tags", type=int, default=10, choices=range(1, len(TAGS) + 1))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base-mib", type=int, default=8)
    args = parser.parse_args()
    measure.prepare("skopeo", "docker-registry", "curl")

    work = Path(tempfile.mkdtemp(prefix="occystrap-sync-bench-"))
    src = start_registry("plain", work / "src", access_log=True)
    dst = start_registry("plain", work / "dst", access_log=True)
    config = work / "skopeo.yaml"
    skopeo_config(src, args.repos, config)
    results: dict[tuple[str, str], Sample] = {}
    total = args.repos * args.tags

    def record(case: str, tool: str, cmd: list[str]) -> None:
        if tool == "skopeo":
            SKOPEO_CACHE.unlink(missing_ok=True)
        before_src, before_dst = len(src.requests()), len(dst.requests())
        registries = [measure.process_cpu(r.process.pid) for r in (src, dst)]
        measured = measure.run(cmd)
        time.sleep(0.2)  # let the access logs flush
        registries_cpu = sum(measure.process_cpu(r.process.pid) for r in (src, dst)) \
            - sum(registries)
        served_dst = dst.requests()[before_dst:]
        sample = results.setdefault((case, tool), Sample())
        sample.seconds.append(measured.seconds)
        sample.cpu.append(measured.cpu)
        sample.registries_cpu.append(registries_cpu)
        sample.requests.append(len(src.requests()) - before_src + len(served_dst))
        if case == "cold":
            sample.uploads.append(uploads(served_dst))

    try:
        print(f"pushing {total} images...", file=sys.stderr)
        seed(src, args.repos, args.tags, args.base_mib)
        for tool in ("occystrap", "skopeo"):  # the warm prefixes, in step before timing
            cmd = occystrap(src, dst, "warm-occystrap") if tool == "occystrap" else \
                skopeo(src, dst, "warm-skopeo", config)
            subprocess.run(cmd, capture_output=True, check=True)
        for i in range(args.runs):
            for tool in (("occystrap", "skopeo", "curl") if i % 2 == 0
                         else ("curl", "skopeo", "occystrap")):
                print(f"run {i + 1}: {tool}", file=sys.stderr)
                if tool == "curl":
                    record("warm", tool, curl_floor(src, dst, args.repos, args.tags,
                                                    work / "curl.conf"))
                elif tool == "occystrap":
                    record("cold", tool, occystrap(src, dst, f"cold{i}-occystrap"))
                    record("warm", tool, occystrap(src, dst, "warm-occystrap"))
                else:
                    record("cold", tool, skopeo(src, dst, f"cold{i}-skopeo", config))
                    record("warm", tool, skopeo(src, dst, "warm-skopeo", config))
    finally:
        src.stop()
        dst.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.repos} repositories x {args.tags} tags = {total} images "
          f"({args.base_mib} MiB shared base layer, 64 KiB own layer), {args.runs} "
          f"alternating runs, medians; {os.cpu_count()} CPUs; plain HTTP")
    header = (f"{'case':<5} {'occystrap':>10} {'skopeo':>8} {'ratio':>6} "
              f"{'CPU o/s (+registries)':>25} {'requests o/s':>14} {'req/tag o/s':>12} "
              f"{'max uploads/blob o/s':>21}")
    print(header)
    print("-" * len(header))
    for case in ("cold", "warm"):
        o, s = results[(case, "occystrap")], results[(case, "skopeo")]
        om, sm = statistics.median(o.seconds), statistics.median(s.seconds)
        oreq, sreq = statistics.median(o.requests), statistics.median(s.requests)
        ups = f"{max(o.uploads)}/{max(s.uploads)}" if o.uploads else ""
        cpu = (f"{statistics.median(o.cpu):.2f}/{statistics.median(s.cpu):.2f}s "
               f"(+{statistics.median(o.registries_cpu):.2f}/"
               f"{statistics.median(s.registries_cpu):.2f})")
        print(f"{case:<5} {om:9.2f}s {sm:7.2f}s {om / sm:5.2f}x {cpu:>25} "
              f"{oreq:>6.0f}/{sreq:<7.0f} "
              f"{oreq / total:>5.1f}/{sreq / total:<6.1f} {ups:>21}")
    floor = results[("warm", "curl")]
    fm = statistics.median(floor.seconds)
    print(f"\nwarm floor: curl sending only the 2 HEADs per tag: {fm:.2f} s "
          f"({fm / statistics.median(results[('warm', 'skopeo')].seconds):.2f}x skopeo), "
          f"{statistics.median(floor.requests):.0f} requests, CPU "
          f"{statistics.median(floor.cpu):.2f} s (+{statistics.median(floor.registries_cpu):.2f}"
          f" s of the registries')")


if __name__ == "__main__":
    main()
