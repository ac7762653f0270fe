"""A warm sync over a 50 ms link: HTTP/2 against HTTP/1.1, and skopeo sync for reference.

Starts two TLS registries on 127.0.0.1 (source and mirror; both offer h2 and http/1.1),
pushes ``--repos`` x ``--tags`` images and brings two mirror prefixes in step (one for
each tool) directly. Then each registry gets a :class:`Link` in front of it, a TCP relay
that delivers everything the registry sends ``--delay`` seconds late, and starts relaying
a new connection ``--delay`` seconds after accepting it (a new connection costs two round
trips, TCP's and TLS 1.3's, before its first request, as on a real link), and, alternating,
a warm sync through the links is timed: occystrap with HTTP/2 (its default over TLS),
occystrap with HTTP/1.1 forced (``OCCYSTRAP_HTTP2=0``), and skopeo sync from a ``--src
yaml`` file. For each: wall and CPU time, the requests the registries served, the
protocol, and the connections opened through the links.

The relay only copies bytes, so its own cost does not blur the figures (a Python HTTP
front such as ``occystrap_core.testing.faults.FaultFront``, whose ``delay`` the tests
use, costs milliseconds of CPU per request and becomes the bottleneck on two CPUs).

    python3 bench/latency_bench.py [--repos 10] [--tags 10] [--delay 0.05] [--runs 1]

Target: 100 tags in <= 3 s with HTTP/2, at <= 2 requests per unchanged tag (+ listing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import measure  # bench/, next to this script
import sync_bench

from occystrap_core.testing.registry import RegistryServer, start_registry

PREFIX = sync_bench.PREFIX
ACCESS = re.compile(r'"([A-Z]+) (/[^ "]*) (HTTP/[0-9.]+)"')


class Link:
    """A TCP relay on 127.0.0.1 to ``upstream`` (HOST:PORT) that delivers what the
    upstream sends ``delay`` seconds late, in order, and what the client sends at once,
    once the connection is ``delay`` seconds old (TCP's handshake). Counts the
    connections it accepted."""

    def __init__(self, upstream: str, delay: float):
        self.upstream_host, _, port = upstream.rpartition(":")
        self.upstream_port, self.delay = int(port), delay
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),),
                         daemon=True, name="link").start()
        self._ready.wait(10)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            with contextlib.suppress(asyncio.CancelledError):  # stop()
                await server.serve_forever()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        await asyncio.sleep(self.delay)  # the SYN-ACK's round trip
        up_r, up_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        late: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:  # client -> upstream, at once
            while data := await client_r.read(65536):
                up_w.write(data)
                await up_w.drain()
            up_w.close()

        async def receive() -> None:  # upstream -> queue, stamped with its delivery time
            while data := await up_r.read(65536):
                late.put_nowait((time.monotonic() + self.delay, data))
            late.put_nowait((time.monotonic() + self.delay, b""))

        async def deliver() -> None:  # queue -> client, each chunk when it is due
            while True:
                due, data = await late.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not data:
                    break
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        tasks = [asyncio.ensure_future(t()) for t in (forward, receive, deliver)]
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks()])


@dataclass
class Sample:
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)


def occystrap(src: str, dst: str, prefix: str, ca: Path) -> list[str]:
    return [sys.executable, "-m", "occystrap_core", "--ca-cert", str(ca), "--no-verify",
            "sync", f"registry://{src}/{PREFIX}/*:*",
            f"registry://{dst}/{prefix}/{{repo}}:{{tag}}"]


def skopeo(src: str, src_certs: str, repos: int, dst: str, dst_certs: str, prefix: str,
           config: Path) -> list[str]:
    lines = [f"{src}:", f"  cert-dir: {src_certs}", "  images:",
             *(f"    {PREFIX}/svc-{r:02d}: []" for r in range(repos))]
    config.write_text("\n".join(lines) + "\n")
    return ["skopeo", "--insecure-policy", "sync", "--src", "yaml", "--dest", "docker",
            f"--dest-cert-dir={dst_certs}", "--preserve-digests", str(config),
            f"{dst}/{prefix}"]


def served(servers: list[RegistryServer]) -> list[list[tuple[str, str, str]]]:
    """Each server's requests so far: (method, path, protocol)."""
    return [ACCESS.findall(s.log) for s in servers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=10)
    parser.add_argument("--tags", type=int, default=10,
                        choices=range(1, len(sync_bench.TAGS) + 1))
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    measure.prepare("skopeo", "docker-registry")

    work = Path(tempfile.mkdtemp(prefix="occystrap-latency-bench-"))
    servers: list[RegistryServer] = []
    links: list[Link] = []
    total = args.repos * args.tags
    results: dict[str, Sample] = {}
    try:
        for name in ("src", "dst"):
            servers.append(start_registry("plain", work / name, tls=True, access_log=True))
        src, dst = servers
        assert src.ca_cert and dst.ca_cert and src.cert_dir and dst.cert_dir
        ca = work / "ca.pem"
        ca.write_text(Path(src.ca_cert).read_text() + Path(dst.ca_cert).read_text())
        print(f"pushing {total} images...", file=sys.stderr)
        sync_bench.seed(src, args.repos, args.tags, 1)
        measure.run(occystrap(src.host, dst.host, "warm", ca))  # in step, directly
        measure.run(skopeo(src.host, src.cert_dir, args.repos, dst.host, dst.cert_dir,
                           "warm-skopeo", work / "direct.yaml"))
        links = [Link(s.host, args.delay) for s in servers]
        lsrc, ldst = links
        cases = {
            "occystrap HTTP/2": (occystrap(lsrc.host, ldst.host, "warm", ca), {}),
            "occystrap HTTP/1.1": (occystrap(lsrc.host, ldst.host, "warm", ca),
                                   {"OCCYSTRAP_HTTP2": "0"}),
            "skopeo sync": (skopeo(lsrc.host, src.cert_dir, args.repos, ldst.host,
                                   dst.cert_dir, "warm-skopeo", work / "linked.yaml"), {}),
        }
        for i in range(args.runs):
            for name in (list(cases) if i % 2 == 0 else list(reversed(cases))):
                cmd, env = cases[name]
                print(f"run {i + 1}: {name}", file=sys.stderr)
                sync_bench.SKOPEO_CACHE.unlink(missing_ok=True)
                before = [len(log) for log in served(servers)]
                opened = sum(link.connections for link in links)
                measured = measure.run(cmd, env={**os.environ, **env})
                time.sleep(0.2)  # let the access logs flush
                hits = [h for log, n in zip(served(servers), before, strict=True)
                        for h in log[n:]]
                sample = results.setdefault(name, Sample())
                sample.seconds.append(measured.seconds)
                sample.cpu.append(measured.cpu)
                sample.requests.append(len(hits))
                sample.connections.append(sum(link.connections for link in links) - opened)
                sample.versions |= {version for _, _, version in hits}
    finally:
        for link in links:
            link.stop()
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nwarm sync of {args.repos} repositories x {args.tags} tags = {total} images, "
          f"TLS registries behind links delaying every answer {args.delay * 1000:.0f} ms, "
          f"{args.runs} run(s), medians; {os.cpu_count()} CPUs")
    header = (f"{'tool':<20} {'wall':>7} {'CPU':>6} {'requests':>9} {'req/tag':>8} "
              f"{'connections':>12}  protocol")
    print(header)
    print("-" * len(header))
    for name, s in results.items():
        requests = statistics.median(s.requests)
        print(f"{name:<20} {statistics.median(s.seconds):6.2f}s "
              f"{statistics.median(s.cpu):5.2f}s {requests:>9.0f} {requests / total:>8.2f} "
              f"{statistics.median(s.connections):>12.0f}  {', '.join(sorted(s.versions))}")


if __name__ == "__main__":
    main()
