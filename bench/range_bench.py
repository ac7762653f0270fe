"""One big layer under a per-connection cap, and a pull resumed after kill -9 (issue 18).

Starts the CNCF registry on 127.0.0.1 with a one-layer image of random bytes (stored
uncompressed, so the blob is ``--size-mib``), behind the fault front capping each
connection at ``--cap-mbps`` MB/s, as registries and CDNs do. Times a pull to a
docker archive by occystrap (parallel ranges), by occystrap over one connection
(``OCCYSTRAP_RANGE_CHUNK=0``) and by skopeo, alternating, and prints medians and the
ratio skopeo / occystrap. Then kills an occystrap pull with SIGKILL once half the
layer has arrived, runs it again and prints the bytes the second run fetched as a
share of the layer.

    python3 bench/range_bench.py [--size-mib 1024] [--cap-mbps 40] [--runs 1] [-j 4]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import measure  # bench/, next to this script

from occystrap_core.testing.faults import FaultFront
from occystrap_core.testing.registry import start_registry


def build_archive(path: Path, size_mib: int) -> None:
    """A docker-save archive of one layer holding one file of random bytes."""
    content_size = size_mib * 1024 * 1024 - 3 * 512  # the layer tar is ~size_mib
    layer_path = path.with_suffix(".layer")
    with tarfile.open(layer_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("data/big.bin")
        info.size, info.mtime = content_size, 1700000000
        with open("/dev/urandom", "rb") as random:
            tar.addfile(info, _Limited(random, content_size))
    digest = hashlib.sha256()
    with open(layer_path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    hex_digest = digest.hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hex_digest}"]},
                         "config": {"Cmd": ["/bin/true"]}}).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["bench/big:v1"],
                            "Layers": [f"{hex_digest}/layer.tar"]}]).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(layer_path, f"{hex_digest}/layer.tar")
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    layer_path.unlink()


class _Limited(io.RawIOBase):
    def __init__(self, raw: io.BufferedReader, size: int):
        self.raw, self.left = raw, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.raw.read(n)
        self.left -= len(data)
        return data


def layer_bytes(front: FaultFront, digest: str) -> int:
    return sum(h.sent for h in front.log if h.method == "GET" and h.path.endswith(digest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--cap-mbps", type=float, default=40.0, help="MB/s per connection")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("-j", "--parallel", type=int, default=4, help="occystrap -j")
    args = parser.parse_args()
    measure.prepare("skopeo", "docker-registry")

    work = Path(tempfile.mkdtemp(prefix="occystrap-range-bench-"))
    registry = start_registry("plain", work / "registry")
    front = FaultFront(registry.url, per_connection_bps=args.cap_mbps * 1e6)
    front.start()
    os.environ["OCCYSTRAP_PARTIAL_DIR"] = str(work / "partial")  # for every run below
    seconds: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    try:
        print(f"building a {args.size_mib} MiB one-layer image...", file=sys.stderr)
        archive = work / "big.tar"
        build_archive(archive, args.size_mib)
        source = f"{front.host}/bench/big:v1"
        subprocess.run([sys.executable, "-m", "occystrap_core", "--insecure", "--no-progress",
                        "process", f"tar://{archive}",
                        f"registry://{registry.host}/bench/big:v1?compression=none"],
                       check=True)
        archive.unlink()
        manifest = json.loads(subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{source}"],
            check=True, capture_output=True, text=True).stdout)
        layer = manifest["layers"][0]
        digest, size = layer["digest"], layer["size"]
        out = work / "out.tar"
        occystrap = [sys.executable, "-m", "occystrap_core", "--insecure", "--no-progress",
                     "-j", str(args.parallel), "process", f"registry://{source}", f"tar://{out}"]
        commands = {
            "occystrap": occystrap,
            "occystrap 1 conn": ["env", "OCCYSTRAP_RANGE_CHUNK=0", *occystrap],
            "skopeo": ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
                       f"docker://{source}", f"docker-archive:{out}:bench/x:v1"],
        }
        for i in range(args.runs):
            for tool in (commands if i % 2 == 0 else reversed(commands)):
                print(f"run {i + 1}: {tool}...", file=sys.stderr)
                measured = measure.run(commands[tool])
                seconds.setdefault(tool, []).append(measured.seconds)
                cpu.setdefault(tool, []).append(measured.cpu)
                out.unlink(missing_ok=True)

        print("kill -9 half-way, then a re-run...", file=sys.stderr)
        front.clear()
        killed = subprocess.Popen(occystrap, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while layer_bytes(front, digest) < size // 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        at_kill = layer_bytes(front, digest)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        front.clear()
        resumed = measure.run(occystrap)
        moved = layer_bytes(front, digest)
    finally:
        front.stop()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{size / 2**20:.0f} MiB layer, {args.cap_mbps:g} MB/s per connection, "
          f"occystrap -j {args.parallel}, {args.runs} alternating run(s), medians; "
          f"{os.cpu_count()} CPUs")
    base = statistics.median(seconds["skopeo"])
    print(f"{'tool':<18} {'wall':>8} {'CPU':>8} {'MB/s':>7} {'skopeo/tool':>12}")
    for tool in commands:
        wall = statistics.median(seconds[tool])
        print(f"{tool:<18} {wall:7.2f}s {statistics.median(cpu[tool]):7.2f}s "
              f"{size / wall / 1e6:7.1f} {base / wall:11.2f}x")
    print(f"\nkill -9 after {at_kill / size:.0%} of the layer had been sent; the re-run "
          f"fetched {moved / size:.1%} of it ({moved} of {size} bytes) in "
          f"{resumed.seconds:.2f}s")


if __name__ == "__main__":
    main()
