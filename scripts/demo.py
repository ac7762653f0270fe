"""The main job on an embedded default: no network and no external registry needed.

Builds a small sample image and starts a throwaway CNCF registry on 127.0.0.1, then
moves the image around with the real `occystrap` command: docker-save archive -> OCI
image layout -> archive -> registry -> registry (a byte-for-byte mirror) -> archive,
and prints what it holds. Each step checks that the image's digests survived.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from occystrap_core.testing.images import build_docker_archive
from occystrap_core.testing.registry import start_registry


def occystrap(*args: str) -> str:
    print(f"$ occystrap {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "occystrap_core", *args],
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        sys.exit(f"demo failed: occystrap {' '.join(args)} exited {proc.returncode}")
    return proc.stdout


def info(uri: str) -> dict:
    return json.loads(occystrap("info", "-O", "json", uri))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="occystrap-demo-") as tmp:
        work = Path(tmp)
        sample = build_docker_archive(str(work / "sample.tar"), name="example.com/demo/app",
                                      tag="v1", n_layers=3, layer_size=256 * 1024)
        print(f"Built {sample['reference']} with 3 layers in {work / 'sample.tar'}")

        occystrap("process", f"tar://{work / 'sample.tar'}", f"oci-layout://{work / 'layout'}")
        occystrap("process", f"oci-layout://{work / 'layout'}?ref=v1", f"tar://{work / 'copy.tar'}")
        print(occystrap("info", f"tar://{work / 'copy.tar'}"))

        copied = info(f"tar://{work / 'copy.tar'}")
        assert copied["config_digest"] == sample["config_digest"], "config changed"
        assert [l["diff_id"] for l in copied["layers"]] == sample["diff_ids"], "layers changed"
        print("OK: the image survived tar -> OCI layout -> tar with identical digests\n")

        registry = start_registry("plain", work / "registry")
        try:
            print(f"Started a local registry at {registry.host}")
            pushed, mirror = f"{registry.host}/demo/app:v1", f"{registry.host}/mirror/app:v1"
            occystrap("--insecure", "process", f"tar://{work / 'copy.tar'}", f"registry://{pushed}")
            occystrap("--insecure", "process", f"registry://{pushed}", f"registry://{mirror}")
            occystrap("--insecure", "process", f"registry://{pushed}", f"registry://{mirror}")
            occystrap("--insecure", "process", f"registry://{mirror}",
                      f"tar://{work / 'pulled.tar'}")
            source = json.loads(occystrap("--insecure", "info", "-O", "json", f"registry://{pushed}"))
            copy = json.loads(occystrap("--insecure", "info", "-O", "json", f"registry://{mirror}"))
            pulled = info(f"tar://{work / 'pulled.tar'}")
        finally:
            registry.stop()
        assert copy["manifest_digest"] == source["manifest_digest"], "the mirror is not exact"
        assert pulled["config_digest"] == sample["config_digest"], "config changed"
        assert [l["diff_id"] for l in pulled["layers"]] == sample["diff_ids"], "layers changed"
        print(f"OK: pushed, mirrored ({copy['manifest_digest']} on both sides) and pulled back "
              "with identical digests")

if __name__ == "__main__":
    main()
