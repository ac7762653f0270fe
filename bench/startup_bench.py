"""Start-up cost in instructions executed, which a shared machine's noise does not move.

Wall times of a few hundred milliseconds move by a third from run to run on a busy
2-CPU machine, so start-up work is judged by the user-space instructions each command
executes (valgrind's cachegrind with its cache simulation off; about 30x slower than
a plain run), next to the median wall time of plain runs for scale:

- ``python3 -c pass``: the interpreter alone, the floor of any Python tool;
- ``occystrap --version``: the CLI and every plugin's entry module;
- a warm no-op copy between two repositories of the real CNCF registry on 127.0.0.1
  (plain HTTP): everything a run that talks HTTP loads, and two requests.

Each command runs once before it is measured, so the entry-point cache is current.

    python3 bench/startup_bench.py [--runs 5]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import measure  # bench/, next to this script

from occystrap_core.testing.registry import push_sample_image, start_registry

ROOT = Path(__file__).resolve().parent.parent


def instructions(cmd: list[str]) -> float:
    """Millions of user-space instructions ``cmd`` executes."""
    proc = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                           "--cachegrind-out-file=/dev/null", *cmd],
                          capture_output=True, text=True, cwd=ROOT)
    found = re.search(r"I\s+refs:\s+([\d,]+)", proc.stderr)
    if proc.returncode or not found:
        sys.exit(f"command failed under valgrind: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return int(found.group(1).replace(",", "")) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind; only this bench needs it)")
    measure.prepare("skopeo", "docker-registry")

    occystrap = [sys.executable, "-m", "occystrap_core"]
    work = Path(tempfile.mkdtemp(prefix="occystrap-startup-bench-"))
    server = start_registry("plain", work / "registry")
    try:
        push_sample_image(server, "src/app", "v1")
        copy = [*occystrap, "--insecure", "process", f"registry://{server.host}/src/app:v1",
                f"registry://{server.host}/dst/app:v1"]
        cases = [("python3 -c pass", [sys.executable, "-c", "pass"]),
                 ("occystrap --version", [*occystrap, "--version"]),
                 ("warm no-op copy", copy)]
        rows = []
        for label, cmd in cases:
            measure.run(cmd)  # the copy's first run copies; every run primes the caches
            wall = statistics.median(measure.run(cmd).seconds for _ in range(args.runs))
            rows.append((label, instructions(cmd), wall))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nstart-up, {args.runs} runs (wall: medians); instructions under valgrind")
    print(f"{'command':22} {'instructions':>13} {'above python':>13} {'wall':>7}")
    floor = rows[0][1]
    for label, count, wall in rows:
        print(f"{label:22} {count:12.1f}M {count - floor:12.1f}M {wall:6.3f}s")


if __name__ == "__main__":
    main()
