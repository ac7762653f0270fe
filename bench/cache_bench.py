"""The layer cache: a filtered push, cold and then warm to a new repository.

Starts the real CNCF registry on 127.0.0.1 (with its access log), builds an image
of ``--size-mib`` MiB in ``--layers`` layers (random data, which does not compress,
and some text; every file with a non-zero mtime, so normalize-timestamps rewrites
every layer), generated deterministically, and pushes it with skopeo to
``src/cache:v1``. Then::

    occystrap --layer-cache C process registry://R/src/cache:v1 registry://R/cold/cache:v1 \\
        -f normalize-timestamps                      # cold: download, rewrite, gzip, upload
    occystrap --layer-cache C process registry://R/src/cache:v1 registry://R/warm/cache:v1 \\
        -f normalize-timestamps                      # warm: a new repository, same registry

each round with a fresh cache and fresh repositories, and ``--warm-runs`` warm
copies per round, each to a new repository (a warm copy takes a tenth of a second,
so a few more of them steady its median at little cost; the cold copies stay one a
round). It prints the medians of
wall time and peak RSS of both, the warm/cold ratio, the blob GETs the warm runs
made on the source repository (from the registry's access log), and, for scale,
the startup floor: ``occystrap --version``, which loads the plugins and nothing else.
Targets: warm <= 5% of cold, 0 source blob GETs.

    python3 bench/cache_bench.py [--size-mib 512] [--layers 8] [--runs 3] [--warm-runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import measure  # bench/, next to this script

from occystrap_core.testing.registry import RegistryServer, start_registry

WORDS = ("layer cache filter digest manifest registry blob config compress stream usr lib "
         "share doc bin etc var log file directory python container image").split()
MTIME = 1_700_000_000
TARGET_RATIO = 0.05

def run(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) and stderr of one command; fails loudly."""
    measured = measure.run(cmd)
    return measured.seconds, measured.rss_kib, measured.stderr


def text(size: int, rng: random.Random) -> bytes:
    line_count = size // 60 + 1
    lines = (" ".join(rng.choices(WORDS, k=8)) + f" {rng.randrange(10**6)}\n"
             for _ in range(line_count))
    return "".join(lines).encode()[:size]


def build_archive(path: Path, size_mib: int, layers: int) -> None:
    """A docker-save archive: each layer a random file (7/8) and a text file (1/8)."""
    rng = random.Random(20240101)
    per_layer = size_mib * 1024 * 1024 // layers
    diff_ids = []
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for i in range(layers):
            layer = io.BytesIO()
            with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name, content in ((f"data/random-{i}.bin", rng.randbytes(per_layer * 7 // 8)),
                                      (f"doc/text-{i}.txt", text(per_layer // 8, rng))):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(content), MTIME + i
                    tar.addfile(info, io.BytesIO(content))
            data = layer.getvalue()
            digest = hashlib.sha256(data).hexdigest()
            diff_ids.append(f"sha256:{digest}")
            info = tarfile.TarInfo(f"{digest}/layer.tar")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "created": "2024-01-01T00:00:00Z",
                             "rootfs": {"type": "layers", "diff_ids": diff_ids},
                             "config": {"Cmd": ["/bin/true"]}}).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        manifest = json.dumps([{"Config": config_name, "RepoTags": ["bench/cache:v1"],
                                "Layers": [f"{d[7:]}/layer.tar" for d in diff_ids]}]).encode()
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def source_blob_gets(server: RegistryServer, repo: str, since: int) -> int:
    time.sleep(0.2)  # let the access log flush
    return sum(1 for r in server.requests()[since:] if r.startswith(f"GET /v2/{repo}/blobs/"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warm-runs", type=int, default=3, help="warm copies per round")
    args = parser.parse_args()
    measure.prepare("skopeo", "docker-registry")

    work = Path(tempfile.mkdtemp(prefix="occystrap-cache-bench-"))
    server = start_registry("plain", work / "registry", access_log=True)
    try:
        archive = work / "image.tar"
        print(f"building a {args.size_mib} MiB image of {args.layers} layers...", file=sys.stderr)
        build_archive(archive, args.size_mib, args.layers)
        source = f"{server.host}/src/cache:v1"
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                        f"docker-archive:{archive}", f"docker://{source}"],
                       check=True, capture_output=True)
        archive.unlink()

        def occystrap(cache: str, dest: str) -> list[str]:
            return [sys.executable, "-m", "occystrap_core", "--insecure", "--layer-cache",
                    str(work / cache), "process", f"registry://{source}",
                    f"registry://{server.host}/{dest}", "-f", "normalize-timestamps"]

        cold: list[tuple[float, int]] = []
        warm: list[tuple[float, int]] = []
        gets, digests = 0, set()
        for i in range(args.runs):
            seconds, rss, err = run(occystrap(f"cache{i}", f"cold{i}/cache:v1"))
            cold.append((seconds, rss))
            digests |= {l.rsplit("(", 1)[1].rstrip(")") for l in err.splitlines()
                        if l.startswith("Wrote ")}
            for j in range(args.warm_runs):
                before = len(server.requests())
                seconds, rss, err = run(occystrap(f"cache{i}", f"warm{i}-{j}/cache:v1"))
                warm.append((seconds, rss))
                gets += source_blob_gets(server, "src/cache", before)
                digests |= {l.rsplit("(", 1)[1].rstrip(")") for l in err.splitlines()
                            if l.startswith("Wrote ")}
        floor = statistics.median(run([sys.executable, "-m", "occystrap_core", "--version"])[0]
                                  for _ in range(args.runs))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    cold_s, warm_s = (statistics.median(s for s, _ in runs) for runs in (cold, warm))
    ratio = warm_s / cold_s
    print(f"\n{args.size_mib} MiB image, {args.layers} layers, -f normalize-timestamps, "
          f"registry over plain HTTP; medians of {args.runs} rounds, "
          f"{args.warm_runs} warm copies each")
    for label, runs, median in (("cold (empty cache)       ", cold, cold_s),
                                ("warm (new repository)    ", warm, warm_s)):
        print(f"{label} {median:7.3f} s   peak RSS {max(r for _, r in runs) // 1024:4d} MiB"
              f"   (runs {min(s for s, _ in runs):.3f}-{max(s for s, _ in runs):.3f} s)")
    print(f"warm / cold               {ratio:7.2%}    (target <= {TARGET_RATIO:.0%})")
    print(f"source blob GETs (warm)   {gets:7d}     (target 0)")
    print(f"startup floor (--version) {floor:7.2f} s")
    print(f"same manifest every run   {'yes' if len(digests) == 1 else 'NO'} "
          f"({', '.join(sorted(digests))})")
    if ratio > TARGET_RATIO or gets or len(digests) != 1:
        sys.exit(1)


if __name__ == "__main__":
    main()
