"""occystrap against skopeo on the real CNCF registry, side by side, from one run.

Starts two registries on 127.0.0.1 (source and destination, so a copy really moves
bytes), builds a multi-layer image of random and of text-like contents, and times for
each: pull to a docker archive, push from one, registry to registry copy, and a warm
no-op copy (counting the HTTP requests both registries saw). Runs alternate between
the tools; the table shows medians and peak RSS. Push and copy runs go to a fresh
repository each time and skopeo's blob-info cache is removed first, so neither tool
gets a free cross-repository mount. curl fetching the same blobs ("curl") and curl
uploading them to the destination ("c-up") are the yardsticks for the copy; a second
table splits each copy's CPU time between the tool and the two registries.

    python3 bench/registry_bench.py [--size-mib 512] [--layers 8] [--runs 3] [--tls|--token]

``--tls`` runs both registries with TLS (HTTP/2 offered), as real registries are;
``--token`` adds Bearer-token auth to that (the fixtures' token server, over TLS),
as Docker Hub, GHCR and Quay ask for: every tool logs in, curl with a token fetched
beforehand.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import measure  # bench/, next to this script

from occystrap_core.testing.registry import Mode, RegistryServer, start_registry

SKOPEO_CACHE = Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb")
CASES = {"pull": "pull to tar", "push": "push from tar", "copy": "registry to registry",
         "warm": "warm no-op copy"}
WORDS = ("the quick brown fox jumps over lazy dog container image layer registry "
         "manifest digest blob config stream compress python http client server "
         "usr lib share doc bin etc var log cache file directory").split()


@dataclass
class Sample:
    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    cpu: list[tuple[float, float, float]] = field(default_factory=list)  # tool, src, dst


def registry_cpu(server: RegistryServer) -> float:
    return measure.process_cpu(server.process.pid)


def run(cmd: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) and CPU seconds of one command; fails loudly."""
    measured = measure.run(cmd)
    return measured.seconds, measured.rss_kib, measured.cpu


def text_like(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    block = io.StringIO()
    while block.tell() < 4 * 1024 * 1024:  # a 4 MiB block of pseudo-text, varied per repeat
        block.write(" ".join(rng.choices(WORDS, k=12)) + f" {rng.randrange(10**9)}\n")
    base = block.getvalue().encode()
    out = bytearray()
    while len(out) < size:
        out += base[rng.randrange(1024):] + f"\n# chunk {len(out)}\n".encode()
    return bytes(out[:size])


def build_archive(path: Path, kind: str, size_mib: int, layers: int) -> None:
    """A docker-save archive of ``layers`` layers holding one file each."""
    per_layer = size_mib * 1024 * 1024 // layers
    diff_ids = []
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for i in range(layers):
            content = os.urandom(per_layer) if kind == "random" else text_like(per_layer, i)
            layer = io.BytesIO()
            with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
                info = tarfile.TarInfo(f"data/{kind}-{i}.bin")
                info.size, info.mtime = len(content), 1700000000
                tar.addfile(info, io.BytesIO(content))
            data = layer.getvalue()
            digest = hashlib.sha256(data).hexdigest()
            diff_ids.append(f"sha256:{digest}")
            info = tarfile.TarInfo(f"{digest}/layer.tar")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": diff_ids},
                             "config": {"Cmd": ["/bin/true"]}}).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        manifest = json.dumps([{"Config": config_name, "RepoTags": [f"bench/{kind}:v1"],
                                "Layers": [f"{d[7:]}/layer.tar" for d in diff_ids]}]).encode()
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@dataclass
class Tools:
    """Command lines for both registries, over plain HTTP or trusting their CAs."""

    src: RegistryServer
    dst: RegistryServer
    ca_bundle: str | None  # both registries' CAs, for TLS
    cert_dir: str | None  # the same, as skopeo wants them

    @property
    def creds(self) -> tuple[str, str] | None:
        """The token mode's user (the same on both registries), or None."""
        if self.src.username is None:
            return None
        return self.src.username, self.src.password or ""

    def occystrap(self, *args: str) -> list[str]:
        trust = ["--ca-cert", self.ca_bundle] if self.ca_bundle else ["--insecure"]
        if self.creds:
            trust += ["--username", self.creds[0], "--password", self.creds[1]]
        return [sys.executable, "-m", "occystrap_core", *trust, *args]

    def skopeo(self, *args: str) -> list[str]:
        if self.ca_bundle:
            trust = [f"--src-cert-dir={self.cert_dir}", f"--dest-cert-dir={self.cert_dir}"]
        else:
            trust = ["--src-tls-verify=false", "--dest-tls-verify=false"]
        if self.creds:
            login = ":".join(self.creds)
            trust += [f"--src-creds={login}", f"--dest-creds={login}"]
        return ["skopeo", "--insecure-policy", "copy", *trust, *args]

    def curl(self, server: RegistryServer, scope: str) -> list[str]:
        trust = ["--cacert", self.ca_bundle] if self.ca_bundle else []
        token = bearer(server, scope)
        if token:
            trust += ["-H", f"Authorization: Bearer {token}"]
        return ["curl", "-sf", *trust, "--parallel", "--parallel-max", "4"]

    @staticmethod
    def http(server: RegistryServer, scope: str) -> httpx.Client:
        token = bearer(server, scope)
        return httpx.Client(verify=server.ssl_context() or False, trust_env=False,
                            headers={"Authorization": f"Bearer {token}"} if token else {})


def bearer(server: RegistryServer, scope: str) -> str | None:
    """A token for ``scope`` from the registry's token server (None without token auth),
    fetched as the distribution spec's token flow says."""
    if server.token_server is None:
        return None
    verify = server.ssl_context() or False
    challenge = httpx.get(f"{server.url}/v2/", verify=verify).headers["www-authenticate"]
    params = dict(part.split("=", 1) for part in challenge[len("Bearer "):].split(","))
    realm, service = (params[k].strip('"') for k in ("realm", "service"))
    answer = httpx.get(realm, params={"service": service, "scope": scope}, verify=verify,
                       auth=(server.username or "", server.password or ""))
    answer.raise_for_status()
    body = answer.json()
    return str(body.get("token") or body["access_token"])


def _blob_digests(tools: Tools, repo: str, tag: str) -> list[str]:
    with tools.http(tools.src, f"repository:{repo}:pull") as http:
        manifest = http.get(f"{tools.src.url}/v2/{repo}/manifests/{tag}", headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"}).json()
    return [manifest["config"]["digest"]] + [l["digest"] for l in manifest["layers"]]


def curl_fetch(tools: Tools, repo: str, tag: str) -> list[str]:
    """curl downloading every blob of ``repo:tag``, 4 at a time, to /dev/null."""
    cmd = tools.curl(tools.src, f"repository:{repo}:pull")
    for d in _blob_digests(tools, repo, tag):
        cmd += ["-o", "/dev/null", f"{tools.src.url}/v2/{repo}/blobs/{d}"]
    return cmd


def curl_upload(tools: Tools, repo: str, tag: str, work: Path, target: str) -> list[str]:
    """curl uploading the same blobs (downloaded beforehand) to the destination, 4 at a
    time: how fast the destination registry can take them in."""
    push = f"repository:{target}:pull,push"
    cmd = tools.curl(tools.dst, push)
    with tools.http(tools.src, f"repository:{repo}:pull") as src, \
            tools.http(tools.dst, push) as dst:
        for d in _blob_digests(tools, repo, tag):
            path = work / d.replace(":", "-")
            if not path.exists():
                path.write_bytes(src.get(f"{tools.src.url}/v2/{repo}/blobs/{d}").content)
            location = dst.post(f"{tools.dst.url}/v2/{target}/blobs/uploads/").headers["location"]
            cmd += ["-o", "/dev/null", "-T", str(path), f"{location}&digest={d}"]  # -T: PUT
    return cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kinds", default="random,text")
    parser.add_argument("--cases", default="pull,push,copy,warm",
                        help="which of pull, push, copy, warm to run")
    parser.add_argument("--tls", action="store_true", help="registries with TLS (and HTTP/2)")
    parser.add_argument("--token", action="store_true",
                        help="registries with TLS and Bearer-token auth")
    args = parser.parse_args()
    cases = [c for c in CASES if c in args.cases.split(",")]
    measure.prepare("skopeo", "curl", "docker-registry")

    work = Path(tempfile.mkdtemp(prefix="occystrap-bench-"))
    mode: Mode = "token" if args.token else "tls" if args.tls else "plain"
    src = start_registry(mode, work / "src-registry", access_log=True)
    dst = start_registry(mode, work / "dst-registry", access_log=True)
    bundle = certs = None
    if mode != "plain":
        cas = [Path(s.ca_cert or "").read_text() for s in (src, dst)]
        bundle, certs = work / "ca-bundle.pem", work / "certs"
        bundle.write_text("".join(cas))
        certs.mkdir()
        for i, ca in enumerate(cas):
            (certs / f"ca{i}.crt").write_text(ca)
    tools = Tools(src, dst, str(bundle) if bundle else None, str(certs) if certs else None)
    occystrap, skopeo = tools.occystrap, tools.skopeo
    results: dict[tuple[str, str, str], Sample] = {}
    counter = 0

    def record(kind: str, case: str, tool: str, cmd: list[str], count: bool = False) -> None:
        if tool == "skopeo":
            SKOPEO_CACHE.unlink(missing_ok=True)
        before = len(src.requests()) + len(dst.requests()) if count else 0
        src_cpu, dst_cpu = registry_cpu(src), registry_cpu(dst)
        seconds, rss, cpu = run(cmd)
        sample = results.setdefault((kind, case, tool), Sample())
        sample.seconds.append(seconds)
        sample.rss_kib.append(rss)
        sample.cpu.append((cpu, registry_cpu(src) - src_cpu, registry_cpu(dst) - dst_cpu))
        if count:
            time.sleep(0.2)  # let the access logs flush
            sample.requests.append(len(src.requests()) + len(dst.requests()) - before)

    try:
        for kind in args.kinds.split(","):
            archive = work / f"{kind}.tar"
            print(f"building {args.size_mib} MiB {kind} image of {args.layers} layers...",
                  file=sys.stderr)
            build_archive(archive, kind, args.size_mib, args.layers)
            source = f"{src.host}/src/{kind}:v1"
            run(skopeo(f"docker-archive:{archive}", f"docker://{source}"))
            warm = f"{dst.host}/warm/{kind}:v1"
            run(occystrap("process", f"registry://{source}", f"registry://{warm}"))
            for i in range(args.runs):
                for tool in (("occystrap", "skopeo") if i % 2 == 0 else ("skopeo", "occystrap")):
                    counter += 1
                    out = work / f"out-{counter}.tar"
                    fresh = f"{dst.host}/run{counter}/{kind}:v1"
                    copy_dest = fresh.replace("/run", "/copy")
                    if tool == "occystrap":
                        commands = {
                            "pull": occystrap("process", f"registry://{source}", f"tar://{out}"),
                            "push": occystrap("process", f"tar://{archive}", f"registry://{fresh}"),
                            "copy": occystrap("process", f"registry://{source}",
                                              f"registry://{copy_dest}"),
                            "warm": occystrap("process", f"registry://{source}", f"registry://{warm}"),
                        }
                    else:
                        commands = {
                            "pull": skopeo(f"docker://{source}",
                                           f"docker-archive:{out}:bench/x:v1"),
                            "push": skopeo(f"docker-archive:{archive}", f"docker://{fresh}"),
                            "copy": skopeo(f"docker://{source}", f"docker://{copy_dest}"),
                            "warm": skopeo(f"docker://{source}", f"docker://{warm}"),
                        }
                    for case in cases:
                        record(kind, CASES[case], tool, commands[case], count=case == "warm")
                    out.unlink(missing_ok=True)
                if "copy" in cases:
                    record(kind, CASES["copy"], "curl", curl_fetch(tools, f"src/{kind}", "v1"))
                    record(kind, CASES["copy"], "curl-up",
                            curl_upload(tools, f"src/{kind}", "v1", work, f"curl{counter}/{kind}"))
    finally:
        src.stop()
        dst.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.size_mib} MiB image, {args.layers} layers, {args.runs} alternating runs, "
          f"medians; {os.cpu_count()} CPUs; registries over "
          f"{'TLS with token auth' if args.token else 'TLS' if args.tls else 'plain HTTP'}")
    header = (f"{'image':<7} {'case':<21} {'occystrap':>10} {'skopeo':>8} {'ratio':>6} "
              f"{'curl':>6} {'c-up':>6} {'occy RSS':>9} {'skopeo RSS':>10} {'requests o/s':>13}")
    print(header)
    print("-" * len(header))
    for kind in args.kinds.split(","):
        for case in (CASES[c] for c in cases):
            o, s = results[(kind, case, "occystrap")], results[(kind, case, "skopeo")]
            om, sm = statistics.median(o.seconds), statistics.median(s.seconds)
            yardsticks = " ".join(
                f"{statistics.median(results[(kind, case, t)].seconds):6.2f}"
                if (kind, case, t) in results else f"{'':>6}" for t in ("curl", "curl-up"))
            reqs = (f"{max(o.requests)}/{max(s.requests)}" if o.requests else "")
            print(f"{kind:<7} {case:<21} {om:9.2f}s {sm:7.2f}s {om / sm:5.2f}x {yardsticks} "
                  f"{max(o.rss_kib) // 1024:>6} MiB {max(s.rss_kib) // 1024:>6} MiB {reqs:>13}")
    if "copy" in cases:
        print(f"\nregistry to registry, CPU seconds (medians) on {os.cpu_count()} CPUs: the "
              f"destination registry's share bounds any copy from below")
        header = (f"{'image':<7} {'tool':<10} {'wall':>6} {'tool CPU':>9} {'src reg':>8} "
                  f"{'dst reg':>8}")
        print(header)
        print("-" * len(header))
        for kind in args.kinds.split(","):
            for tool in ("occystrap", "skopeo", "curl", "curl-up"):
                sample = results[(kind, CASES["copy"], tool)]
                tool_cpu, src_cpu, dst_cpu = (statistics.median(c[i] for c in sample.cpu)
                                              for i in range(3))
                print(f"{kind:<7} {tool:<10} {statistics.median(sample.seconds):5.2f}s "
                      f"{tool_cpu:8.2f}s {src_cpu:7.2f}s {dst_cpu:7.2f}s")


if __name__ == "__main__":
    main()
