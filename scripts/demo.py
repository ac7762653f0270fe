"""The main job on an embedded default: no network and no external registry needed.

Builds a small sample image, then moves it around with the real `occystrap` command:
docker-save archive -> OCI image layout -> archive, and prints what it holds. Each step
checks that the image's digests survived.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from occystrap_core.testing.images import build_docker_archive


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
        print("OK: the image survived tar -> OCI layout -> tar with identical digests")


if __name__ == "__main__":
    main()
